"""A body over its limit gets its 413, read by the client, and nothing is stored.

The service reads an over-limit body to its end (up to 4 times the limit, within the body
deadline) and drops it before it answers, so that the server does not close, and the kernel
reset, a connection the client is still writing to (shared/web/body.py). The raw-socket tests
show that directly: the whole body goes out, the 413 and its error body come back, and the
same connection serves the next request; a proxy forwarding the body relays the 413, where it
answered nothing before and triggers_client retried into ConnectionFailed. httpx (and so
triggers_client) connected straight to the service reads a 413 after a reset on Linux loopback
anyway; it is followed here to its end state all the same, past the bound included, where the
service closes the connection and must still not store anything.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from shared.local import processes
from tests.client.scripted_server import scripted_server, url_of
from tests.conftest import ApiKey, Service, Stack, start_service
from tests.e2e.end_state import settled_inbox
from triggers_client import TriggersClient, ValidationFailed

MIB = 1024 * 1024
LIMITS = {"/events": 512 * 1024, "/events/batch": 5 * MIB}  # docs/api.md
DRAIN_FACTOR = 4  # shared/web/body.py: how much of an over-limit body the service reads
# What the kernels' buffers may hold of a body the service did not read (loopback: the
# sender's send buffer and the receiver's receive buffer, a few MiB each at most).
BUFFERED = 16 * MIB
SIZES = [pytest.param(1.01, id="just-over"), pytest.param(4, id="4x"), pytest.param(20, id="20x")]


def _body(path: str, size: int) -> tuple[bytes, bytes, int]:
    """(head, tail, spaces) of a JSON body of ``size`` bytes the service would store if it took
    it: valid events, padded with whitespace between the head and the tail."""
    event = b'{"event_type": "oversized", "payload": {"n": 1}}'
    head, tail = (b"", event) if path == "/events" else (b'{"events": [', event + b"]}")
    return head, tail, size - len(head) - len(tail)


def _chunks(path: str, size: int) -> Iterator[bytes]:
    head, tail, spaces = _body(path, size)
    yield head
    while spaces > 0:
        n = min(64 * 1024, spaces)
        spaces -= n
        yield b" " * n
    yield tail


def _whole(path: str, size: int) -> bytes:
    head, tail, spaces = _body(path, size)
    return head + b" " * spaces + tail


@dataclass
class RawExchange:
    sent: int  # body bytes the socket took
    error: str | None  # the send's or receive's failure (a reset), if any
    answer: bytes  # everything that came back
    next_answer: bytes  # the answer to a GET /status on the same connection, if it could be sent


def _raw_post(url: str, path: str, key: ApiKey, size: int, *, chunked: bool, stop_at: int | None = None) -> RawExchange:
    """POST ``size`` bytes the way a client that writes first and reads after does, reading any
    early answer meanwhile; ``stop_at``: send only that much of the body, then wait."""
    host, port = url.removeprefix("http://").split(":")
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key.key}\r\n{framing}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(head.encode())
        exchange = _send_body(sock, path, size, chunked, size if stop_at is None else stop_at)
        if exchange.error is None:
            exchange.answer += _read_answer(sock, exchange.answer)
            try:
                sock.sendall(f"GET /status HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
                exchange.next_answer = _read_answer(sock, b"")
            except OSError as exc:
                exchange.error = f"next request: {exc!r}"
        return exchange


def _send_body(sock: socket.socket, path: str, size: int, chunked: bool, stop_at: int) -> RawExchange:
    exchange = RawExchange(0, None, b"", b"")
    pieces = (piece for piece in _chunks(path, size) if piece)  # an empty chunk would end the body
    pending = b""
    while exchange.sent < stop_at or pending:
        readable, writable, _ = select.select([sock], [sock], [], 15)
        if readable:
            try:
                data = sock.recv(65536)
            except OSError as exc:
                exchange.error = f"receive: {exc!r}"
                return exchange
            if not data:
                exchange.error = "closed"
                return exchange
            exchange.answer += data
        if writable:
            if not pending:
                piece = next(pieces)[: stop_at - exchange.sent]
                exchange.sent += len(piece)
                pending = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
            try:
                pending = pending[sock.send(pending) :]
            except OSError as exc:
                exchange.error = f"send: {exc!r}"
                return exchange
    if chunked and stop_at == size:
        sock.sendall(b"0\r\n\r\n")
    return exchange


def _read_answer(sock: socket.socket, received: bytes) -> bytes:
    """The rest of one answer (its Content-Length says where it ends)."""
    answer = received
    while True:
        head, _, body = answer.partition(b"\r\n\r\n")
        lengths = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
        if lengths and len(body) >= int(lengths[0].split(b":")[1]):
            return answer[len(received) :]
        data = sock.recv(65536)
        if not data:
            return answer[len(received) :]
        answer += data


def _error_body(answer: bytes) -> dict[str, object]:
    body: dict[str, object] = json.loads(answer.partition(b"\r\n\r\n")[2])
    return body


# --- the service reads an over-limit body within the bound, and the client reads its 413 --------


@pytest.mark.parametrize("path", list(LIMITS))
@pytest.mark.parametrize("times", [pytest.param(1.01, id="just-over"), pytest.param(DRAIN_FACTOR, id="4x")])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_over_limit_body_within_the_bound_is_read_to_its_end_and_answered_413(
    ingest: Service, api_key: ApiKey, path: str, times: float, chunked: bool
) -> None:
    """Without the drain the service closed the connection while the client was still
    writing: its writes failed with a reset (EPIPE) and the connection was gone."""
    size = int(LIMITS[path] * times)
    exchange = _raw_post(ingest.url, path, api_key, size, chunked=chunked)
    assert exchange.error is None, (exchange.error, exchange.sent, exchange.answer[:200])
    assert exchange.sent == size
    assert exchange.answer.startswith(b"HTTP/1.1 413"), exchange.answer[:200]
    error = _error_body(exchange.answer)
    assert error["status"] == 413
    assert error["error_code"] == "PAYLOAD_TOO_LARGE"
    # Nothing was left unread: the connection is still open, for the next request.
    assert exchange.next_answer.startswith(b"HTTP/1.1 200"), exchange.next_answer[:200]


# --- past the bound the service reads no further --------------------------------------------------


@pytest.mark.parametrize("path", list(LIMITS))
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_past_the_bound_is_answered_413_without_being_read(
    ingest: Service, api_key: ApiKey, path: str, chunked: bool
) -> None:
    """A hostile sender costs the service at most the bound in reads: past it (at once, from
    a Content-Length) the service answers and closes, and the client's writes fail."""
    size = 100 * MIB
    exchange = _raw_post(ingest.url, path, api_key, size, chunked=chunked)
    assert exchange.error is not None, "the service read the whole body"
    assert exchange.sent < DRAIN_FACTOR * LIMITS[path] + BUFFERED, exchange.sent
    assert exchange.answer.startswith(b"HTTP/1.1 413"), exchange.answer[:200]


