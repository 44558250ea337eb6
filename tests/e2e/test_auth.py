"""Who may do what: 401 for bad keys, 403 for refused keys and scopes, 404 across accounts."""

from __future__ import annotations

import asyncio
import secrets
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.keys.model import Scope
from shared.local import processes
from tests.conftest import (
    SERVICE_START_TIMEOUT_S,
    ApiKey,
    Service,
    Stack,
    run_triggers,
    start_service,
    wait_until,
)

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


def test_the_consumers_routes_need_a_key_with_the_inbox_scope(
    http: httpx.Client, inbox: Service, key_factory: Callable[..., ApiKey]
) -> None:
    """Every /consumers route and ``consumer=`` call: 401 without a key, 403 for an ingest
    key of the very account, and neither creates, changes nor deletes anything."""
    owner = key_factory()
    ingest_only = key_factory(frozenset({Scope.INGEST}), account_id=owner.account_id)
    made = http.post(f"{inbox.url}/consumers", json={"name": "mine", "event_types": ["a"]}, headers=owner.headers)
    assert made.status_code == 201, made.text
    event_id = "01M8JTAJRHMRRAVC3GCG0R0A61"
    calls: list[Callable[[dict[str, str]], httpx.Response]] = [
        lambda h: http.post(f"{inbox.url}/consumers", json={"name": "new"}, headers=h),
        lambda h: http.get(f"{inbox.url}/consumers", headers=h),
        lambda h: http.get(f"{inbox.url}/consumers/mine", headers=h),
        lambda h: http.patch(f"{inbox.url}/consumers/mine", json={"event_types": None}, headers=h),
        lambda h: http.delete(f"{inbox.url}/consumers/mine", headers=h),
        lambda h: http.get(f"{inbox.url}/inbox", params={"consumer": "mine"}, headers=h),
        lambda h: http.delete(f"{inbox.url}/events/{event_id}", params={"consumer": "mine"}, headers=h),
    ]
    for headers, status, code in (({}, 401, "UNAUTHENTICATED"), (ingest_only.headers, 403, "FORBIDDEN")):
        for call in calls:
            answer = call(headers)
            assert (answer.status_code, answer.json()["error_code"]) == (status, code), answer.text
    listed = http.get(f"{inbox.url}/consumers", headers=owner.headers).json()["consumers"]
    assert [(c["name"], c["event_types"]) for c in listed] == [("default", None), ("mine", ["a"])]


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
        assert http.get(f"{service.admin_url}/ready").status_code == 200  # readiness: admin port only


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


# --- secrets bcrypt cannot take, and the lock-out ----------------------------------------------

# A header value is bytes; the services read it as latin-1, so each of these bytes is one
# character of the right count that UTF-8 makes two bytes: 86 > bcrypt's 72.
_LATIN1_SECRET = b"\xe9" * 43


def _raw_bearer(key_id: str, secret: bytes) -> bytes:
    return b"Bearer trg_" + key_id.encode() + b"_" + secret


@pytest.fixture
def strict_edges(stack: Stack) -> Iterator[tuple[Service, Service]]:
    """An ingest and an inbox of the session stack that lock a client out after 3 failures,
    with a long key cache (what is tested is the order of cache and lock-out)."""
    env = {
        "TRIGGERS_AUTH_FAILURES_PER_MINUTE": "3",
        "TRIGGERS_TRUSTED_PROXY_HOPS": "1",
        "TRIGGERS_KEY_CACHE_TTL_S": "300",
    }
    ingest, inbox = start_service(stack, "ingest", env), start_service(stack, "inbox", env)
    yield ingest, inbox
    processes.stop([ingest.process, inbox.process])


