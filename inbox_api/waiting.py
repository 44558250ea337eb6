"""Long polling: requests that wait for events (``wait_s``), and the one poller per process
that wakes them.

A request that found nothing to return registers a waiter on what it waits for: a count
(a partition's, or a partition and type's for a filtered page), and whether it claims. One
task per process polls, every ``TRIGGERS_INBOX_WAIT_POLL_MS``, each watched count (one
consistent Query, however many requests wait on it) and wakes its waiters when events are
available; for claimers of a partition with leases out and nothing available, one more
Query of the ``held`` index tells whether a lease ended. The poller reads storage, not
process state: a waiter on any instance wakes for an event stored through any other.

A woken request reads as it did first (its page, or its claim). If that comes back empty
(another claimer was faster; a page's settle margin has not passed yet), it waits again for
the rest of its ``wait_s``, not before ``quiet_s`` (a page waits out the settle margin
rather than reading at every poll). The deadline, the client going away (ASGI
``http.disconnect``) or the service stopping ends a wait.

Cost: a watched count is one Query (0.5 RCU) per poll, plus one for claimers with leases
out; at the default 250 ms, 4 reads/s per consumer being waited on, per instance where
someone waits, whatever the number of waiting requests. Waiting requests are capped per key
and instance (``TRIGGERS_INBOX_WAITS_PER_KEY``): beyond it, 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from shared.errors import TooManyWaits
from shared.storage.counters import Counts

log = structlog.get_logger()

_CONCURRENT_READS = 32  # the poller's reads in flight at once


@dataclass(frozen=True, slots=True)
class Watch:
    """What a waiter waits for: a count (``counter``) of a partition, and whether it claims."""

    counter: str
    partition: str
    claims: bool


@dataclass
class _Watched:
    waiters: set[asyncio.Future[None]] = field(default_factory=set)


class Doorbell:
    def __init__(
        self,
        counts: Callable[[str], Awaitable[Counts]],
        lease_ended: Callable[[str], Awaitable[bool]],
        poll_s: float,
        per_key: int,
    ) -> None:
        self._counts = counts
        self._lease_ended = lease_ended
        self._poll_s = poll_s
        self._per_key = per_key
        self._watched: dict[Watch, _Watched] = {}
        self._waiting: Counter[str] = Counter()  # key id -> requests waiting
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._poller = asyncio.create_task(self._poll(), name="long-poll")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for watched in self._watched.values():  # the service stops: every wait ends now
            for waiter in watched.waiters:
                waiter.cancel()

    @property
    def waiting(self) -> int:
        return sum(self._waiting.values())

    @contextlib.asynccontextmanager
    async def session(self, key_id: str, receive: Callable[[], Awaitable[Any]]) -> AsyncIterator[Waits]:
        """One request's waits: counted against its key (``TooManyWaits`` beyond the cap), and
        ended when its client goes away."""
        if self._waiting[key_id] >= self._per_key:
            raise TooManyWaits(self._per_key)
        self._waiting[key_id] += 1
        gone = asyncio.Event()
        listener = asyncio.create_task(_disconnected(receive, gone), name="long-poll-disconnect")
        try:
            yield Waits(self, gone)
        finally:
            listener.cancel()
            self._waiting[key_id] -= 1
            if not self._waiting[key_id]:
                del self._waiting[key_id]

    async def ring(self, watch: Watch, timeout_s: float, gone: asyncio.Event) -> bool:
        """Until the poller rings for ``watch`` (True), or the timeout or the client's leaving (False)."""
        if timeout_s <= 0 or gone.is_set():
            return False
        bell: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        watched = self._watched.setdefault(watch, _Watched())
        watched.waiters.add(bell)
        leaving: asyncio.Future[Any] = asyncio.ensure_future(gone.wait())
        try:
            done, _ = await asyncio.wait((bell, leaving), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            return bell in done and not bell.cancelled()
        finally:
            leaving.cancel()
            bell.cancel()
            watched.waiters.discard(bell)
            if not watched.waiters and self._watched.get(watch) is watched:
                del self._watched[watch]

    async def _poll(self) -> None:
        limit = asyncio.Semaphore(_CONCURRENT_READS)
        while True:
            await asyncio.sleep(self._poll_s)
            watches = list(self._watched.items())
            if watches:
                await asyncio.gather(*(self._check(watch, watched, limit) for watch, watched in watches))

    async def _check(self, watch: Watch, watched: _Watched, limit: asyncio.Semaphore) -> None:
        async with limit:
            try:
                counts = await self._counts(watch.counter)
                ready = counts.undelivered > 0
                if not ready and watch.claims and counts.in_flight > 0:
                    ready = await self._lease_ended(watch.partition)
            except Exception as exc:  # noqa: BLE001 - a failed poll delays waiters, it must not end the poller
                log.warning("long_poll_read_failed", error=type(exc).__name__)
                return
        if ready:
            for bell in list(watched.waiters):
                if not bell.done():
                    bell.set_result(None)


@dataclass(frozen=True, slots=True)
class Waits:
    """One request's side of the doorbell (``Doorbell.session``)."""

    _bell: Doorbell
    _gone: asyncio.Event

    async def until(self, watch: Watch, deadline: float, quiet_s: float = 0.0) -> bool:
        """Wait for events for ``watch`` until the monotonic ``deadline``, not before
        ``quiet_s`` has passed; False when the time is up or the client went away."""
        if quiet_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gone.wait(), timeout=min(quiet_s, max(0.0, deadline - time.monotonic())))
        return await self._bell.ring(watch, deadline - time.monotonic(), self._gone)

    @property
    def gone(self) -> bool:
        return self._gone.is_set()


async def _disconnected(receive: Callable[[], Awaitable[Any]], gone: asyncio.Event) -> None:
    """Set ``gone`` once the server says the client disconnected."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            gone.set()
            return
