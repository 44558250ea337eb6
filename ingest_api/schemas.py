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


# Examples of each body, for the OpenAPI document (the route declarations in ingest_api/app.py).
ACCEPTED_EXAMPLE = {
    "event_id": "01M8JTAJRHMRRAVC3GCG0R0A61",
    "status": "accepted",
    "received_at": "2026-11-29T04:51:59.377757Z",
}
EVENT_EXAMPLE = {"event_type": "order.created", "payload": {"order_id": 42}, "idempotency_key": "order-42"}
BATCH_EXAMPLE = {"events": [EVENT_EXAMPLE, {"event_type": "order.paid", "payload": {"order_id": 42}}]}
BATCH_ACCEPTED_EXAMPLE = {"results": [{"event_id": ACCEPTED_EXAMPLE["event_id"], "status": "accepted"}]}