@pytest.mark.parametrize(
    "secret",
    [_LATIN1_SECRET, b"!" * 43, b"A" * 500, "\u00e9t\u00e9".encode() * 8 + b"a" * 3],
    ids=["latin1-43", "outside-alphabet", "over-long", "utf8-bytes"],
)
@pytest.mark.parametrize("known_id", [True, False], ids=["known-id", "unknown-id"])
def test_a_malformed_secret_is_a_401_that_counts_toward_the_lock_out(
    http: httpx.Client,
    inbox: Service,
    strict_edges: tuple[Service, Service],
    api_key: ApiKey,
    secret: bytes,
    known_id: bool,
) -> None:
    edge, edge_inbox = strict_edges
    key_id = api_key.key_id if known_id else "0123456789abcdef"
    # Raw bytes: httpx would refuse to encode a str header holding non-ASCII characters.
    bad = {
        b"Authorization": _raw_bearer(key_id, secret),
        b"X-Forwarded-For": f"198.51.100.{secrets.randbelow(250) + 1}".encode(),
    }
    answers = [
        http.post(f"{edge.url}/events", json=EVENT, headers=bad),
        http.get(f"{edge_inbox.url}/inbox", headers=bad),
        http.post(f"{edge.url}/events", json=EVENT, headers=bad),
    ]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert {a.json()["error_code"] for a in answers} == {"UNAUTHENTICATED"}
    # Each counted: the ingest edge saw 2 failures, so one more locks the client out there.
    assert http.post(f"{edge.url}/events", json=EVENT, headers=bad).status_code == 401
    locked = http.post(f"{edge.url}/events", json=EVENT, headers=bad)
    assert locked.status_code == 429
    # Nothing was stored for the key's account; the same key, sent right from elsewhere, works.
    other = {"X-Forwarded-For": "198.51.100.251", **api_key.headers}
    sent = http.post(f"{edge.url}/events", json={"event_type": "auth.ok", "payload": {"n": 1}}, headers=other)
    assert sent.status_code == 202
    event_id = sent.json()["event_id"]
    assert wait_until(lambda: http.get(f"{inbox.url}/inbox", headers=api_key.headers).json()["total_undelivered"] == 1)
    page = http.get(f"{inbox.url}/inbox", headers=api_key.headers).json()
    assert [(e["event_id"], e["payload"]) for e in page["events"]] == [(event_id, {"n": 1})]


# Any token a client can put in a header: printable ASCII and latin-1's upper half.
_HEADER_CHARS = st.characters(codec="latin-1", exclude_characters=" \t\x7f", min_codepoint=0x21)
_UPPER_HALF = st.characters(min_codepoint=0xA0, max_codepoint=0xFF)
# A secret's own length (43) is where a wrong one gets past the shape check to bcrypt.
_SECRETS = st.one_of(
    st.text(_UPPER_HALF, min_size=43, max_size=43),
    st.text(_HEADER_CHARS, min_size=43, max_size=43),
    st.text(_HEADER_CHARS, min_size=1, max_size=120),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    secret=_SECRETS,
    prefix=st.sampled_from(["known", "unknown", "none"]),
)
def test_any_bearer_token_is_answered_401_never_500(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey, secret: str, prefix: str
) -> None:
    token = {
        "known": f"trg_{api_key.key_id}_{secret}",
        "unknown": f"trg_0123456789abcdef_{secret}",
        "none": secret,
    }[prefix]
    headers = {b"Authorization": b"Bearer " + token.encode("latin-1")}
    if token == api_key.key:  # hypothesis cannot guess 256 random bits; said for the reader
        return
    for answer in (
        http.post(f"{ingest.url}/events", json=EVENT, headers=headers),
        http.get(f"{inbox.url}/inbox", headers=headers),
    ):
        assert answer.status_code == 401, (token, answer.text)
        assert answer.json()["error_code"] == "UNAUTHENTICATED"
    assert "x-ratelimit-limit" not in answer.headers


