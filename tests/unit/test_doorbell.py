"""The long-poll doorbell's own logic, with the storage reads faked (pure logic): what it reads
does not grow with the requests waiting on one consumer, it rings when events are there
(or a lease ended, for claimers), finds a counter's shards again after a wake that found
nothing, caps waits per key, and ends a wait when its client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from inbox_api.waiting import Doorbell, Reads, Watch
from shared.errors import TooManyWaits
from shared.storage.attributes import NumberValue, StringValue
from shared.storage.counters import ShardItem

POLL_S = 0.01
# Deadlines are on the monotonic clock, which asyncio's loop.time() reads too.


class Storage:
    """Counter shards as the doorbell reads them, and a count of each kind of read."""

    def __init__(self) -> None:
        self.shards: dict[tuple[str, int], tuple[int, int]] = {}  # (counter, shard) -> (n, n_leased)
        self.ended: set[str] = set()
        self.queries: list[str] = []
        self.peeks: list[list[tuple[str, int]]] = []

    def _item(self, key: tuple[str, int]) -> ShardItem:
        n, leased = self.shards[key]
        return ShardItem(StringValue(key[0]), NumberValue(key[1]), NumberValue(n), NumberValue(leased))

    async def query(self, counter: str) -> list[ShardItem]:
        self.queries.append(counter)
        return [self._item(k) for k in self.shards if k[0] == counter]

    async def peek(self, keys: list[tuple[str, int]]) -> list[ShardItem]:
        self.peeks.append(keys)
        return [self._item(k) for k in keys if k in self.shards]

    async def lease_ended(self, partition: str) -> bool:
        return partition in self.ended

    def reads(self) -> Reads:
        return Reads(self.query, self.peek, self.lease_ended)


async def _never() -> dict[str, Any]:
    await asyncio.Event().wait()
    return {}


def _bell(storage: Storage, per_key: int = 100) -> Doorbell:
    return Doorbell(storage.reads(), POLL_S, per_key)


async def _with(bell: Doorbell, work: Callable[[], Awaitable[Any]]) -> Any:
    await bell.start()
    try:
        return await work()
    finally:
        await bell.close()


def _fifty_waiters(claims: bool) -> tuple[list[bool], Storage]:
    storage = Storage()
    bell = _bell(storage)
    watch = Watch("acc", "acc", claims=claims)

    async def wait_all() -> list[bool]:
        async def one(n: int) -> bool:
            async with bell.session(f"key{n}", _never) as waits:
                woken = await waits.until(watch, asyncio.get_running_loop().time() + 0.3)
            if woken and claims:  # its claim takes an event
                available, leased = storage.shards["acc", 0]
                storage.shards["acc", 0] = (available - 1, leased)
            return woken

        waiting = [asyncio.create_task(one(n)) for n in range(50)]
        await asyncio.sleep(0.1)  # ten polls or so, with nothing there
        storage.shards["acc", 0] = (2, 0)  # two events are stored
        return await asyncio.gather(*waiting)

    return asyncio.run(_with(bell, wait_all)), storage


def test_many_waiters_on_one_consumer_cost_one_read_per_poll() -> None:
    woken, storage = _fifty_waiters(claims=False)
    assert woken == [True] * 50  # every page waiter: a page does not take the events
    assert all(keys == [("acc", 0)] for keys in storage.peeks)  # one key per poll, not 50
    assert len(storage.queries) <= 2  # its shards found at the start (and once more if it moved)


def test_only_as_many_claimers_wake_as_there_are_events_the_longest_waiting_first() -> None:
    woken, _ = _fifty_waiters(claims=True)
    assert woken == [True, True] + [False] * 48


def test_a_claimer_wakes_when_a_lease_ends_and_a_page_waiter_does_not() -> None:
    storage = Storage()
    storage.shards["acc", 0] = (0, 2)  # nothing available, two leased
    storage.ended.add("acc")
    bell = _bell(storage)

    async def both() -> tuple[bool, bool]:
        async with bell.session("k", _never) as waits:
            loop = asyncio.get_running_loop()
            claiming = asyncio.create_task(waits.until(Watch("acc", "acc", claims=True), loop.time() + 0.2))
            paging = asyncio.create_task(waits.until(Watch("acc", "acc", claims=False), loop.time() + 0.2))
            return await claiming, await paging

    assert asyncio.run(_with(bell, both)) == (True, False)


def test_a_wake_that_found_nothing_reads_the_counter_shards_again() -> None:
    storage = Storage()
    storage.shards["acc", 0] = (1, 0)
    bell = _bell(storage)
    watch = Watch("acc", "acc", claims=False)

    async def twice() -> list[bool]:
        async with bell.session("k", _never) as waits:
            loop = asyncio.get_running_loop()
            first = await waits.until(watch, loop.time() + 0.2)
            storage.shards["acc", 3] = (-1, 0)  # a shard made meanwhile: the sum is 0 in truth
            second = await waits.until(watch, loop.time() + 0.1)
            return [first, second]

    assert asyncio.run(_with(bell, twice)) == [True, False]
    assert storage.queries[:2] == ["acc", "acc"]  # found again after the wake that found nothing


def test_waits_are_capped_per_key_and_a_client_that_leaves_ends_its_wait() -> None:
    storage = Storage()
    bell = _bell(storage, per_key=1)
    watch = Watch("acc", "acc", claims=True)

    async def scenario() -> tuple[bool, bool]:
        left = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await left.wait()
            return {"type": "http.disconnect"}

        async def first() -> bool:
            async with bell.session("k", receive) as waits:
                return await waits.until(watch, asyncio.get_running_loop().time() + 5)

        waiting = asyncio.create_task(first())
        await asyncio.sleep(0.05)
        with pytest.raises(TooManyWaits):
            async with bell.session("k", _never):
                pass
        async with bell.session("other", _never):  # another key is not capped by this one
            pass
        left.set()  # the client goes away
        woken = await asyncio.wait_for(waiting, 1)
        async with bell.session("k", _never):  # its place is free again
            pass
        return woken, bell.waiting == 0

    assert asyncio.run(_with(bell, scenario)) == (False, True)