def test_an_over_limit_body_that_stalls_is_answered_413_within_the_body_deadline(stack: Stack, api_key: ApiKey) -> None:
    """Dropping the rest of a body takes no longer than reading one: the same deadline."""
    limited = start_service(stack, "ingest", {"TRIGGERS_BODY_TIMEOUT_S": "1"})
    try:
        limit = LIMITS["/events"]
        started = time.monotonic()
        exchange = _raw_post(limited.url, "/events", api_key, 2 * limit, chunked=False, stop_at=limit + limit // 2)
        # The answer came while the socket was open and the client still owed half a MiB.
        assert exchange.answer.startswith(b"HTTP/1.1 413"), (exchange.error, exchange.answer[:200])
        assert time.monotonic() - started < 5.0
        assert _error_body(exchange.answer)["error_code"] == "PAYLOAD_TOO_LARGE"
    finally:
        processes.stop([limited.process])


# --- every client: 413, and nothing stored ---------------------------------------------------------


@pytest.mark.parametrize("path", list(LIMITS))
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_httpx_gets_413_for_an_oversized_body_and_nothing_is_stored(
    http: httpx.Client, ingest: Service, inbox: Service, writer: Service, api_key: ApiKey, path: str, chunked: bool
) -> None:
    for times in (1.01, 4, 20):
        size = int(LIMITS[path] * times)
        content = _chunks(path, size) if chunked else _whole(path, size)
        headers = {**api_key.headers, "Content-Type": "application/json"}
        response = http.post(f"{ingest.url}{path}", content=content, headers=headers)
        assert response.status_code == 413, (times, response.text)
        assert response.json()["error_code"] == "PAYLOAD_TOO_LARGE"
        assert response.json()["correlation_id"] == response.headers["x-request-id"]
    assert settled_inbox(http, ingest, inbox, api_key) == {}


class CountingTransport(httpx.HTTPTransport):
    """The client's transport, counting the attempts that reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return super().handle_request(request)


@pytest.mark.parametrize("times", SIZES)
def test_triggers_client_raises_413_after_one_attempt_and_nothing_is_stored(
    http: httpx.Client, ingest: Service, inbox: Service, writer: Service, api_key: ApiKey, times: float
) -> None:
    """Not ConnectionFailed after four attempts with the same idempotency keys: the service
    said what happened, and asking again would get the same answer."""
    batch_events = int(LIMITS["/events/batch"] * times) // (250 * 1024) + 1
    one_payload = int(LIMITS["/events"] * times)
    sends: list[Callable[[TriggersClient], object]] = [
        lambda client: client.send_batch([{"event_type": "big", "payload": {"p": "x" * 250 * 1024}}] * batch_events),
        lambda client: client.send("big", {"p": "x" * one_payload}),
    ]
    for send in sends:
        transport = CountingTransport()
        with (
            TriggersClient(api_key.key, ingest_url=ingest.url, inbox_url=inbox.url, transport=transport) as client,
            pytest.raises(ValidationFailed) as refused,
        ):
            send(client)
        assert refused.value.status == 413
        assert refused.value.error_code == "PAYLOAD_TOO_LARGE"
        assert transport.attempts == 1
    assert settled_inbox(http, ingest, inbox, api_key) == {}


# 250 KiB events: 21 are just over the batch limit, 80 just within the bound (4 times it).
@pytest.mark.parametrize("events", [pytest.param(21, id="just-over"), pytest.param(80, id="4x")])
def test_triggers_client_behind_a_forwarding_proxy_raises_413_after_one_attempt(
    http: httpx.Client, ingest: Service, inbox: Service, writer: Service, api_key: ApiKey, events: int
) -> None:
    """Through a proxy that forwards the body with http.client (tests/client/scripted_server.py),
    a client that stops at its write error, as some proxies do: when the service reset the
    connection mid-body the proxy answered nothing, and triggers_client retried the batch
    three times and raised ConnectionFailed. Within the bound the proxy now relays the 413
    (past it the service closes at once, and such a proxy still answers nothing)."""
    with (
        scripted_server(upstream=ingest.url) as proxy,
        TriggersClient(api_key.key, ingest_url=url_of(proxy), inbox_url=inbox.url) as client,
        pytest.raises(ValidationFailed) as refused,
    ):
        client.send_batch([{"event_type": "big", "payload": {"p": "x" * 250 * 1024}}] * events)
    assert refused.value.status == 413
    assert refused.value.error_code == "PAYLOAD_TOO_LARGE"
    assert len(proxy.seen) == 1
    limit = LIMITS["/events/batch"]
    assert limit < len(proxy.seen[0].body) <= DRAIN_FACTOR * limit
    assert settled_inbox(http, ingest, inbox, api_key) == {}