def test_a_bad_client_behind_a_shared_address_does_not_lock_out_verified_keys(
    http: httpx.Client, inbox: Service, strict_edges: tuple[Service, Service], key_factory: Callable[..., ApiKey]
) -> None:
    edge, edge_inbox = strict_edges
    office = {"X-Forwarded-For": "192.0.2.44"}  # a NAT: a good producer and a bad one behind it
    good, newcomer = key_factory(), key_factory()
    first = http.post(
        f"{edge.url}/events", json={"event_type": "nat", "payload": {"n": 1}}, headers={**office, **good.headers}
    )
    assert first.status_code == 202
    assert http.get(f"{edge_inbox.url}/inbox", headers={**office, **good.headers}).status_code == 200
    guess = {**office, "Authorization": "Bearer trg_0123456789abcdef_" + "x" * 43}
    assert [http.post(f"{edge.url}/events", json=EVENT, headers=guess).status_code for _ in range(3)] == [401] * 3
    assert [http.get(f"{edge_inbox.url}/inbox", headers=guess).status_code for _ in range(3)] == [401] * 3
    assert http.post(f"{edge.url}/events", json=EVENT, headers=guess).status_code == 429  # locked out
    # The verified key keeps working from the locked address, on both services...
    second = http.post(
        f"{edge.url}/events", json={"event_type": "nat", "payload": {"n": 2}}, headers={**office, **good.headers}
    )
    assert second.status_code == 202
    assert http.get(f"{edge_inbox.url}/inbox", headers={**office, **good.headers}).status_code == 200
    # ...while a key this edge never verified still faces the lock-out there.
    assert http.post(f"{edge.url}/events", json=EVENT, headers={**office, **newcomer.headers}).status_code == 429
    assert http.get(f"{edge_inbox.url}/inbox", headers={**office, **newcomer.headers}).status_code == 429
    # Both accepted events are stored, with their payloads; the newcomer's account has nothing.
    ids = {first.json()["event_id"]: {"n": 1}, second.json()["event_id"]: {"n": 2}}
    assert wait_until(lambda: http.get(f"{inbox.url}/inbox", headers=good.headers).json()["total_undelivered"] == 2)
    page = http.get(f"{inbox.url}/inbox", headers=good.headers).json()
    assert {e["event_id"]: e["payload"] for e in page["events"]} == ids
    assert http.get(f"{inbox.url}/inbox", headers=newcomer.headers).json()["total_undelivered"] == 0


def test_concurrent_guesses_from_one_address_get_no_more_checks_than_its_budget(
    http: httpx.Client, inbox: Service, strict_edges: tuple[Service, Service], key_factory: Callable[..., ApiKey]
) -> None:
    """60 distinct well-formed keys at once from one address: at most its 3 failures reach
    the key store and bcrypt (401); every other one is 429 before any check. A key no one
    verified yet, sent at the same moment from another address, is served and stored."""
    edge, _ = strict_edges
    newcomer = key_factory()
    attacker = f"198.18.{secrets.randbelow(250)}.{secrets.randbelow(250) + 1}"

    async def burst() -> tuple[list[httpx.Response], httpx.Response]:
        limits = httpx.Limits(max_connections=70)
        async with httpx.AsyncClient(base_url=edge.url, timeout=30.0, limits=limits) as client:

            def guess() -> Awaitable[httpx.Response]:
                token = f"trg_{secrets.token_hex(8)}_{secrets.token_urlsafe(32)}"
                headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": attacker}
                return client.post("/events", json=EVENT, headers=headers)

            legit_headers = {**newcomer.headers, "X-Forwarded-For": "198.19.0.1"}
            answers = await asyncio.gather(
                *(guess() for _ in range(30)),
                client.post("/events", json={"event_type": "burst", "payload": {"n": 7}}, headers=legit_headers),
                *(guess() for _ in range(30)),
            )
        return [*answers[:30], *answers[31:]], answers[30]

    guesses, legit = asyncio.run(burst())
    codes = [a.status_code for a in guesses]
    assert set(codes) <= {401, 429}, codes
    assert codes.count(401) <= 3, codes
    refused = [a for a in guesses if a.status_code == 429]
    assert all(a.json()["error_code"] == "RATE_LIMITED" and int(a.headers["retry-after"]) >= 1 for a in refused)
    assert legit.status_code == 202, legit.text
    event_id = legit.json()["event_id"]
    assert wait_until(lambda: http.get(f"{inbox.url}/inbox", headers=newcomer.headers).json()["total_undelivered"] == 1)
    page = http.get(f"{inbox.url}/inbox", headers=newcomer.headers).json()
    assert [(e["event_id"], e["payload"]) for e in page["events"]] == [(event_id, {"n": 7})]


# --- the inbox's own limits --------------------------------------------------------------------


