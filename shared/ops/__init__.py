"""The operators' tooling: the ``triggers`` CLI, dead letters, resources and migrations. The only
part of ``shared`` that may name a service."""
