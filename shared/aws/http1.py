"""A small keep-alive HTTP/1.1 client: POST bytes to one endpoint, get the status and body back.

It carries the lean AWS clients' calls (shared/aws/lean.py), which need nothing more.
Through aiohttp a small call cost about 0.2 ms of CPU (request and response objects, header
multidicts, stream readers, per-read timers); here about 0.12 ms, signing and decoding
included. That counts twice per inbox page, once per edge batch, and in every writer batch.
Here a call is one ``transport.write`` and a parser callback per received chunk: asyncio's
transports (TLS through the ``ssl`` module for real AWS), httptools (llhttp, the parser
uvicorn uses) for the response, chunked bodies included, and a pool of idle connections
reused last-in first-out.

Failures are ``ConnectionError`` (an ``OSError``: refused, reset, closed mid-response, a
malformed answer, an answer larger than the cap: ``AnswerTooLarge``) or ``TimeoutError``; the
connection involved is closed, never reused, so a late answer cannot be read as the next
call's. Retrying is the caller's decision.

An answer's body is capped (``MAX_ANSWER_BYTES``, 64 MiB by default) so that an endpoint that
misbehaves (a wrong URL, a proxy, a fault) cannot make the process buffer without bound. No
answer of the operations the lean clients send comes near it: DynamoDB's largest is
BatchGetItem's 16 MB of item data, SQS's is ReceiveMessage's 10 messages of at most 1 MiB, and
the JSON wire form at most doubles either (escaped quotes and backslashes, base64 binaries are
4/3); 64 MiB is twice that again. The cap is counted as the body arrives, so at most one
received chunk past it is ever held.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

# A connection idle longer than this is closed instead of reused: servers drop idle
# keep-alive connections after a while (aiohttp's default keep-alive is the same 15 s).
IDLE_REUSE_LIMIT_S = 15.0
_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class AnswerTooLarge(ConnectionError):
    """The answer's body passed the pool's cap; the connection was closed without reading on."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection carrying one request at a time."""

    def __init__(self, max_answer_bytes: int) -> None:
        self._max_answer_bytes = max_answer_bytes
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._body: list[bytes] = []
        self._size = 0  # bytes of the current answer's body so far
        self.reusable = False  # a whole response arrived and the server keeps the connection
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._fail(ConnectionError("connection closed before the response was complete"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_answer_bytes:
            self._body = []
            self._fail(
                AnswerTooLarge(f"answer body passed the {self._max_answer_bytes}-byte cap of shared/aws/http1.py")
            )
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        self._stop_timer()
        self.reusable = self._parser.should_keep_alive()
        body, self._body, self._size = b"".join(self._body), [], 0
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), body))

    def send(self, request: bytes, timeout_s: float) -> asyncio.Future[tuple[int, bytes]]:
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        self.reusable = False
        self._size = 0
        self._waiter = loop.create_future()
        self._timer = loop.call_later(timeout_s, self._fail, TimeoutError(f"no response within {timeout_s} s"))
        self._transport.write(request)
        return self._waiter

    def close(self) -> None:
        self.reusable = False
        self._stop_timer()
        if self._transport is not None:
            self._transport.close()

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Http1Pool:
    """Up to ``limit`` keep-alive connections to the endpoint of ``url``, POSTing to its path.

    ``ssl_context``: how https endpoints are verified (default: the system's trust store and
    host name checks, as for real AWS)."""

    def __init__(
        self,
        url: str,
        *,
        limit: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or _DEFAULT_PORTS[parts.scheme]
        self._ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self._max_answer_bytes = max_answer_bytes
        self._request_line = f"POST {parts.path or '/'} HTTP/1.1\r\n".encode()
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._slots = asyncio.BoundedSemaphore(limit)
        self._idle: list[_Connection] = []

    async def post(self, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        """(status, body) of one POST; ``headers`` must include Host."""
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = b"".join((self._request_line, head.encode(), b"content-length: %d\r\n\r\n" % len(body), body))
        async with self._slots:
            connection = self._reuse() or await self._connect()
            try:
                status_and_body = await connection.send(request, self._read_timeout_s)
            except BaseException:
                connection.close()  # cancelled or failed: its answer, if any, belongs to no one
                raise
            if connection.reusable:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()
            return status_and_body

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def _reuse(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < IDLE_REUSE_LIMIT_S:
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout_s):
            _, connection = await loop.create_connection(
                lambda: _Connection(self._max_answer_bytes), self._host, self._port, ssl=self._ssl
            )
        return connection