def test_the_inbox_limits_each_key_and_says_so_on_every_authenticated_answer(
    http: httpx.Client, stack: Stack, ingest: Service, inbox: Service, key_factory: Callable[..., ApiKey]
) -> None:
    limited = start_service(stack, "inbox", {"TRIGGERS_INBOX_REQUESTS_PER_MINUTE": "5"})
    alice, bob = key_factory(), key_factory()
    try:
        sent = http.post(f"{ingest.url}/events", json={"event_type": "rl", "payload": {"n": 1}}, headers=alice.headers)
        event_id = sent.json()["event_id"]
        assert wait_until(lambda: http.get(f"{inbox.url}/events/{event_id}", headers=alice.headers).status_code == 200)
        answers = [
            http.get(f"{limited.url}/inbox", headers=alice.headers),
            http.get(f"{limited.url}/events/{event_id}", headers=alice.headers),
            http.get(f"{limited.url}/events/no-such-id", headers=alice.headers),  # a 404 costs a token too
            http.get(f"{limited.url}/inbox", params={"evnet_type": "x"}, headers=alice.headers),  # and a 400
            http.get(f"{limited.url}/inbox", params={"limit": 0}, headers=alice.headers),  # an out-of-range one too
        ]
        assert [a.status_code for a in answers] == [200, 200, 404, 400, 400]
        assert [a.headers["x-ratelimit-limit"] for a in answers] == ["5"] * 5
        assert [int(a.headers["x-ratelimit-remaining"]) for a in answers] == [4, 3, 2, 1, 0]
        assert all(int(a.headers["x-ratelimit-reset"]) >= 1 for a in answers)
        refused = http.post(f"{limited.url}/inbox/ack", json={"event_ids": [event_id]}, headers=alice.headers)
        assert refused.status_code == 429
        assert refused.json()["error_code"] == "RATE_LIMITED"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-remaining"] == "0"
        # The refused acknowledgement changed nothing: the event is still undelivered.
        assert http.get(f"{inbox.url}/events/{event_id}", headers=alice.headers).json()["delivered"] is False
        assert http.get(f"{inbox.url}/inbox", headers=alice.headers).json()["total_undelivered"] == 1
        # Another key has its own bucket.
        other = http.get(f"{limited.url}/inbox", headers=bob.headers)
        assert other.status_code == 200
        assert other.headers["x-ratelimit-remaining"] == "4"
        # Unauthenticated answers carry no rate headers (there is no key to count against).
        assert "x-ratelimit-limit" not in http.get(f"{limited.url}/inbox").headers
    finally:
        processes.stop([limited.process])


def test_a_stalled_acknowledgement_body_gets_408_and_holds_up_no_one(
    http: httpx.Client, stack: Stack, api_key: ApiKey
) -> None:
    limited = start_service(stack, "inbox", {"TRIGGERS_BODY_TIMEOUT_S": "1"})
    host, port = limited.url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=15) as sock:
            head = (
                "POST /inbox/ack HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {api_key.key}\r\nContent-Length: 60\r\n\r\n"
            )
            sock.sendall(head.encode() + b'{"event_ids": [')  # and then nothing more
            # Meanwhile another caller is served.
            assert http.get(f"{limited.url}/inbox", headers=api_key.headers).status_code == 200
            answer = b""
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"REQUEST_TIMEOUT" in answer or b"content-length" in answer.lower()
    finally:
        processes.stop([limited.process])


# --- the cursor secret -------------------------------------------------------------------------


def test_the_inbox_refuses_to_start_without_a_cursor_secret_outside_local_use(stack: Stack) -> None:
    aws = "https://dynamodb.us-east-1.amazonaws.com"
    remote = {**stack.env, "TRIGGERS_AWS_ENDPOINT_URL": aws, "TRIGGERS_DYNAMODB_ENDPOINT_URL": aws}
    for env, wanted in (
        ({**remote, "TRIGGERS_CURSOR_SECRET": ""}, "TRIGGERS_CURSOR_SECRET"),
        ({**remote, "TRIGGERS_CURSOR_SECRET": "local-development-cursor-secret"}, "TRIGGERS_CURSOR_SECRET"),
        ({**remote, "TRIGGERS_CURSOR_SECRET": "short"}, "16 characters"),
    ):
        refused = run_triggers(Stack(stack.settings, env, stack.logs), "run", "inbox", "--port", "0", check=False)
        assert refused.returncode != 0
        assert wanted in refused.stderr
    # With a secret of its own it starts against the same endpoint (nothing is contacted yet).
    port = processes.free_port()
    env = {**remote, "TRIGGERS_CURSOR_SECRET": secrets.token_urlsafe(32)}
    started = processes.spawn(
        [sys.executable, "-m", "shared.ops.cli", "run", "inbox", "--port", str(port), "--admin-port", "0"],
        env,
        quiet=True,
    )
    try:
        processes.wait_http(f"http://127.0.0.1:{port}/status", SERVICE_START_TIMEOUT_S, started)
    finally:
        processes.stop([started])
