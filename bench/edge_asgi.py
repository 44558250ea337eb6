"""CPU of one POST /events through the ingest app's whole ASGI stack, no network, no SQS.

The app is ``ingest_api.app.create_app()`` itself (request context, routing, the route
declaration's authentication wrapper, body, tokens, checks, stamping, encoding), driven by
direct ASGI calls on one event loop: the key is verified once (then a cache hit, as in
steady use) and the batcher is replaced by one that acknowledges at once. What is left is
the edge's own CPU per request, the figure a change to the route wiring must not raise.

Run: python -m bench.edge_asgi [--requests N] [--rounds R]; prints the best round's µs per
request of CPU time (best of rounds: other work on the machine only ever adds time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from ingest_api.app import IngestContext, create_app
from ingest_api.service import IngestService
from shared.keys.authenticator import Authenticator
from shared.keys.model import KeyRecord, KeyStatus, Scope, generate_key, hash_secret
from shared.settings import settings_from_env
from shared.web.body import BodyDeadlines
from shared.web.ratelimit import RateLimiter

BODY = json.dumps({"event_type": "order.created", "payload": {"order_id": 123456, "note": "x" * 860}}).encode()


class _AckingBatcher:
    """Stands in for SqsBatcher: every submission is acknowledged at once."""

    max_event_bytes = 1024 * 1024

    def submit(self, events: list[bytes], owner: str | None = None) -> asyncio.Future[list[bool]]:
        del owner
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        future.set_result([True] * len(events))
        return future


class _OneKeyStore:
    def __init__(self, record: KeyRecord) -> None:
        self._record = record

    async def get(self, key_id: str) -> KeyRecord:
        return self._record

    async def touch(self, key_id: str, used_at: str) -> None:
        return None

    async def create(self, record: KeyRecord) -> None:
        raise NotImplementedError

    async def update(self, key_id: str, **changes: object) -> KeyRecord:
        raise NotImplementedError

    def scan(self) -> AsyncIterator[KeyRecord]:
        raise NotImplementedError


def _app() -> tuple[Any, str]:
    key, parsed = generate_key()
    record = KeyRecord(
        key_id=parsed.key_id,
        account_id="acct-bench",
        secret_hash=hash_secret(parsed.secret, 4),
        scopes=frozenset({Scope.INGEST}),
        status=KeyStatus.ACTIVE,
        rate_limit_per_minute=10**9,
    )
    app = create_app(settings_from_env({"TRIGGERS_LOG_LEVEL": "WARNING"}))
    app.state.ingest = IngestContext(
        clients=None,  # type: ignore[arg-type]  # no AWS call is made
        queue_url="",
        auth=Authenticator(_OneKeyStore(record), ttl_s=3600, max_entries=10),
        limiter=RateLimiter(),
        proxy_hops=0,
        service=IngestService(_AckingBatcher(), max_payload_bytes=256 * 1024),  # type: ignore[arg-type]
        max_body_bytes=512 * 1024,
        bodies=BodyDeadlines(10.0),
    )
    return app, key


def _scope(key: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/events",
        "raw_path": b"/events",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"localhost"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def _one(app: Any, key: str) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(key), receive, send)
    return status


async def _measure(requests: int, rounds: int) -> float:
    app, key = _app()
    assert await _one(app, key) == 202  # the first: bcrypt once, then cache hits
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()  # CPU, not wall: other work on the machine preempts us
        for _ in range(requests):
            await _one(app, key)
        best = min(best, (time.process_time() - started) / requests)
    assert await _one(app, key) == 202
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    micros = asyncio.run(_measure(args.requests, args.rounds))
    print(f"POST /events through the ASGI app: {micros:.1f} µs per request (best of {args.rounds})")


if __name__ == "__main__":
    main()
