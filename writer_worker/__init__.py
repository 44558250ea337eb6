"""The writer: turns the at-least-once events queue into an inbox holding each event exactly once."""
