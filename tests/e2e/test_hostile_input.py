"""Hostile input gets a clear answer in the contract's error shape, never a 500."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Iterator
from typing import Any

import httpx
import msgspec
import pytest

from shared.local import processes
from tests.conftest import ApiKey, Service, Stack, start_service, wait_until
from tests.e2e.end_state import Post, expected_payload, post_all, settled_inbox, warm_up

DEEP = b'{"event_type": "deep", "payload": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"


@pytest.mark.parametrize(
    ("body", "statuses"),
    [
        (DEEP, {400}),  # nesting deeper than the decoder accepts
        (b'{"event_type": "n", "payload": {"big": 1' + b"0" * 5000 + b"}}", {202, 400}),
        (b'{"event_type": "n", "payload": {"x": NaN}}', {400}),
        (b'{"event_type": "n", "payload": {"x": Infinity}}', {400}),
        (b'{"event_type": "\xff\xfe", "payload": {}}', {400}),  # invalid UTF-8
        (b'{"event_type": "dup", "event_type": "dup2", "payload": {}}', {202, 400}),
        (b'{"event_type": "n", "payload": {"a": 1, "a": 2}}', {202, 400}),
        (b"\x00\x01\x02", {400}),
        (b"", {400}),
        (b"null", {400}),
        (b'{"event_type": "n", "payload": {}}' + b" garbage", {400}),
    ],
    ids=[
        "deep",
        "huge-number",
        "nan",
        "infinity",
        "bad-utf8",
        "dup-field",
        "dup-payload-key",
        "binary",
        "empty",
        "null",
        "trailing",
    ],
)
def test_hostile_bodies_get_a_4xx_or_are_taken_never_a_500(
    http: httpx.Client, ingest: Service, api_key: ApiKey, body: bytes, statuses: set[int]
) -> None:
    for path in ("/events", "/events/batch"):
        sent = body if path == "/events" else b'{"events": [' + body + b"]}"
        response = http.post(
            f"{ingest.url}{path}", content=sent, headers={**api_key.headers, "Content-Type": "application/json"}
        )
        assert response.status_code < 500, (path, response.text)
        if path == "/events":
            assert response.status_code in statuses, response.text
        if response.status_code >= 400:
            error = response.json()
            assert set(error) == {"status", "error_code", "message", "details", "correlation_id"}


def test_very_long_and_odd_headers_are_handled(http: httpx.Client, ingest: Service, inbox: Service) -> None:
    long_key = "Bearer " + "x" * 60_000
    for service in (ingest, inbox):
        response = http.get(f"{service.url}/inbox", headers={"Authorization": long_key})
        assert response.status_code in (401, 404, 405, 431)
    injected = http.get(f"{inbox.url}/status", headers={"X-Request-ID": "ok\tx-evil: 1"})
    assert injected.status_code == 200
    assert "evil" not in "".join(f"{k}:{v}" for k, v in injected.headers.items() if k != "x-request-id")
    assert injected.headers["x-request-id"] == "okx-evil:1"


@pytest.mark.parametrize("path", ["/events/%00", "/events/..%2f..%2fetc", "/events/" + "A" * 5000, "/inbox?limit=1e9"])
def test_odd_inbox_paths_and_queries_never_500(http: httpx.Client, inbox: Service, api_key: ApiKey, path: str) -> None:
    response = http.get(f"{inbox.url}{path}", headers=api_key.headers)
    assert 400 <= response.status_code < 500
    assert response.json()["correlation_id"]


@pytest.fixture(scope="module")
def impatient_ingest(stack: Stack) -> Iterator[Service]:
    """An ingest edge that waits one second for a body."""
    service = start_service(stack, "ingest", {"TRIGGERS_BODY_TIMEOUT_S": "1"})
    yield service
    processes.stop([service.process])


def test_a_stalled_body_gets_408_and_does_not_hold_up_others(
    http: httpx.Client, impatient_ingest: Service, api_key: ApiKey
) -> None:
    host, port = impatient_ingest.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        started = time.monotonic()
        head = (
            f"POST /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {api_key.key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        slow.sendall(head.encode() + b'{"event_type": ')  # ... and the rest never comes
        meanwhile = http.post(
            f"{impatient_ingest.url}/events", json={"event_type": "t", "payload": {}}, headers=api_key.headers
        )
        assert meanwhile.status_code == 202
        answer = slow.recv(65536).decode()
        waited = time.monotonic() - started
    assert answer.startswith("HTTP/1.1 408"), answer
    assert '"error_code":"REQUEST_TIMEOUT"' in answer
    assert 1 <= waited < 5  # the deadline plus at most one sweep interval, not forever


# --- every input to its end state ----------------------------------------------------------


def _event(payload: bytes, event_type: bytes = b"h", extra: bytes = b"") -> bytes:
    return b'{"event_type": "' + event_type + b'", "payload": ' + payload + extra + b"}"


# name -> (bodies one account sends, the status each must get on POST /events)
END_STATE_CASES: dict[str, tuple[list[bytes], list[int]]] = {
    "deep": ([DEEP], [400]),
    "nesting-over-128": ([_event(b'{"d": ' + b"[" * 128 + b"]" * 128 + b"}")], [400]),
    "nesting-at-128": ([_event(b'{"d": ' + b"[" * 127 + b"]" * 127 + b"}")], [202]),
    "huge-integer": ([_event(b'{"big": 1' + b"0" * 5000 + b"}")], [400]),
    "1e400": ([_event(b'{"n": 1e400}')], [400]),
    "-1e400-nested": ([_event(b'{"a": [1, {"n": -1e400}]}')], [400]),
    "long-exponent": ([_event(b'{"n": 1e-99999}')], [400]),
    "numbers-at-the-bounds": (
        [_event(b'{"max": 1.7976931348623157e308, "tiny": 1e-9999, "i": ' + b"9" * 100 + b', "z": -0.0}')],
        [202],
    ),
    "0.1-and-its-neighbour": ([_event(b'{"v": 0.1}'), _event(b'{"v": 0.1000000000000000001}')], [202, 202]),
    "nan": ([_event(b'{"x": NaN}')], [400]),
    "infinity": ([_event(b'{"x": Infinity}')], [400]),
    "bad-utf8-event-type": ([b'{"event_type": "\xff\xfe", "payload": {}}'], [400]),
    "bad-utf8-in-payload": ([_event(b'{"s": "caf\xff"}')], [400]),
    "bad-utf8-in-payload-key": ([_event(b'{"\xc3": 1}')], [400]),
    "lone-surrogate": ([_event(b'{"s": "\\ud800"}')], [400]),
    "surrogate-pair-and-every-plane": ([_event('{"s": "\\ud83d\\ude00 😀 é 中 \U0010ffff"}'.encode())], [202]),
    "sqs-refused-characters": ([_event('{"s": "\ufffe\uffff"}'.encode())], [202]),
    "escaped-too-large": ([_event(b'{"s": "' + "\uffff".encode() * 50_000 + b'"}')], [413]),
    "control-in-event-type": ([_event(b"{}", event_type=b"a\\u0001b")], [400]),
    "control-in-idempotency-key": ([_event(b"{}", extra=b', "idempotency_key": "k\\n"')], [400]),
    "dup-field": ([b'{"event_type": "dup", "event_type": "dup2", "payload": {}}'], [400]),
    "dup-payload-key": ([_event(b'{"a": 1, "a": 2}')], [400]),
    "dup-nested-key": ([_event(b'{"a": {"b": [{"c": 1, "c": 1}]}}')], [400]),
    "binary": ([b"\x00\x01\x02"], [400]),
    "trailing": ([_event(b"{}") + b" garbage"], [400]),
}
BYSTANDER_EVENTS = 40


def test_every_hostile_input_reaches_its_end_state_and_costs_no_one_else(
    http: httpx.Client, ingest: Service, inbox: Service, writer: Service, key_factory: Any
) -> None:
    """A 202 is in the inbox and reads back as sent; a 4xx stored nothing; another account's
    requests sent at the same moment (sharing SQS messages and calls) were all stored.

    Each case runs twice, as POST /events and inside POST /events/batch, each from its own
    account so that each inbox shows exactly that case's outcome.
    """
    bystander = key_factory()
    cases = [(name, path, key_factory()) for name in END_STATE_CASES for path in ("/events", "/events/batch")]
    for key in [bystander, *(key for _, _, key in cases)]:
        warm_up(http, ingest, key)
    posts = [
        Post(key, path, body if path == "/events" else b'{"events": [' + body + b"]}")
        for name, path, key in cases
        for body in END_STATE_CASES[name][0]
    ]
    bystanders = [
        Post(bystander, "/events", b'{"event_type": "b", "payload": {"i": %d, "pad": "%s"}}' % (i, b"x" * 2000))
        for i in range(BYSTANDER_EVENTS)
    ]
    answers = iter(post_all(ingest, [*posts, *bystanders]))

    for name, path, key in cases:
        bodies, statuses = END_STATE_CASES[name]
        accepted: dict[str, bytes] = {}  # event id -> payload as the inbox must return it
        for body, status in zip(bodies, statuses, strict=True):
            answer = next(answers)
            assert answer.status_code < 500, (name, path, answer.text)
            event_id = _accepted_id(answer, path)
            if path == "/events":
                assert answer.status_code == status, (name, answer.text)
            assert (event_id is not None) == (status == 202), (name, path, answer.text)
            if event_id is not None:
                accepted[event_id] = expected_payload(body)
            else:
                _assert_error_names_a_field(answer, path, name)
        stored = settled_inbox(http, ingest, inbox, key, list(accepted))
        assert {i: bytes(e.payload) for i, e in stored.items()} == accepted, (name, path)

    bystanders_answers = list(answers)
    assert [a.status_code for a in bystanders_answers] == [202] * BYSTANDER_EVENTS
    stored = settled_inbox(http, ingest, inbox, bystander, [a.json()["event_id"] for a in bystanders_answers])
    assert sorted(msgspec.json.decode(bytes(e.payload))["i"] for e in stored.values()) == list(range(BYSTANDER_EVENTS))


def _accepted_id(answer: httpx.Response, path: str) -> str | None:
    if answer.status_code not in (202, 207):
        return None
    if path == "/events":
        event_id: str = answer.json()["event_id"]
        return event_id
    (result,) = answer.json()["results"]
    batch_id: str | None = result.get("event_id")
    return batch_id


def _assert_error_names_a_field(answer: httpx.Response, path: str, name: str) -> None:
    error = answer.json() if answer.status_code >= 400 else answer.json()["results"][0]["error"]
    assert error["status"] in (400, 413), (name, path, error)
    assert error["details"], (name, path, error)
    assert error["details"][0]["field"].startswith("$"), (name, path, error)


def test_refused_events_spend_tokens_and_store_nothing(
    http: httpx.Client, ingest: Service, inbox: Service, writer: Service, key_factory: Any
) -> None:
    """Tokens are taken before any event is checked, so a flood of costly refused events is
    bounded by its sender's own rate limit (before: refused events cost nothing)."""
    key = key_factory(rate_limit=10)  # one token back every 6 s: none comes back during the test
    headers = {**key.headers, "Content-Type": "application/json"}
    refused = [_event(b'{"a": 1, "a": 2}'), _event(b'{"n": 1e400}'), _event(b'{"d": ' + b"[" * 130 + b"]" * 130 + b"}")]
    batch = http.post(
        f"{ingest.url}/events/batch", content=b'{"events": [' + b",".join(refused) + b"]}", headers=headers
    )
    assert batch.status_code == 207, batch.text
    assert [r["error"]["status"] for r in batch.json()["results"]] == [400, 400, 400]
    single = http.post(f"{ingest.url}/events", content=refused[0], headers=headers)
    assert single.status_code == 400, single.text
    spent = int(batch.headers["x-ratelimit-remaining"]) - int(single.headers["x-ratelimit-remaining"])
    assert spent == 1, (batch.headers, single.headers)  # the single refused event: one token
    assert int(batch.headers["x-ratelimit-remaining"]) <= 10 - len(refused)  # the batch: one per event
    assert settled_inbox(http, ingest, inbox, key) == {}


