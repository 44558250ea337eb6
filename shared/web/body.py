"""Reading request bodies: size limits before parsing, and a deadline for slow senders.

A client that sends headers and then trickles its body (or nothing) would hold a request
open for as long as it likes. Every body read is registered with one ``BodyDeadlines``
sweeper, which fails reads older than the deadline with 408 once a second. One timer for
all reads: ``asyncio.timeout`` per request costs about 8 µs here, the register/unregister
pair well under one.

Both HTTP services read their bodies through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from shared.errors import PayloadTooLarge, RequestTimeout, ValidationError

log = structlog.get_logger()

SWEEP_INTERVAL_S = 1.0  # how late past its deadline a stalled read may be failed


class BodyDeadlines:
    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._reading: dict[asyncio.Task[Any], float] = {}  # task -> when its read started
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="body-deadlines")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def read(self, receive: Callable[[], Awaitable[Any]], declared: str | None, limit: int) -> bytes:
        """The whole body; 413 from Content-Length or as soon as the bytes pass ``limit``; 408
        when it has not arrived within the deadline."""
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        task = asyncio.current_task()
        assert task is not None  # a request handler always runs in a task
        self._reading[task] = time.monotonic()
        try:
            return await _read_all(receive, limit)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            task.uncancel()
            raise RequestTimeout(f"The body did not arrive within {self._timeout_s:g} s.") from None
        finally:
            del self._reading[task]
            self._expired.discard(task)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            cutoff = time.monotonic() - self._timeout_s
            for task, started in list(self._reading.items()):
                if started < cutoff and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()
            if self._expired:
                log.warning("slow_bodies_timed_out", count=len(self._expired))


async def _read_all(receive: Callable[[], Awaitable[Any]], limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ValidationError("The client disconnected before sending the whole body.")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The body exceeds {limit} bytes.")
