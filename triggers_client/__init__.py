"""A small typed async client for the Triggers API (producers and consumers)."""

from triggers_client.client import (
    Accepted,
    AckResult,
    ApiError,
    BatchResult,
    Event,
    InboxPage,
    TriggersClient,
)

__all__ = ["Accepted", "AckResult", "ApiError", "BatchResult", "Event", "InboxPage", "TriggersClient"]
