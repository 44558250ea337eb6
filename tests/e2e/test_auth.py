"""Who may do what: 401 for bad keys, 403 for refused keys and scopes, 404 across accounts."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from shared import processes
from shared.keys import Scope
from tests.conftest import ApiKey, Service, Stack, run_triggers, start_service, wait_until

pytestmark = pytest.mark.usefixtures("writer")

EVENT = {"event_type": "auth.test", "payload": {}}


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-key",
        "Bearer trg_0123456789abcdef_" + "x" * 43,  # well-formed, unknown key id
    ],
    ids=["missing", "empty", "basic", "no-token", "malformed", "unknown-id"],
)
def test_bad_credentials_get_401_in_the_error_format(
    http: httpx.Client, ingest: Service, inbox: Service, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for response in (
        http.post(f"{ingest.url}/events", json=EVENT, headers=headers),
        http.get(f"{inbox.url}/inbox", headers=headers),
    ):
        assert response.status_code == 401
        body = response.json()
        assert body["status"] == 401
        assert body["error_code"] == "UNAUTHENTICATED"
        assert body["message"]
        assert body["details"] == []
        assert body["correlation_id"] == response.headers["x-request-id"]


def test_wrong_secret_gets_401(http: httpx.Client, ingest: Service, api_key: ApiKey) -> None:
    tampered = api_key.key[:-1] + ("A" if api_key.key[-1] != "A" else "B")
    response = http.post(f"{ingest.url}/events", json=EVENT, headers={"Authorization": f"Bearer {tampered}"})
    assert response.status_code == 401


def test_a_client_that_keeps_failing_is_locked_out_and_others_are_not(
    http: httpx.Client, stack: Stack, api_key: ApiKey
) -> None:
    edge = start_service(
        stack, "ingest", {"TRIGGERS_AUTH_FAILURES_PER_MINUTE": "3", "TRIGGERS_TRUSTED_PROXY_HOPS": "1"}
    )
    attacker = {"X-Forwarded-For": "203.0.113.7"}
    guess = {**attacker, "Authorization": "Bearer trg_0123456789abcdef_" + "x" * 43}
    try:
        assert [http.post(f"{edge.url}/events", json=EVENT, headers=guess).status_code for _ in range(3)] == [401] * 3
        locked = http.post(f"{edge.url}/events", json=EVENT, headers={**attacker, **api_key.headers})
        assert locked.status_code == 429  # even a right key, until the bucket refills
        assert int(locked.headers["retry-after"]) >= 1
        assert locked.json()["error_code"] == "RATE_LIMITED"
        someone_else = {"X-Forwarded-For": "203.0.113.8", **api_key.headers}
        assert http.post(f"{edge.url}/events", json=EVENT, headers=someone_else).status_code == 202
    finally:
        processes.stop([edge.process])


def test_missing_scope_gets_403(
    http: httpx.Client, ingest: Service, inbox: Service, key_factory: Callable[..., ApiKey]
) -> None:
    ingest_only = key_factory(frozenset({Scope.INGEST}))
    inbox_only = key_factory(frozenset({Scope.INBOX}))
    assert http.post(f"{ingest.url}/events", json=EVENT, headers=ingest_only.headers).status_code == 202
    assert http.get(f"{inbox.url}/inbox", headers=ingest_only.headers).status_code == 403
    assert http.post(f"{ingest.url}/events", json=EVENT, headers=inbox_only.headers).status_code == 403
    assert http.get(f"{inbox.url}/inbox", headers=inbox_only.headers).status_code == 200


@pytest.mark.parametrize("command", ["revoke", "deactivate"])
def test_refused_key_stops_working_within_the_cache_ttl(
    http: httpx.Client, stack: Stack, ingest: Service, api_key: ApiKey, command: str
) -> None:
    assert http.post(f"{ingest.url}/events", json=EVENT, headers=api_key.headers).status_code == 202
    run_triggers(stack, "keys", command, api_key.key_id)
    ttl = stack.settings.key_cache_ttl_s
    time.sleep(ttl)
    refused = wait_until(
        lambda: http.post(f"{ingest.url}/events", json=EVENT, headers=api_key.headers).status_code == 403,
        timeout_s=ttl + 2,
    )
    assert refused
    body = http.post(f"{ingest.url}/events", json=EVENT, headers=api_key.headers).json()
    assert body["error_code"] == "FORBIDDEN"


def test_an_account_never_sees_another_accounts_events(
    http: httpx.Client, ingest: Service, inbox: Service, key_factory: Callable[..., ApiKey]
) -> None:
    alice, bob = key_factory(), key_factory()
    event_id = http.post(f"{ingest.url}/events", json=EVENT, headers=alice.headers).json()["event_id"]
    assert wait_until(lambda: http.get(f"{inbox.url}/events/{event_id}", headers=alice.headers).status_code == 200)

    assert http.get(f"{inbox.url}/events/{event_id}", headers=bob.headers).status_code == 404
    assert http.delete(f"{inbox.url}/events/{event_id}", headers=bob.headers).status_code == 404
    ack = http.post(f"{inbox.url}/inbox/ack", json={"event_ids": [event_id]}, headers=bob.headers).json()
    assert ack == {"acknowledged": [], "not_found": [event_id]}
    bobs = http.get(f"{inbox.url}/inbox", headers=bob.headers).json()
    assert bobs["events"] == []
    assert bobs["total_undelivered"] == 0
    # Alice's event is untouched by Bob's attempts.
    assert http.get(f"{inbox.url}/events/{event_id}", headers=alice.headers).json()["delivered"] is False


def test_request_id_is_echoed_sanitised_or_generated(http: httpx.Client, ingest: Service, inbox: Service) -> None:
    echoed = http.get(f"{ingest.url}/status", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    dirty = http.get(f"{inbox.url}/status", headers={"X-Request-ID": "a b<script>" + "x" * 500})
    assert dirty.headers["x-request-id"] == "abscript" + "x" * 120
    generated = http.get(f"{inbox.url}/status")
    assert len(generated.headers["x-request-id"]) >= 16
    assert generated.headers["x-request-id"] != http.get(f"{inbox.url}/status").headers["x-request-id"]


def test_status_answers_without_authentication(http: httpx.Client, ingest: Service, inbox: Service) -> None:
    for service in (ingest, inbox):
        body = http.get(f"{service.url}/status").json()
        assert body["status"] == "ok"
        assert body["version"]
        assert body["uptime_seconds"] >= 0
        assert http.get(f"{service.url}/ready").status_code == 200


def test_a_cursor_works_only_for_the_account_and_query_it_was_made_for(
    http: httpx.Client, ingest: Service, inbox: Service, key_factory: Callable[..., ApiKey]
) -> None:
    alice, bob = key_factory(), key_factory()
    events = [{"event_type": "cur", "payload": {"i": i}} for i in range(3)]
    assert http.post(f"{ingest.url}/events/batch", json={"events": events}, headers=alice.headers).status_code == 202
    assert wait_until(lambda: http.get(f"{inbox.url}/inbox", headers=alice.headers).json()["total_undelivered"] == 3)
    cursor = http.get(f"{inbox.url}/inbox", params={"limit": 1}, headers=alice.headers).json()["next_cursor"]
    assert cursor
    assert http.get(f"{inbox.url}/inbox", params={"cursor": cursor}, headers=alice.headers).status_code == 200
    for headers, params in (
        (bob.headers, {"cursor": cursor}),
        (alice.headers, {"cursor": cursor, "event_type": "cur"}),
        (alice.headers, {"cursor": cursor, "order": "desc"}),
        (alice.headers, {"cursor": cursor[:-2]}),
    ):
        response = http.get(f"{inbox.url}/inbox", params=params, headers=headers)
        assert response.status_code == 400
        assert response.json()["error_code"] == "INVALID_CURSOR"


def test_concurrent_acknowledgements_from_two_clients_keep_the_count_exact(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    events = [{"event_type": "race", "payload": {"i": i}} for i in range(10)]
    results = http.post(f"{ingest.url}/events/batch", json={"events": events}, headers=api_key.headers).json()
    ids = [r["event_id"] for r in results["results"]]
    assert wait_until(lambda: http.get(f"{inbox.url}/inbox", headers=api_key.headers).json()["total_undelivered"] == 10)

    def ack_all(_: int) -> list[int]:
        with httpx.Client(timeout=10) as own:
            single = [own.delete(f"{inbox.url}/events/{i}", headers=api_key.headers).status_code for i in ids[:5]]
            bulk = own.post(f"{inbox.url}/inbox/ack", json={"event_ids": ids[5:]}, headers=api_key.headers)
            return [*single, bulk.status_code]

    with ThreadPoolExecutor(2) as pool:
        statuses = [s for answer in pool.map(ack_all, range(2)) for s in answer]
    assert set(statuses) <= {200, 204}
    page = http.get(f"{inbox.url}/inbox", headers=api_key.headers).json()
    assert page["total_undelivered"] == 0
    assert page["events"] == []
    assert (
        http.get(f"{inbox.url}/inbox", params={"event_type": "race"}, headers=api_key.headers).json()[
            "total_undelivered"
        ]
        == 0
    )


def test_unknown_paths_carry_a_request_id_and_the_error_shape(
    http: httpx.Client, ingest: Service, inbox: Service
) -> None:
    for service in (ingest, inbox):
        response = http.get(f"{service.url}/no/such/path", headers={"X-Request-ID": "lost-1"})
        assert response.status_code == 404
        assert response.headers["x-request-id"] == "lost-1"
        assert response.json()["correlation_id"] == "lost-1"
        wrong_method = http.put(f"{service.url}/status")
        assert wrong_method.status_code == 405
        assert wrong_method.json()["error_code"] == "METHOD_NOT_ALLOWED"
