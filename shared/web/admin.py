"""The admin listener of an HTTP service: /metrics, /ready and /status on a port of its own.

The public listener (the one the load balancer routes) serves the API and /status only;
metrics and readiness tell an outsider which dependencies are down and how busy the
service is, so they are answered here, on ``TRIGGERS_ADMIN_HOST``:``TRIGGERS_ADMIN_PORT``,
which the load balancer reaches only for its health checks and nothing routes to. The
server runs on the service worker's own event loop, so /ready checks the same AWS clients
the requests use.

A minimal HTTP/1.x server: read one request head (bounded in size and time), answer, close
the connection. Scrapers and health checks send nothing else. It shares the worker's file
descriptors and loop with the public listener, so it holds at most ``MAX_CONNECTIONS`` at
once and closes any beyond at once: idle connections cannot starve the API.

Its routes are declared like the public ones (shared/web/routes.py: ``Route``, here with
handlers that take nothing and give an ``Answer``); its few error answers come from the
table of shared/errors.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec
import structlog

from shared.errors import BAD_REQUEST, METHOD_NOT_ALLOWED, NOT_FOUND, ErrorAnswer
from shared.web.routes import Route

log = structlog.get_logger()

MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT_S = 2.0  # a scraper or health check sends its head at once
WRITE_TIMEOUT_S = 5.0  # a client that does not read its answer does not hold a slot longer
MAX_CONNECTIONS = 32
NO_ANSWER = 0  # the status logged for a connection closed without an answer
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


AdminHandler = Callable[[], Awaitable[Answer]]


class _Error(msgspec.Struct):
    status: int
    error_code: str
    message: str


def _error(answer: ErrorAnswer, message: str) -> Answer:
    return Answer(answer.status, msgspec.json.encode(_Error(answer.status, answer.code, message)))


_BAD_REQUEST = _error(BAD_REQUEST, "Not an HTTP/1 request head.")
_NOT_FOUND = _error(NOT_FOUND, "No such admin path.")


class AdminServer:
    def __init__(
        self, routes: Sequence[Route] | Mapping[str, AdminHandler], max_connections: int = MAX_CONNECTIONS
    ) -> None:
        """``routes``: their declarations, or (tests) handlers by path, each answering GET."""
        if isinstance(routes, Mapping):
            routes = [Route("get", path, "", handler, 200) for path, handler in routes.items()]
        self._routes = {route.path: route for route in routes}
        self._server: asyncio.Server | None = None
        self._max_connections = max_connections
        self._open = 0

    @property
    def port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        """Listen; OSError (EADDRINUSE...) if the port cannot be had. No SO_REUSEPORT: a second
        process on the same port (another service, a stale one) must fail, not share it."""
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD_BYTES)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= self._max_connections:
            # Closed unanswered and unlogged: a flood of connections would be a flood of lines.
            writer.transport.abort()
            return
        self._open += 1
        try:
            await self._serve_one(reader, writer)
        finally:
            self._open -= 1

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.perf_counter()
        method = path = ""
        status = NO_ANSWER
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            try:
                method, path = _request_line(head)
            except ValueError:
                answer = _BAD_REQUEST
            else:
                answer = await self._answer(method, path)
            status = await _send(writer, answer, include_body=method != "HEAD")
        except asyncio.LimitOverrunError:  # a head over MAX_HEAD_BYTES
            status = await _send(writer, _BAD_REQUEST, include_body=True)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # too slow, or the client went away: nothing to answer
        finally:
            if status == NO_ANSWER:
                writer.transport.abort()  # nothing more to send: no lingering close
            else:
                writer.close()
            log.info(
                "admin_request",
                method=method[:16],
                path=path[:100],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )

    async def _answer(self, method: str, path: str) -> Answer:
        route = self._routes.get(path)
        if route is None:
            return _NOT_FOUND
        allowed = route.method.upper()
        if method != allowed and not (method == "HEAD" and allowed == "GET"):
            return _error(METHOD_NOT_ALLOWED, f"{allowed} only.")
        answer: Answer = await route.handler()
        return answer


async def _send(writer: asyncio.StreamWriter, answer: Answer, *, include_body: bool) -> int:
    """Write ``answer``; its status, or NO_ANSWER if the client did not take it in time."""
    writer.write(_encode(answer, include_body=include_body))
    try:
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)
    except (TimeoutError, ConnectionError):
        return NO_ANSWER
    return answer.status


def _request_line(head: bytes) -> tuple[str, str]:
    """Method and path (query dropped) of a request head; ValueError if it is not HTTP/1."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, target, version = line.split(" ")
    if not version.startswith("HTTP/1.") or not method.isalpha():
        raise ValueError("not HTTP/1")
    return method, target.split("?", 1)[0]


def _encode(answer: Answer, *, include_body: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Unknown')}",
        f"Content-Type: {answer.content_type}",
        f"Content-Length: {len(answer.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in answer.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (answer.body if include_body else b"")


class SharedCheck:
    """One readiness check at a time, its outcome reused for ``ttl_s``.

    /ready is unauthenticated and each check is an AWS call: without this, every health
    check, scrape or flood of /ready would be one more call, from the same connection pool
    the API's requests use.
    """

    def __init__(
        self, check: Callable[[], Awaitable[Answer]], ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._check = check
        self._ttl_s = ttl_s
        self._clock = clock
        self._last: tuple[float, Answer] | None = None
        self._running: asyncio.Future[Answer] | None = None

    async def __call__(self) -> Answer:
        if self._last is not None and self._clock() - self._last[0] < self._ttl_s:
            return self._last[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._running)

    async def _run(self) -> Answer:
        try:
            answer = await self._check()
            self._last = (self._clock(), answer)
            return answer
        finally:
            self._running = None
