"""Reading request bodies: size limits before parsing, and a deadline for slow senders.

A client that sends headers and then trickles its body (or nothing) would hold a request
open for as long as it likes. Every body read is registered with one ``BodyDeadlines``
sweeper, which fails reads older than the deadline with 408 once a second. One timer for
all reads: ``asyncio.timeout`` per request costs about 8 µs here, the register/unregister
pair well under one.

A body over its limit is read to its end and dropped before the 413 goes out, as long as it
is within ``DRAIN_FACTOR`` times the limit and the same deadline. The server (granian, that
is hyper) closes a connection whose request body the app left unread, and closing a socket
with unread bytes makes the kernel reset it: the 413 may then be lost in flight, and a client
still writing its body sees only a reset (EPIPE, ECONNRESET) and no answer. httpx happens to
read the answer after a failed write on Linux; a proxy forwarding the body, or a client that
stops at the write error, reports "connection reset" and retries as if the service were down.
Read to its end, the body leaves nothing unread: the connection stays open and the 413 is
read by every client. Past the bound the connection is closed as before: a hostile sender
costs at most ``DRAIN_FACTOR`` times the limit in reads, within the deadline.

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
# How much of an over-limit body is read (and dropped) so that its 413 is read: 4 times the
# limit, the whole body included (2 MiB for POST /events, 20 MiB for a batch).
DRAIN_FACTOR = 4


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

    async def read(
        self, receive: Callable[[], Awaitable[Any]], declared: str | None, limit: int, expect: str | None = None
    ) -> bytes:
        """The whole body; 413 when Content-Length or the bytes pass ``limit`` (once the rest
        is dropped, up to the bound: the module's docstring); 408 when it has not arrived
        within the deadline. ``expect``: the Expect header."""
        if declared is not None and declared.isdigit() and int(declared) > limit:
            # A client waiting for "100 Continue" has sent nothing: reading would invite the body.
            more = int(declared) <= limit * DRAIN_FACTOR and expect is None
            raise await self._refuse(receive, 0, more, limit, time.monotonic())
        task = asyncio.current_task()
        assert task is not None  # a request handler always runs in a task
        self._reading[task] = started = time.monotonic()
        try:
            return await _read_all(receive, limit)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise
            task.uncancel()
            raise RequestTimeout(f"The body did not arrive within {self._timeout_s:g} s.") from None
        except _OverLimit as over:
            received = over.received
        finally:
            del self._reading[task]
            self._expired.discard(task)
        raise await self._refuse(receive, received, True, limit, started)

    async def _refuse(
        self, receive: Callable[[], Awaitable[Any]], received: int, more: bool, limit: int, started: float
    ) -> PayloadTooLarge:
        """The 413 to raise, after dropping the rest of the body (``more``) up to the bound, within the
        deadline of the read that began at ``started``: past either, the server closes."""
        task = asyncio.current_task()
        assert task is not None
        if more:
            self._reading[task] = started
            try:
                await _discard(receive, received, limit * DRAIN_FACTOR)
            except asyncio.CancelledError:
                if task not in self._expired:
                    raise
                task.uncancel()  # too large all the same: the 413 says so, not a 408
            finally:
                del self._reading[task]
                self._expired.discard(task)
        return _too_large(limit)

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
            if not message.get("more_body", False):
                raise _too_large(limit)  # all of it read: nothing to drop
            raise _OverLimit(size)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _OverLimit(Exception):
    """The bytes passed the limit with more to come: ``BodyDeadlines`` drops the rest, then 413."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


async def _discard(receive: Callable[[], Awaitable[Any]], received: int, bound: int) -> None:
    """Read and drop the body until its end, the client's disconnect, or ``bound`` bytes in all."""
    while received <= bound:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The body exceeds {limit} bytes.")
