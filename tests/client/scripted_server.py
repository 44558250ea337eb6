"""A local HTTP server that plays a script: answer this, drop the connection, stall, forward.

For the client's retry tests: it records every request it read (headers and body), so a test
sees what each attempt carried. ``Forward`` relays to a real service (``upstream``), so a test
can drop the connection after the service has taken the request, as a lost answer would; it
records the upstream's answers too (``forwarded``), those the client never got included.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Drop:
    """Close the connection without an answer; with ``forward``, after the upstream took it."""

    forward: bool = False


@dataclass(frozen=True)
class Stall:
    """Say nothing for ``seconds``, then close: the client's read timeout fires first."""

    seconds: float


@dataclass(frozen=True)
class Forward:
    pass


Action = Answer | Drop | Stall | Forward


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    body: bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    script: list[Action]
    then: Action
    upstream: str | None
    seen: list[Seen]
    forwarded: list[Answer]  # the upstream's answers, in order, lost ones (Drop(forward=True)) included
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the client's pool reuses connections, as in life
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        del format, args  # quiet: pytest shows the test's own output

    def do_GET(self) -> None:
        self._play()

    def do_POST(self) -> None:
        self._play()

    def do_DELETE(self) -> None:
        self._play()

    def do_PATCH(self) -> None:
        self._play()

    def _play(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        with self.server.lock:
            self.server.seen.append(seen)
            action = self.server.script.pop(0) if self.server.script else self.server.then
        if isinstance(action, Answer):
            self._answer(action)
        elif isinstance(action, Forward):
            self._answer(self._forward(seen))
        else:
            if isinstance(action, Drop) and action.forward:
                self._forward(seen)
            elif isinstance(action, Stall):
                time.sleep(action.seconds)
            self.close_connection = True

    def _answer(self, answer: Answer) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    def _forward(self, seen: Seen) -> Answer:
        assert self.server.upstream is not None, "Forward needs an upstream"
        target = urlsplit(self.server.upstream)
        connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=10)
        try:
            headers = {k: v for k, v in seen.headers.items() if k not in HOP_BY_HOP}
            connection.request(seen.method, seen.path, body=seen.body or None, headers=headers)
            response = connection.getresponse()
            kept = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
            answer = Answer(response.status, response.read(), kept)
        finally:
            connection.close()
        with self.server.lock:
            self.server.forwarded.append(answer)
        return answer


@contextmanager
def scripted_server(*script: Action, then: Action | None = None, upstream: str | None = None) -> Iterator[_Server]:
    """Serve ``script`` (one action per request, in order), then ``then`` for every request after.

    ``then`` defaults to Forward with an upstream, else to a 599 no client retries.
    """
    server = _Server(("127.0.0.1", 0), _Handler)
    server.script = list(script)
    server.then = then or (Forward() if upstream else Answer(599))
    server.upstream = upstream
    server.seen = []
    server.forwarded = []
    server.lock = threading.Lock()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url_of(server: _Server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}"
