"""Response and request bodies of the inbox API."""

from __future__ import annotations

from typing import Annotated

import msgspec

from inbox_api.store import StoredEvent
from shared.contract.ids import rfc3339

MAX_ACK_IDS = 100


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


def event_out(event: StoredEvent) -> EventOut:
    return EventOut(
        event_id=event.event_id,
        event_type=event.event_type,
        payload=event.payload,
        received_at=rfc3339(event.received_at_us),
        delivered=event.delivered,
        delivered_at=rfc3339(event.delivered_at_us) if event.delivered_at_us is not None else None,
    )