def test_a_non_ascii_idempotency_key_is_one_key_in_the_header_and_in_the_body(
    http: httpx.Client, ingest: Service, inbox: Service, writer: Service, key_factory: Any
) -> None:
    """The header is read as UTF-8, as the body is (before: latin-1, so the same key sent
    both ways was refused as control characters, or never matched)."""
    key = key_factory()
    idem = "clé-ключ-\U0001f511"  # Latin, Cyrillic, an astral character: 2, 2 and 4 bytes in UTF-8
    body = b'{"event_type": "k", "payload": {"n": 1}, "idempotency_key": %s}' % msgspec.json.encode(idem)
    headers = {**key.headers, "Content-Type": "application/json"}
    both = http.post(f"{ingest.url}/events", content=body, headers={**headers, "Idempotency-Key": idem.encode()})
    assert both.status_code == 202, both.text
    body_only = http.post(f"{ingest.url}/events", content=body, headers=headers)
    assert body_only.status_code == 202, body_only.text
    header_only = http.post(
        f"{ingest.url}/events",
        content=b'{"event_type": "k", "payload": {"n": 1}}',
        headers={**headers, "Idempotency-Key": idem.encode()},
    )
    assert header_only.status_code == 202, header_only.text
    invalid = http.post(
        f"{ingest.url}/events",
        content=b'{"event_type": "k", "payload": {"n": 2}}',
        headers={**headers, "Idempotency-Key": b"k\xff\xfe"},
    )
    assert invalid.status_code == 400, invalid.text
    assert [d["field"] for d in invalid.json()["details"]] == ["Idempotency-Key"]
    stored = settled_inbox(http, ingest, inbox, key, [both.json()["event_id"]])
    assert list(stored) == [both.json()["event_id"]]  # one event: the three posts are one key
    assert bytes(stored[both.json()["event_id"]].payload) == b'{"n": 1}'


