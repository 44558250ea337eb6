"""Every declared route is behind its group's key check, over HTTP against the real services.

Driven from the route declarations themselves (``route_groups()`` of each service, the ones
its router and OpenAPI document are built from), so a route added later is covered without
touching this file. Only the documented public routes answer without a key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inbox_api import app as inbox_app
from inbox_api.schemas import EVENT_ID_EXAMPLE
from ingest_api import app as ingest_app
from shared.keys.admin import new_account_id
from shared.keys.model import Scope
from shared.web.docs_ui import docs_ui_routes
from shared.web.openapi import DOCUMENT_PATH
from shared.web.routes import Route, RouteGroup
from tests.conftest import ApiKey, Service, wait_until

pytestmark = pytest.mark.usefixtures("writer")

GROUPS: dict[str, Callable[[], list[RouteGroup]]] = {
    "ingest": ingest_app.route_groups,
    "inbox": inbox_app.route_groups,
}
# What docs/api.md says answers without a key, on both services: health, the document, and
# the docs pages over it with the files they load (shared/web/docs_ui.py).
PUBLIC = {("get", "/status"), ("get", "/schema/openapi.json")} | {
    (route.method, route.path) for route in docs_ui_routes("", DOCUMENT_PATH)
}
SEED = {"event_type": "routes.seed", "payload": {"n": 1}}


def _request(
    service: Service, route: Route, event_id: str, headers: dict[str, str], query: list[tuple[str, str]] | None = None
) -> httpx.Request:
    """The route's own example request (its declared body), aimed at the account's event."""
    path = route.path.format(event_id=event_id, name="zap-123")
    body = None
    if route.body is not None:
        body = json.dumps(route.body.example).replace(EVENT_ID_EXAMPLE, event_id).encode()
        headers = {**headers, "Content-Type": "application/json"}
    return httpx.Request(
        route.method.upper(), f"{service.url}{path}", content=body, headers=headers, params=tuple(query or ())
    )


def _refused(http: httpx.Client, request: httpx.Request, status: int, code: str) -> None:
    response = http.send(request)
    assert response.status_code == status, (request.method, request.url, response.text)
    body = response.json()
    assert (body["status"], body["error_code"]) == (status, code)
    assert body["correlation_id"] == response.headers["x-request-id"]
    assert "x-ratelimit-limit" not in response.headers  # no bucket was consulted


def _refusals(text: str, code: str) -> float:
    match = re.search(rf'^triggers_events_refused_total{{reason="{code}"}} (\S+)$', text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def _inbox(http: httpx.Client, inbox: Service, key: ApiKey) -> dict[str, Any]:
    page: dict[str, Any] = http.get(f"{inbox.url}/inbox", headers=key.headers).json()
    return page


def test_every_declared_route_but_the_public_ones_refuses_a_missing_key_and_a_wrong_scope(
    http: httpx.Client, ingest: Service, inbox: Service, key_factory: Callable[..., ApiKey]
) -> None:
    account = new_account_id()
    keys = {scope: key_factory(frozenset({scope}), account_id=account) for scope in Scope}
    everything = key_factory(frozenset(Scope), account_id=account)
    seeded = http.post(f"{ingest.url}/events", json=SEED, headers=everything.headers)
    assert seeded.status_code == 202
    event_id = seeded.json()["event_id"]
    assert wait_until(lambda: _inbox(http, inbox, everything)["total_undelivered"] == 1)
    services = {"ingest": ingest, "inbox": inbox}
    metrics_before = http.get(f"{ingest.admin_url}/metrics").text

    guarded: list[tuple[Service, RouteGroup, Route]] = []
    for name, groups in GROUPS.items():
        for group in groups():
            if group.scope is None:
                assert {(r.method, r.path) for r in group.routes} <= PUBLIC, (name, group.tag)
                continue
            guarded += [(services[name], group, route) for route in group.routes]
    assert {g.tag for _, g, _ in guarded} == {"ingest", "inbox"}
    assert len(guarded) >= 6  # POST /events, /events/batch; GET /inbox, GET and DELETE /events/{id}, POST /inbox/ack

    for service, group, route in guarded:
        assert group.scope is not None
        wrong = key_factory(frozenset(Scope) - {group.scope}, account_id=account)
        _refused(http, _request(service, route, event_id, {}), 401, "UNAUTHENTICATED")
        _refused(http, _request(service, route, event_id, wrong.headers), 403, "FORBIDDEN")

    # Nothing refused was taken: the ingest routes counted each refusal as a refused event,
    # and the account's inbox still holds its one event, undelivered, as it was sent.
    metrics_after = http.get(f"{ingest.admin_url}/metrics").text
    ingest_routes = sum(1 for service, _, _ in guarded if service is ingest)
    for code in ("UNAUTHENTICATED", "FORBIDDEN"):
        assert _refusals(metrics_after, code) == _refusals(metrics_before, code) + ingest_routes, code
    marker = http.post(
        f"{ingest.url}/events", json={"event_type": "routes.marker", "payload": {}}, headers=everything.headers
    )
    assert marker.status_code == 202
    assert wait_until(lambda: _inbox(http, inbox, everything)["total_undelivered"] >= 2)
    page = _inbox(http, inbox, everything)
    assert page["total_undelivered"] == 2
    assert [(e["event_id"], e["payload"], e["delivered"]) for e in page["events"]] == [
        (event_id, SEED["payload"], False),
        (marker.json()["event_id"], {}, False),
    ]

    # The same requests with a key of exactly the group's scope are served: the refusals
    # came from the key alone, not from the request.
    for service, group, route in guarded:
        assert group.scope is not None
        served = http.send(_request(service, route, event_id, keys[group.scope].headers))
        assert served.status_code == route.status, (route.method, route.path, served.text)
        assert served.headers["x-ratelimit-limit"]


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_only_the_documented_public_routes_answer_without_a_key(
    http: httpx.Client, name: str, request: pytest.FixtureRequest
) -> None:
    service: Service = request.getfixturevalue(name)
    public = [route for group in GROUPS[name]() if group.scope is None for route in group.routes]
    assert {(route.method, route.path) for route in public} == PUBLIC
    for route in public:
        answer = http.request(route.method.upper(), f"{service.url}{route.path}")
        assert answer.status_code == route.status
        assert "x-ratelimit-limit" not in answer.headers


def _guarded_routes() -> list[tuple[str, Scope, Route]]:
    return [
        (name, group.scope, route)
        for name, groups in GROUPS.items()
        for group in groups()
        if group.scope is not None
        for route in group.routes
    ]


_NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=30)


def test_a_query_parameter_a_route_does_not_declare_is_a_400_after_the_key_and_changes_nothing(
    http: httpx.Client, ingest: Service, inbox: Service, key_factory: Callable[..., ApiKey]
) -> None:
    """Any query parameter a route's declaration does not list: without a key 401 (the key
    comes first), with the right key 400 naming each unknown parameter, and nothing sent,
    stored or acknowledged; the parameters a route does declare are never called unknown."""
    account = new_account_id()
    keys = {scope: key_factory(frozenset({scope}), account_id=account) for scope in Scope}
    everything = key_factory(frozenset(Scope), account_id=account)
    seeded = http.post(f"{ingest.url}/events", json=SEED, headers=everything.headers)
    event_id = seeded.json()["event_id"]
    assert wait_until(lambda: _inbox(http, inbox, everything)["total_undelivered"] == 1)
    services = {"ingest": ingest, "inbox": inbox}

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(route=st.sampled_from(_guarded_routes()), unknown=st.lists(_NAMES, min_size=1, max_size=12), data=st.data())
    def check(route: tuple[str, Scope, Route], unknown: list[str], data: st.DataObject) -> None:
        name, scope, declared = route
        listed = sorted(p.name for p in declared.parameters if p.where == "query")  # as the document lists them
        unknown = [u for u in unknown if u not in listed]
        if not unknown:
            return
        known = data.draw(st.lists(st.sampled_from(listed), max_size=2)) if listed else []
        query = [(u, "x") for u in unknown] + [(k, "1") for k in known]
        _refused(http, _request(services[name], declared, event_id, {}, query), 401, "UNAUTHENTICATED")
        answer = http.send(_request(services[name], declared, event_id, keys[scope].headers, query))
        assert answer.status_code == 400, (declared.method, declared.path, query, answer.text)
        assert answer.headers["x-ratelimit-limit"]
        details = answer.json()["details"]
        assert [d["field"] for d in details] == [u[:100] for u in sorted(set(unknown))[:10]]
        assert {d["message"] for d in details} == {"Unknown query parameter."}

    check()
    # Nothing refused was taken: the one event is still there, undelivered, and a marker
    # sent afterwards is the only other event the account has.
    marker = http.post(
        f"{ingest.url}/events", json={"event_type": "q.marker", "payload": {}}, headers=everything.headers
    )
    assert marker.status_code == 202
    assert wait_until(lambda: _inbox(http, inbox, everything)["total_undelivered"] >= 2)
    page = _inbox(http, inbox, everything)
    assert [(e["event_id"], e["delivered"]) for e in page["events"]] == [
        (event_id, False),
        (marker.json()["event_id"], False),
    ]
    assert page["total_undelivered"] == 2
