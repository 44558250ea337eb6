"""The ceiling: a bare Litestar handler returning fixed bytes, on the same server as the edge."""

from __future__ import annotations

from litestar import Litestar, post
from litestar.response import Response

_FIXED = b'{"event_id":"01M8JTAJRHMRRAVC3GCG0R0A61","status":"accepted","received_at":"2026-01-01T00:00:00.000000Z"}'


@post("/events", status_code=202)
async def accept() -> Response[bytes]:
    return Response(_FIXED, media_type="application/json", status_code=202)


def create_app() -> Litestar:
    return Litestar(route_handlers=[accept], openapi_config=None, logging_config=None)
