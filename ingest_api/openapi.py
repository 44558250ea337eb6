"""The ingest API's OpenAPI document (see shared/web/openapi.py for why it is written out)."""

from __future__ import annotations

from ingest_api.schemas import MAX_IDEMPOTENCY_KEY_CHARS, Accepted, BatchIn, BatchResult, EventIn
from shared.web.http import VERSION
from shared.web.openapi import Operation, build_openapi, error_example, health_operations

_ACCEPTED = {
    "event_id": "01M8JTAJRHMRRAVC3GCG0R0A61",
    "status": "accepted",
    "received_at": "2026-11-29T04:51:59.377757Z",
}
_EVENT = {"event_type": "order.created", "payload": {"order_id": 42}, "idempotency_key": "order-42"}
_IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Alternative to the body's idempotency_key (both may be sent only if equal).",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
}
_ERROR_ITEM = {k: v for k, v in error_example(400).items() if k != "correlation_id"}

OPERATIONS = [
    Operation(
        "post",
        "/events",
        "Send one event; 202 once SQS has it",
        "ingest",
        202,
        Accepted,
        _ACCEPTED,
        body_schema=EventIn,
        body_example=_EVENT,
        parameters=[_IDEMPOTENCY_HEADER],
        errors=(400, 413, 415, 429, 503),
    ),
    Operation(
        "post",
        "/events/batch",
        "Send 1 to 500 events; one result per event, in order",
        "ingest",
        202,
        BatchResult,
        {"results": [{"event_id": _ACCEPTED["event_id"], "status": "accepted"}]},
        body_schema=BatchIn,
        body_example={"events": [_EVENT, {"event_type": "order.paid", "payload": {"order_id": 42}}]},
        errors=(400, 413, 415, 429, 503),
        extra_ok={
            207: (
                "Some events were refused; each result says which and why.",
                BatchResult,
                {"results": [{"event_id": _ACCEPTED["event_id"], "status": "accepted"}, {"error": _ERROR_ITEM}]},
            )
        },
    ),
    *health_operations(VERSION, "SQS"),
]


def document() -> bytes:
    return build_openapi("Triggers ingest API", VERSION, OPERATIONS)
