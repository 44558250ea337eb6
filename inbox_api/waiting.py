"""Long polling: requests that wait for events (``wait_s``), and the one poller per process
that wakes them.

A request that found nothing to return registers a waiter on what it waits for: a count
(a partition's, or a partition and type's for a filtered page), and whether it claims. One
task per process polls, every ``TRIGGERS_INBOX_WAIT_POLL_MS``, the counts of every watched
counter at once: one BatchGetItem per 100 counter shards (eventually consistent, half a read
unit each), however many requests wait on each, and wakes the waiters of those with events
available; for claimers of a partition with leases out and nothing available, one Query of
the ``held`` index tells whether a lease ended. The poller reads storage, not process state:
a waiter on any instance wakes for an event stored through any other.

A counter spreads over shards when its writes contend (``shared.storage.counters``): the
poller reads the shards it knows, found by one consistent Query when it starts watching, again
when what it reads of them moves, and every ``REDISCOVER_S``; and shard 0, where every
counter starts. It wakes every page waiter of a count with events, and as many claim waiters
(the longest waiting first) as there are events for them: the others would only lose. A woken request reads
as it did first (its page, or its claim); if that comes back empty (another claimer was
faster, a page's settle margin has not passed, or a shard the poller did not know made the
sum wrong) it waits again, for the rest of its ``wait_s``, and the poller reads that counter
with a Query again. A page waits again not before ``quiet_s`` (its settle margin) rather than
reading at every poll. The deadline, the client going away (ASGI ``http.disconnect``) or the
service stopping ends a wait.

Cost, per instance where someone waits: half a read unit per watched counter shard per poll
(at the default 250 ms, 2 read units/s per consumer being waited on, whatever the number of
waiting requests), 100 counters per request. Waiting requests are capped per key and
instance (``TRIGGERS_INBOX_WAITS_PER_KEY``): beyond it, 429.
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
from shared.storage.counters import ShardItem

log = structlog.get_logger()

_CONCURRENT_READS = 32  # the poller's Queries in flight at once
# How often the poller finds a watched counter's shards again (a Query), besides when what
# it reads of them moved and after a wake that found nothing: a shard made meanwhile is read
# from then on. As long as the longest wait: a waiter sees at least one such read.
REDISCOVER_S = 20.0


@dataclass(frozen=True, slots=True)
class Watch:
    """What a waiter waits for: a count (``counter``) of a partition, and whether it claims."""

    counter: str
    partition: str
    claims: bool


@dataclass
class _Watched:
    waiters: dict[asyncio.Future[None], None] = field(default_factory=dict)  # in arrival order
    shards: frozenset[int] | None = None  # the counter's shards as last found (None: find them)
    found_at: float = 0.0
    seen: tuple[int, int] | None = None  # the sums the last poll read


@dataclass(frozen=True, slots=True)
class Reads:
    """What the poller reads of storage (inbox_api/app.py wires them to DynamoDB)."""

    shards: Callable[[str], Awaitable[list[ShardItem]]]  # every shard of a counter, consistently
    peek: Callable[[list[tuple[str, int]]], Awaitable[list[ShardItem]]]  # these shards, eventually
    lease_ended: Callable[[str], Awaitable[bool]]  # has a lease of this partition ended?


class Doorbell:
    def __init__(self, reads: Reads, poll_s: float, per_key: int) -> None:
        self._reads = reads
        self._poll_s = poll_s
        self._per_key = per_key
        self._watched: dict[Watch, _Watched] = {}
        self._waiting: Counter[str] = Counter()  # key id -> requests waiting
        self._sessions: set[asyncio.Event] = set()  # each waiting request's "it is over"
        self._closed = False
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._poller = asyncio.create_task(self._poll(), name="long-poll")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for gone in self._sessions:  # the service stops: every wait ends now, quiet ones too
            gone.set()
        self._closed = True

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
        if self._closed:
            gone.set()
        self._sessions.add(gone)
        listener = asyncio.create_task(_disconnected(receive, gone), name="long-poll-disconnect")
        try:
            yield Waits(self, gone)
        finally:
            listener.cancel()
            self._sessions.discard(gone)
            self._waiting[key_id] -= 1
            if not self._waiting[key_id]:
                del self._waiting[key_id]

    def recheck(self, watch: Watch) -> None:
        """A waiter woke for nothing: read the counter's shards again at the next poll."""
        if (watched := self._watched.get(watch)) is not None:
            watched.shards = None

    async def ring(self, watch: Watch, timeout_s: float, gone: asyncio.Event) -> bool:
        """Until the poller rings for ``watch`` (True), or the timeout or the client's leaving (False)."""
        if timeout_s <= 0 or gone.is_set():
            return False
        bell: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        watched = self._watched.setdefault(watch, _Watched())
        watched.waiters[bell] = None
        leaving: asyncio.Future[Any] = asyncio.ensure_future(gone.wait())
        try:
            done, _ = await asyncio.wait((bell, leaving), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            return bell in done and not bell.cancelled()
        finally:
            leaving.cancel()
            bell.cancel()
            watched.waiters.pop(bell, None)
            if not watched.waiters and self._watched.get(watch) is watched:
                del self._watched[watch]

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            if self._watched:
                try:
                    await self._check(list(self._watched.items()))
                except Exception as exc:  # noqa: BLE001 - a failed poll delays waiters, it must not end the poller
                    log.warning("long_poll_read_failed", error=type(exc).__name__)

    async def _check(self, watches: list[tuple[Watch, _Watched]]) -> None:
        """Read every watched counter and ring for those with events (or an ended lease).
        A read that fails costs its own watch one poll, never another's."""
        now = time.monotonic()
        stale = [(w, x) for w, x in watches if x.shards is None or now - x.found_at >= REDISCOVER_S]
        finding = {w for w, _ in stale}
        known = [(w, x) for w, x in watches if w not in finding]
        limit = asyncio.Semaphore(_CONCURRENT_READS)
        found = await asyncio.gather(*(self._find(w, x, limit) for w, x in stale), return_exceptions=True)
        totals = {w: t for (w, _), t in zip(stale, found, strict=True) if not isinstance(t, BaseException)}
        keys = sorted({(w.counter, s) for w, x in known for s in (x.shards or frozenset()) | {0}})
        sums = _sums(await self._reads.peek(keys)) if keys else {}
        for watch, watched in known:
            totals[watch] = sums.get(watch.counter, (0, 0))
            if watched.seen is not None and totals[watch] != watched.seen:
                watched.shards = None  # it moved: find its shards again, a new one may hold the change
            watched.seen = totals[watch]
        await asyncio.gather(*(self._ring(w, x, totals[w], limit) for w, x in watches if w in totals))

    async def _ring(self, watch: Watch, watched: _Watched, total: tuple[int, int], limit: asyncio.Semaphore) -> None:
        """Wake the waiters the events can serve: every page waiter; a claim waiter per
        available event (or per lease out, once one ended): the others would only lose."""
        available, leased = total
        wake = available
        if watch.claims and available <= 0 and leased > 0:
            try:
                async with limit:
                    wake = leased if await self._reads.lease_ended(watch.partition) else 0
            except Exception as exc:  # noqa: BLE001 - this watch waits for the next poll
                log.warning("long_poll_read_failed", error=type(exc).__name__)
                return
        if wake <= 0:
            return
        waiting = [bell for bell in watched.waiters if not bell.done()]
        for bell in waiting if not watch.claims else waiting[:wake]:
            bell.set_result(None)

    async def _find(self, watch: Watch, watched: _Watched, limit: asyncio.Semaphore) -> tuple[int, int]:
        async with limit:
            items = await self._reads.shards(watch.counter)
        watched.shards, watched.found_at = frozenset(i.shard_index.N for i in items), time.monotonic()
        watched.seen = sum(i.available for i in items), sum(i.leased for i in items)
        return watched.seen


def _sums(items: list[ShardItem]) -> dict[str, tuple[int, int]]:
    """Available and leased per counter, over the shards read."""
    sums: dict[str, tuple[int, int]] = {}
    for item in items:
        available, leased = sums.get(item.counter_id.S, (0, 0))
        sums[item.counter_id.S] = (available + item.available, leased + item.leased)
    return sums


@dataclass(frozen=True, slots=True)
class Waits:
    """One request's side of the doorbell (``Doorbell.session``)."""

    _bell: Doorbell
    _gone: asyncio.Event
    woken: list[int] = field(default_factory=lambda: [0])  # waits so far (a cell: the class is frozen)

    async def until(self, watch: Watch, deadline: float, quiet_s: float = 0.0) -> bool:
        """Wait for events for ``watch`` until the monotonic ``deadline``, not before
        ``quiet_s`` has passed; False when the time is up or the client went away. Every call
        after the first means the last wake found nothing: the counter is read again."""
        if self.woken[0]:
            self._bell.recheck(watch)
        self.woken[0] += 1
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
