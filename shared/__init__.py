"""What the three services share, one subpackage per concern (docs/architecture.md, "Module map")."""
