"""The admin listener of an HTTP service: /metrics, /ready and /status on a port of its own.

The public listener (the one the load balancer routes) serves the API and /status only;
metrics and readiness tell an outsider which dependencies are down and how busy the
service is, so they are answered here, on ``TRIGGERS_ADMIN_PORT``, which the load balancer
reaches only for its health checks and nothing routes to. The server runs on the service
worker's own event loop, so /ready checks the same AWS clients the requests use.

A minimal HTTP/1.x server: read one request head (bounded in size and time), answer, close
the connection. Scrapers and health checks send nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger()

MAX_HEAD_BYTES = 8 * 1024
HEAD_TIMEOUT_S = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[], Awaitable[Answer]]


class AdminServer:
    def __init__(self, routes: dict[str, Route]) -> None:
        self._routes = routes
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        # reuse_port: with several server workers each binds the port and the kernel spreads
        # scrapes over them (each worker has its own registry: run one worker per container).
        self._server = await asyncio.start_server(self._handle, host, port, reuse_port=True, limit=MAX_HEAD_BYTES)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = time.perf_counter()
        method = path = ""
        status = 400
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            method, path = _request_line(head)
            answer = await self._answer(method, path)
            status = answer.status
            writer.write(_encode(answer, include_body=method != "HEAD"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # a head that is too slow, too long or not HTTP: the connection just closes
        finally:
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
            return Answer(404, b'{"status":404,"error_code":"NOT_FOUND","message":"No such admin path."}')
        if method not in ("GET", "HEAD"):
            return Answer(405, b'{"status":405,"error_code":"METHOD_NOT_ALLOWED","message":"GET only."}')
        return await route()


def _request_line(head: bytes) -> tuple[str, str]:
    """Method and path (query dropped) of a request head; ValueError if it is not HTTP/1."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, target, version = line.split(" ")
    if not version.startswith("HTTP/1."):
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
