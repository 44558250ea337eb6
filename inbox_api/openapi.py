"""The inbox API's OpenAPI document (see shared/web/openapi.py for why it is written out)."""

from __future__ import annotations

from typing import Any

from inbox_api.schemas import MAX_ACK_IDS, AckIn, AckOut, EventOut, InboxPage
from shared.web.http import VERSION
from shared.web.openapi import Operation, build_openapi, health_operations

_EVENT = {
    "event_id": "01M8JTAJRHMRRAVC3GCG0R0A61",
    "event_type": "order.created",
    "payload": {"order_id": 42},
    "received_at": "2026-11-29T04:51:59.377757Z",
    "delivered": False,
    "delivered_at": None,
}
_EVENT_ID = {
    "name": "event_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": 64},
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


OPERATIONS = [
    Operation(
        "get",
        "/inbox",
        "Page through the account's undelivered events",
        "inbox",
        200,
        InboxPage,
        {"events": [_EVENT], "next_cursor": None, "has_more": False, "total_undelivered": 1},
        parameters=[
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size."),
            _query("cursor", {"type": "string", "maxLength": 4096}, "next_cursor of the previous page."),
            _query("event_type", {"type": "string", "minLength": 1, "maxLength": 255}, "Only this type."),
            _query("order", {"type": "string", "enum": ["asc", "desc"], "default": "asc"}, "Oldest or newest first."),
        ],
        errors=(400, 429, 503),
    ),
    Operation(
        "get",
        "/events/{event_id}",
        "One event of the account, delivered or not",
        "inbox",
        200,
        EventOut,
        _EVENT,
        parameters=[_EVENT_ID],
        errors=(404, 429, 503),
    ),
    Operation(
        "delete",
        "/events/{event_id}",
        "Acknowledge one event (204 also when already delivered)",
        "inbox",
        204,
        None,
        parameters=[_EVENT_ID],
        errors=(404, 429, 503),
    ),
    Operation(
        "post",
        "/inbox/ack",
        f"Acknowledge 1 to {MAX_ACK_IDS} events",
        "inbox",
        200,
        AckOut,
        {"acknowledged": ["01M8JTAJRHMRRAVC3GCG0R0A61"], "not_found": []},
        body_schema=AckIn,
        body_example={"event_ids": ["01M8JTAJRHMRRAVC3GCG0R0A61"]},
        errors=(400, 413, 415, 429, 503),
    ),
    *health_operations(VERSION, "DynamoDB"),
]


def document() -> bytes:
    return build_openapi("Triggers inbox API", VERSION, OPERATIONS)
