"""The wire format as the client reads and writes it: msgspec Structs.

Restated here rather than imported from the services, so the client stands alone (its own
distribution, httpx and msgspec only); tests/e2e/test_client.py holds the two sides together.
Unknown fields in an answer are ignored: a service that adds fields does not break old clients.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class NewEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """An event to send (``send_batch`` takes these or plain mappings of the same fields)."""

    event_type: str
    payload: dict[str, Any]
    idempotency_key: str | None = None


class Accepted(msgspec.Struct, frozen=True):
    event_id: str
    status: str
    received_at: datetime


class ErrorDetail(msgspec.Struct, frozen=True):
    field: str
    message: str


class ItemError(msgspec.Struct, frozen=True):
    status: int
    error_code: str
    message: str
    details: list[ErrorDetail] = []


class BatchItem(msgspec.Struct, frozen=True):
    """One event's outcome in a batch: ``event_id`` and ``status`` when accepted, else ``error``."""

    event_id: str | None = None
    status: str | None = None
    error: ItemError | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None


class BatchResult(msgspec.Struct, frozen=True):
    results: list[BatchItem]


class Event(msgspec.Struct, frozen=True):
    event_id: str
    event_type: str
    payload: dict[str, Any]
    received_at: datetime
    delivered: bool
    delivered_at: datetime | None


class InboxPage(msgspec.Struct, frozen=True):
    events: list[Event]
    next_cursor: str | None
    has_more: bool
    total_undelivered: int


class TokenRefused(msgspec.Struct, frozen=True):
    """A lease token the service did not honour: ``reason`` is lease_lost (the event was
    claimed again since), lease_ended, not_found, invalid or other_consumer."""

    lease_token: str
    reason: str


class AckResult(msgspec.Struct, frozen=True):
    acknowledged: list[str]
    not_found: list[str]
    refused: list[TokenRefused] = []  # lease tokens not honoured (only when tokens were given)


class ClaimedEvent(msgspec.Struct, frozen=True):
    """An event under a lease: nobody else gets it until ``lease_expires_at``."""

    event_id: str
    event_type: str
    payload: dict[str, Any]
    received_at: datetime
    delivered: bool
    delivered_at: datetime | None
    deliveries: int  # how often it was claimed, this claim included
    lease_token: str
    lease_expires_at: datetime


class Claim(msgspec.Struct, frozen=True):
    events: list[ClaimedEvent]
    total_undelivered: int  # available: nobody holds them
    in_flight: int  # leased, or waiting out a nack's delay
    failed: int  # claimed max_deliveries times without an ack


class NackResult(msgspec.Struct, frozen=True):
    nacked: list[str]
    refused: list[TokenRefused]


class ExtendResult(msgspec.Struct, frozen=True):
    extended: list[str]
    lease_expires_at: datetime
    refused: list[TokenRefused]


class BackfillProgress(msgspec.Struct, frozen=True):
    """How far a named consumer's backfill (the events stored before it existed) has come."""

    done: bool
    events_walked: int
    events_copied: int


class ConsumerInfo(msgspec.Struct, frozen=True):
    """A consumer: its filter, start and counts (``default`` has no ``created_at`` nor ``backfill``)."""

    name: str
    event_types: list[str] | None  # None: every type
    start: str  # an RFC 3339 time, or "earliest"
    created_at: datetime | None
    total_undelivered: int
    backfill: BackfillProgress | None
    in_flight: int = 0
    failed: int = 0
    max_deliveries: int = 10

    @property
    def start_time(self) -> datetime | None:
        """``start`` as a time; None for ``earliest`` (as far back as retention keeps events)."""
        return None if self.start == "earliest" else datetime.fromisoformat(self.start)


class ConsumerList(msgspec.Struct, frozen=True):
    consumers: list[ConsumerInfo]


class ServiceStatus(msgspec.Struct, frozen=True):
    status: str
    version: str
    uptime_seconds: float


class Health(msgspec.Struct, frozen=True):
    """``GET /status`` of both services."""

    ingest: ServiceStatus
    inbox: ServiceStatus


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error answer's body (docs/api.md, "Errors")."""

    status: int
    error_code: str
    message: str
    details: list[ErrorDetail] = []
    correlation_id: str = ""
