"""Hostile input gets a clear answer in the contract's error shape, never a 500."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from shared import processes
from tests.conftest import ApiKey, Service, Stack, start_service

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
