"""Request and response bodies of the ingest API."""

from __future__ import annotations

from typing import Annotated

import msgspec

from shared.errors import ErrorDetail

EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=255, examples=["order.created"])]
MAX_IDEMPOTENCY_KEY_CHARS = 255
IdempotencyKey = Annotated[
    str, msgspec.Meta(min_length=1, max_length=MAX_IDEMPOTENCY_KEY_CHARS, examples=["order-1234"])
]
MAX_BATCH_EVENTS = 500
Payload = Annotated[
    msgspec.Raw,
    msgspec.Meta(
        description="The event itself: a JSON object of at most 256 KiB encoded.",
        extra_json_schema={"type": "object", "examples": [{"order_id": 42, "total": 99.5}]},
    ),
]


class EventIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    event_type: EventType
    # Kept as the raw JSON bytes: validated as an object here, never re-encoded on the way.
    payload: Payload
    idempotency_key: IdempotencyKey | None = None


class BatchIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    # Each event is decoded on its own, so one bad event does not sink its neighbours.
    events: Annotated[
        list[msgspec.Raw],
        msgspec.Meta(
            min_length=1,
            max_length=MAX_BATCH_EVENTS,
            description="1 to 500 events, each as in POST /events.",
            extra_json_schema={"items": {"$ref": "#/components/schemas/EventIn"}},
        ),
    ]


class Accepted(msgspec.Struct, frozen=True):
    event_id: str
    status: str
    received_at: str


class ItemError(msgspec.Struct, frozen=True):
    status: int
    error_code: str
    message: str
    details: list[ErrorDetail]


class BatchItem(msgspec.Struct, frozen=True, omit_defaults=True):
    event_id: str | None = None
    status: str | None = None
    error: ItemError | None = None


class BatchResult(msgspec.Struct, frozen=True):
    results: list[BatchItem]
