"""The ceiling: bare Litestar handlers returning fixed bytes, on the same server as the services.

POST /events answers like the edge; GET /inbox answers a body the size of a 50-event page of
1 KB events, with no key check and no storage: what any inbox costs here at the least.
"""

from __future__ import annotations

from litestar import Litestar, get, post
from litestar.response import Response

_FIXED = b'{"event_id":"01M8JTAJRHMRRAVC3GCG0R0A61","status":"accepted","received_at":"2026-01-01T00:00:00.000000Z"}'


_PAGE = b'{"events":[' + b",".join([b'{"note":"' + b"x" * 1050 + b'"}'] * 50) + b'],"has_more":true}'


@post("/events", status_code=202)
async def accept() -> Response[bytes]:
    return Response(_FIXED, media_type="application/json", status_code=202)


@get("/inbox")
async def page() -> Response[bytes]:
    return Response(_PAGE, media_type="application/json")


def create_app() -> Litestar:
    return Litestar(route_handlers=[accept, page], openapi_config=None, logging_config=None)
