"""Logging and metrics of every process: structlog set-up and the Prometheus registry."""
