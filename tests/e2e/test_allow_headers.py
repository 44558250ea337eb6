"""``Allow`` lists every method declared on a path, over HTTP against the real services.

Driven from the route declarations (``route_groups()``): OPTIONS on each path answers 204
with ``Allow`` naming the path's declared methods and OPTIONS, and a method the path does
not declare is a 405 with the same ``Allow``. Litestar's own OPTIONS handler listed only the
methods of the first handler registered on a path: ``OPTIONS /events/{event_id}`` answered
``Allow: GET, OPTIONS``, without DELETE. Neither answer touches the event it names.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from inbox_api import app as inbox_app
from ingest_api import app as ingest_app
from shared.web.routes import RouteGroup
from tests.conftest import ApiKey, Service, wait_until

pytestmark = pytest.mark.usefixtures("writer")

GROUPS: dict[str, Callable[[], list[RouteGroup]]] = {
    "ingest": ingest_app.route_groups,
    "inbox": inbox_app.route_groups,
}
UNDECLARED = ("PUT", "PATCH", "DELETE", "POST", "GET")


def _declared(name: str) -> dict[str, set[str]]:
    methods: dict[str, set[str]] = {}
    for group in GROUPS[name]():
        for route in group.routes:
            methods.setdefault(route.path, set()).add(route.method.upper())
    return methods


def _allowed(response: httpx.Response) -> set[str]:
    return {method.strip() for method in response.headers["allow"].split(",")}


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_every_path_allows_exactly_its_declared_methods(
    http: httpx.Client, name: str, api_key: ApiKey, ingest: Service, inbox: Service
) -> None:
    service = {"ingest": ingest, "inbox": inbox}[name]
    key = api_key
    # A real event of the caller's for /events/{event_id}, to see that neither answer acks it.
    sent = http.post(
        f"{ingest.url}/events", json={"event_type": "allow.check", "payload": {"n": 1}}, headers=key.headers
    )
    assert sent.status_code == 202
    event_id = sent.json()["event_id"]
    wait_until(lambda: http.get(f"{inbox.url}/events/{event_id}", headers=key.headers).status_code == 200)

    declared = _declared(name)
    if name == "inbox":  # the path this was about: GET and DELETE on one path
        assert declared["/events/{event_id}"] == {"GET", "DELETE"}
    for path, methods in declared.items():
        url = f"{service.url}{path.format(event_id=event_id, name='zap-123')}"
        expected = {*methods, "OPTIONS"}
        options = http.options(url, headers=key.headers)
        assert options.status_code == 204, (path, options.text)
        assert _allowed(options) == expected, (path, options.headers["allow"])
        other = next(method for method in UNDECLARED if method not in methods)
        refused = http.request(other, url, headers=key.headers)
        assert refused.status_code == 405, (other, path, refused.text)
        assert _allowed(refused) == expected, (other, path, refused.headers["allow"])

    # Nothing was acknowledged or changed: the event is still undelivered.
    event = http.get(f"{inbox.url}/events/{event_id}", headers=key.headers).json()
    assert event["delivered"] is False, event
    page = http.get(f"{inbox.url}/inbox", headers=key.headers).json()
    assert [e["event_id"] for e in page["events"]] == [event_id]