# --- the /consumers routes and the consumer parameter ----------------------------------------

_DEEP_TYPES = b"[" * 5000 + b"]" * 5000
# Bodies of POST /consumers: each a 4xx naming what is wrong, and nothing stored.
HOSTILE_CONSUMER_BODIES: dict[str, tuple[bytes, int]] = {
    "huge": (msgspec.json.encode({"name": "a", "event_types": ["x" * 255] * 200}), 413),
    "huge-whitespace": (b'{"name": "a"' + b" " * 40_000 + b"}", 413),
    "deep-event-types": (b'{"name": "a", "event_types": ' + _DEEP_TYPES + b"}", 400),
    "deep-name": (b'{"name": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2000 + b"}", 400),
    "name-a-list": (b'{"name": ["a"]}', 400),
    "name-null": (b'{"name": null}', 400),
    "name-true": (b'{"name": true}', 400),
    "name-an-object": (b'{"name": {"name": "a"}}', 400),
    "event-types-an-object": (b'{"name": "a", "event_types": {"order.*": true}}', 400),
    "event-types-nested": (b'{"name": "a", "event_types": [["order.*"]]}', 400),
    "event-types-null-entry": (b'{"name": "a", "event_types": ["a", null]}', 400),
    "name-fullwidth": ('{"name": "\uff41\uff42"}'.encode(), 400),
    "name-cyrillic-homoglyph": ('{"name": "\u0430bc"}'.encode(), 400),
    "name-zero-width": ('{"name": "ab\u200b"}'.encode(), 400),
    "name-combining-accent": ('{"name": "e\u0301"}'.encode(), 400),
    "name-right-to-left": ('{"name": "a\u202eb"}'.encode(), 400),
    "name-emoji": ('{"name": "\U0001f600"}'.encode(), 400),
    "name-escaped-nul": (b'{"name": "a\\u0000"}', 400),
    "name-default": (b'{"name": "default"}', 400),
    "name-default-newline": (b'{"name": "default\\n"}', 400),
    "name-default-space": (b'{"name": " default"}', 400),
    "name-65": (b'{"name": "' + b"n" * 65 + b'"}', 400),
    "name-reserved-item": (b'{"name": "#account"}', 400),
    "name-moved-item": (b'{"name": "#deleted:a#0123456789ab"}', 400),
    "patterns-51": (msgspec.json.encode({"name": "a", "event_types": [f"t.{n}" for n in range(51)]}), 400),
    "pattern-bare-wildcard": (b'{"name": "a", "event_types": [".*"]}', 400),
    "pattern-256": (msgspec.json.encode({"name": "a", "event_types": ["p" * 256]}), 400),
    "start-upper-now": (b'{"name": "a", "start": "NOW"}', 400),
    "start-now-space": (b'{"name": "a", "start": "now "}', 400),
    "start-empty": (b'{"name": "a", "start": ""}', 400),
    "start-null": (b'{"name": "a", "start": null}', 400),
    "start-a-number": (b'{"name": "a", "start": 1767225600}', 400),
    "start-epoch-text": (b'{"name": "a", "start": "1767225600"}', 400),
    "start-offset-without-colon": (b'{"name": "a", "start": "2026-01-01T00:00:00+0100"}', 400),
    "start-basic-format": (b'{"name": "a", "start": "20260101T000000Z"}', 400),
    "start-space-separator": (b'{"name": "a", "start": "2026-01-01 00:00:00Z"}', 400),
    "start-ten-digit-fraction": (b'{"name": "a", "start": "2026-01-01T00:00:00.1234567890Z"}', 400),
    "start-empty-fraction": (b'{"name": "a", "start": "2026-01-01T00:00:00.Z"}', 400),
    "start-leap-second": (b'{"name": "a", "start": "2026-06-30T23:59:60Z"}', 400),
    "start-february-30": (b'{"name": "a", "start": "2026-02-30T00:00:00Z"}', 400),
    "start-hour-24": (b'{"name": "a", "start": "2026-01-01T24:00:00Z"}', 400),
    "start-offset-24h": (b'{"name": "a", "start": "2026-01-01T00:00:00+24:00"}', 400),
    "start-year-0": (b'{"name": "a", "start": "0000-01-01T00:00:00Z"}', 400),
    "start-year-1-moved-back": (b'{"name": "a", "start": "0001-01-01T00:00:00+00:01"}', 400),
    "start-extended-year": (b'{"name": "a", "start": "+02026-01-01T00:00:00Z"}', 400),
    "start-fullwidth-digits": ('{"name": "a", "start": "\uff12026-01-01T00:00:00Z"}'.encode(), 400),
    "unknown-account-id": (b'{"name": "a", "account_id": "acc_someone_else"}', 400),
    "unknown-generation": (b'{"name": "a", "generation": "0123456789ab"}', 400),
    "unknown-status": (b'{"name": "a", "status": "deleting"}', 400),
    "unknown-job": (b'{"name": "a", "job": "cleanup"}', 400),
}
# Bodies of PATCH /consumers/{name} for an existing consumer: each a 4xx, the filter unchanged.
HOSTILE_CONSUMER_PATCHES: dict[str, tuple[bytes, int]] = {
    "huge": (msgspec.json.encode({"event_types": ["x" * 255] * 200}), 413),
    "deep": (b'{"event_types": ' + _DEEP_TYPES + b"}", 400),
    "bare-wildcard": (b'{"event_types": ["a", ".*"]}', 400),
    "a-string": (b'{"event_types": "a"}', 400),
    "patterns-51": (msgspec.json.encode({"event_types": [f"t.{n}" for n in range(51)]}), 400),
    "unknown-field": (b'{"event_types": null, "start": "earliest"}', 400),
    "rename": (b'{"event_types": null, "name": "b"}', 400),
    "no-field": (b"{}", 400),
    "not-json": (b'{"event_types": ', 400),
}
# Values of ``consumer`` on the inbox calls, as sent in the query string: each a 400 naming it.
HOSTILE_CONSUMER_PARAMETERS = {
    "empty": "consumer=",
    "65": "consumer=" + "n" * 65,
    "dot-dot-slash": "consumer=..%2Fmine",
    "slash": "consumer=a/b",
    "encoded-nul": "consumer=mine%00",
    "trailing-space": "consumer=mine%20",
    "trailing-newline": "consumer=mine%0A",
    "reserved-item": "consumer=%23account",
    "moved-item": "consumer=%23deleted:mine%230123456789ab",
    "partition-key": "consumer=c:mine%230123456789ab%7Cacc",
    "fullwidth": "consumer=%EF%BD%8D",
    "invalid-utf8": "consumer=%FF%FE",
}


def _error_shape(answer: httpx.Response) -> dict[str, Any]:
    assert 400 <= answer.status_code < 500, answer.text
    error: dict[str, Any] = answer.json()
    assert set(error) == {"status", "error_code", "message", "details", "correlation_id"}, error
    assert error["status"] == answer.status_code
    return error


def _consumers_listed(http: httpx.Client, inbox: Service, key: ApiKey) -> list[tuple[str, Any]]:
    answer = http.get(f"{inbox.url}/consumers", headers=key.headers)
    assert answer.status_code == 200, answer.text
    return [(c["name"], c["event_types"]) for c in answer.json()["consumers"]]


async def _bystander(client: httpx.AsyncClient, key: ApiKey, rounds: int) -> list[int]:
    """Another account's ordinary work at the same moment: create, read, page, list, change."""
    statuses = []
    for n in range(rounds):
        name = f"by-{n:02d}"
        made = await client.post("/consumers", json={"name": name, "event_types": ["b.*"]}, headers=key.headers)
        read = await client.get(f"/consumers/{name}", headers=key.headers)
        page = await client.get("/inbox", params={"consumer": name}, headers=key.headers)
        changed = await client.patch(f"/consumers/{name}", json={"event_types": [f"b.{n}"]}, headers=key.headers)
        listed = await client.get("/consumers", headers=key.headers)
        statuses += [made.status_code, read.status_code, page.status_code, changed.status_code, listed.status_code]
    return statuses


def _hostile_requests(
    client: httpx.AsyncClient, key: ApiKey, event_id: str
) -> list[tuple[str, int, Awaitable[httpx.Response]]]:
    """(case, status it must get, the request) for every hostile body and ``consumer`` value."""
    json_headers = {**key.headers, "Content-Type": "application/json"}
    requests: list[tuple[str, int, Awaitable[httpx.Response]]] = []
    for case, (body, status) in HOSTILE_CONSUMER_BODIES.items():
        requests.append((f"create {case}", status, client.post("/consumers", content=body, headers=json_headers)))
    for case, (body, status) in HOSTILE_CONSUMER_PATCHES.items():
        request = client.patch("/consumers/kept", content=body, headers=json_headers)
        requests.append((f"patch {case}", status, request))
    ack = msgspec.json.encode({"event_ids": [event_id]})
    for case, query in HOSTILE_CONSUMER_PARAMETERS.items():
        for call, request in (
            ("page", client.get(f"/inbox?{query}", headers=key.headers)),
            ("read", client.get(f"/events/{event_id}?{query}", headers=key.headers)),
            ("ack one", client.delete(f"/events/{event_id}?{query}", headers=key.headers)),
            ("ack", client.post(f"/inbox/ack?{query}", content=ack, headers=json_headers)),
        ):
            requests.append((f"{call} consumer {case}", 400, request))
    return requests


def test_hostile_consumer_input_is_refused_stores_nothing_and_costs_no_one_else(
    http: httpx.Client, ingest: Service, inbox: Service, writer: Service, key_factory: Any
) -> None:
    """Every hostile /consumers body and ``consumer`` value, sent all at once beside another
    account's ordinary consumer traffic: each a 4xx in the error shape (the 400s naming a
    field), none stored (the list after shows only what was there), the default's event
    still undelivered, and every one of the other account's requests served."""
    hostile, bystander = key_factory(), key_factory()
    kept = http.post(f"{inbox.url}/consumers", json={"name": "kept", "event_types": ["k"]}, headers=hostile.headers)
    assert kept.status_code == 201, kept.text
    sent = http.post(f"{ingest.url}/events", json={"event_type": "k", "payload": {}}, headers=hostile.headers)
    event_id = sent.json()["event_id"]
    assert wait_until(lambda: http.get(f"{inbox.url}/inbox", headers=hostile.headers).json()["total_undelivered"])

    async def everything() -> tuple[list[tuple[str, int, httpx.Response]], list[int]]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=inbox.url, timeout=30.0, limits=limits) as client:
            bystanding = asyncio.ensure_future(_bystander(client, bystander, 8))
            requests = _hostile_requests(client, hostile, event_id)
            answers = await asyncio.gather(*(r for _, _, r in requests))
            statuses = await bystanding
        return [(case, status, a) for (case, status, _), a in zip(requests, answers, strict=True)], statuses

    hostile_answers, bystander_statuses = asyncio.run(everything())
    wrong = {case: (a.status_code, a.text[:200]) for case, status, a in hostile_answers if a.status_code != status}
    assert not wrong, wrong
    for case, status, answer in hostile_answers:
        error = _error_shape(answer)
        if status == 400:
            assert error["error_code"] == "VALIDATION_ERROR", (case, error)
            assert error["details"], (case, error)
            if "consumer" in case:
                assert [d["field"] for d in error["details"]] == ["consumer"], (case, error)
    assert _consumers_listed(http, inbox, hostile) == [("default", None), ("kept", ["k"])]
    assert http.get(f"{inbox.url}/events/{event_id}", headers=hostile.headers).json()["delivered"] is False
    kept_page = http.get(f"{inbox.url}/inbox", params={"consumer": "kept"}, headers=hostile.headers).json()
    assert kept_page["total_undelivered"] == len(kept_page["events"])  # its copy, if made, untouched
    assert bystander_statuses == [201, 200, 200, 200, 200] * 8
    assert _consumers_listed(http, inbox, bystander) == [
        ("default", None),
        *((f"by-{n:02d}", [f"b.{n}"]) for n in range(8)),
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/consumers/%2e%2e%2fkeys",
        "/consumers/..%2F..%2Fstatus",
        "/consumers/%00",
        "/consumers/%23account",
        "/consumers/%23deleted:kept%230123456789ab",
        "/consumers/kept%20",
        "/consumers/kept%0A",
        "/consumers/%EF%BD%8B",
        "/consumers/" + "n" * 5000,
    ],
)
def test_odd_consumer_paths_are_404_and_change_nothing(
    http: httpx.Client, inbox: Service, api_key: ApiKey, path: str
) -> None:
    made = http.post(f"{inbox.url}/consumers", json={"name": "kept", "event_types": ["k"]}, headers=api_key.headers)
    assert made.status_code == 201, made.text
    url = f"{inbox.url}{path}"
    for answer in (
        http.get(url, headers=api_key.headers),
        http.patch(url, json={"event_types": None}, headers=api_key.headers),
        http.delete(url, headers=api_key.headers),
    ):
        assert answer.status_code == 404, (path, answer.text)
        assert _error_shape(answer)["error_code"] == "NOT_FOUND"
    assert _consumers_listed(http, inbox, api_key) == [("default", None), ("kept", ["k"])]
