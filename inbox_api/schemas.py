"""Response and request bodies of the inbox API."""

from __future__ import annotations

from typing import Annotated

import msgspec

from inbox_api.store import StoredEvent
from shared.contract.ids import rfc3339
from shared.storage.consumers import MAX_EVENT_TYPE_CHARS, MAX_EVENT_TYPES, NAME_PATTERN

MAX_ACK_IDS = 100
# A consumer's name, as a schema states it (``consumers.NAME_PATTERN``, anchored).
CONSUMER_NAME = f"^{NAME_PATTERN.pattern}$"
# ``now``, ``earliest`` or an RFC 3339 time with its offset; a time that does not exist
# (month 13) matches, and is refused after decoding.
RFC3339_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
START_PATTERN = f"^(now|earliest|{RFC3339_TIME})$"


class EventOut(msgspec.Struct, frozen=True):
    event_id: str
    event_type: str
    payload: Annotated[msgspec.Raw, msgspec.Meta(extra_json_schema={"type": "object"})]
    received_at: str
    delivered: bool
    delivered_at: str | None


class InboxPage(msgspec.Struct, frozen=True):
    events: list[EventOut]
    next_cursor: str | None
    has_more: bool
    total_undelivered: int


class AckIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    event_ids: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_ACK_IDS)]


class AckOut(msgspec.Struct, frozen=True):
    acknowledged: list[str]
    not_found: list[str]


# An exact type or a prefix written ``prefix.*`` (``.*`` alone is refused after decoding).
EventTypePattern = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_TYPE_CHARS)]
EventTypes = Annotated[list[EventTypePattern], msgspec.Meta(min_length=1, max_length=MAX_EVENT_TYPES)]


class ConsumerIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """POST /consumers. ``event_types`` left out or null: every type."""

    name: Annotated[str, msgspec.Meta(pattern=CONSUMER_NAME)]
    event_types: EventTypes | None = None
    start: Annotated[str, msgspec.Meta(pattern=START_PATTERN)] = "now"


class ConsumerPatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """PATCH /consumers/{name}: the new filter (null: every type)."""

    event_types: EventTypes | None


class Backfill(msgspec.Struct, frozen=True):
    done: bool
    events_walked: int
    events_copied: int


class ConsumerOut(msgspec.Struct, frozen=True):
    name: str
    event_types: list[str] | None
    start: str  # RFC 3339, or "earliest"
    created_at: str | None  # None for default
    total_undelivered: int
    backfill: Backfill | None  # None for default


class ConsumerList(msgspec.Struct, frozen=True):
    consumers: list[ConsumerOut]


def event_out(event: StoredEvent) -> EventOut:
    return EventOut(
        event_id=event.event_id,
        event_type=event.event_type,
        payload=event.payload,
        received_at=rfc3339(event.received_at_us),
        delivered=event.delivered,
        delivered_at=rfc3339(event.delivered_at_us) if event.delivered_at_us is not None else None,
    )


# Examples of each body, for the OpenAPI document (the route declarations in inbox_api/app.py).
EVENT_ID_EXAMPLE = "01M8JTAJRHMRRAVC3GCG0R0A61"
EVENT_EXAMPLE = {
    "event_id": EVENT_ID_EXAMPLE,
    "event_type": "order.created",
    "payload": {"order_id": 42},
    "received_at": "2026-11-29T04:51:59.377757Z",
    "delivered": False,
    "delivered_at": None,
}
PAGE_EXAMPLE = {"events": [EVENT_EXAMPLE], "next_cursor": None, "has_more": False, "total_undelivered": 1}
ACK_EXAMPLE = {"event_ids": [EVENT_ID_EXAMPLE]}
ACK_OUT_EXAMPLE = {"acknowledged": [EVENT_ID_EXAMPLE], "not_found": []}
CONSUMER_IN_EXAMPLE = {"name": "zap-123", "event_types": ["order.*", "invoice.paid"], "start": "now"}
CONSUMER_PATCH_EXAMPLE = {"event_types": ["order.*"]}
CONSUMER_EXAMPLE = {
    "name": "zap-123",
    "event_types": ["order.*", "invoice.paid"],
    "start": "2026-11-29T04:51:59.377757Z",
    "created_at": "2026-11-29T04:51:59.377757Z",
    "total_undelivered": 3,
    "backfill": {"done": True, "events_walked": 12, "events_copied": 3},
}
DEFAULT_CONSUMER_EXAMPLE = {
    "name": "default",
    "event_types": None,
    "start": "earliest",
    "created_at": None,
    "total_undelivered": 5,
    "backfill": None,
}
CONSUMER_LIST_EXAMPLE = {"consumers": [DEFAULT_CONSUMER_EXAMPLE, CONSUMER_EXAMPLE]}
