"""Reads of the inbox: the event items of ``shared.storage.events``, the counters of
``shared.storage.counters``.

No request path scans: a page is one Query on a sparse index per inbox shard (a few more when
DynamoDB's 1 MB per answer cuts them short, at most ``S + PAGE_EXTRA_QUERIES`` in all), a
count is one consistent Query of the counter's shards, an event is one consistent GetItem.
Acknowledgements: acks.py.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from shared.aws.dynamodb import LeanDynamoDB
from shared.errors import NotFound
from shared.settings import Settings
from shared.storage.counters import Counts, read_counts
from shared.storage.events import (
    ANY,
    BELOW,
    BETWEEN,
    PAGE_PROJECTION,
    SETTLED,
    PageItem,
    StoredEvent,
    alias_target,
    event_key,
    key_position,
    page_answer,
    page_partitions,
    page_query,
    stored_event,
)
from shared.storage.layout import POSITION_STAMP_DIGITS, counter_id
from shared.storage.leases import HeldItem, failed_query, held_answer

__all__ = ["PAGE_EXTRA_QUERIES", "PAGE_PROJECTION", "InboxStore", "Page", "StoredEvent"]  # PAGE_PROJECTION: bench

# Queries one page may make beyond its first one per shard, following answers that DynamoDB
# cut at 1 MB (or a shard that holds more than its share). So a page reads at most
# (S + PAGE_EXTRA_QUERIES) MB, whatever the event sizes; a page that runs out of them ends
# early, with has_more and a cursor after its last event.
PAGE_EXTRA_QUERIES = 4
# A position sorts below every position that follows ``p`` when written ``p + _SUCCESSOR``
# (positions are digits and Crockford letters), and every position stamped at or before a
# time t sorts below ``f"{t:016d}" + _ABOVE``.
_SUCCESSOR = " "
_ABOVE = "~"


def _pos(item: PageItem) -> str:
    return item.pos


class FailedPage(NamedTuple):
    events: list[HeldItem]
    has_more: bool
    after: str | None


class Page(NamedTuple):
    events: list[StoredEvent]
    has_more: bool
    after: str | None  # the position the next page continues from (None: no more for now)


@dataclass
class _Shard:
    """What a page has read of one inbox shard, up to where DynamoDB stopped answering."""

    values: dict[str, Any]
    items: list[PageItem] = field(default_factory=list)
    start: dict[str, Any] | None = None  # LastEvaluatedKey: the shard holds more past it
    done: bool = False

    @property
    def cut(self) -> str:
        """The position this shard was read up to; nothing unread of it comes before."""
        assert self.start is not None
        return key_position(self.start)


def _merge(shards: list[_Shard], frontier: str | None, descending: bool) -> list[PageItem]:
    """The shards' items in page order, up to ``frontier`` (all of them if None)."""
    merged = heapq.merge(*(s.items for s in shards), key=_pos, reverse=descending)
    if frontier is None:
        return list(merged)
    return [i for i in merged if (i.pos >= frontier if descending else i.pos <= frontier)]


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class InboxStore:
    def __init__(self, client: LeanDynamoDB, settings: Settings, clock_us: Callable[[], int] = wall_clock_us) -> None:
        self._client = client
        self._events = settings.events_table
        self._counters = settings.counters_table
        self._shard_ids = range(settings.inbox_shards)
        self._settle_us = settings.inbox_settle_ms * 1000
        self._clock_us = clock_us

    async def page(
        self, account_id: str, event_type: str | None, descending: bool, limit: int, after: str | None
    ) -> tuple[list[StoredEvent], bool]:
        """Up to ``limit`` undelivered events past the position ``after``, and whether more follow."""
        events, has_more, _ = await self.page_from(account_id, event_type, descending, limit, after)
        return events, has_more

    async def page_from(
        self, account_id: str, event_type: str | None, descending: bool, limit: int, after: str | None
    ) -> Page:
        """Up to ``limit`` settled undelivered events past the position ``after``, in position order.

        Only positions at least the settle margin old are shown, on every page: an event
        committed later gets a later position, so it is never behind a cursor handed out
        before (docs/architecture.md, "Inbox: paging and counts").
        """
        settled = f"{self._clock_us() - self._settle_us:0{POSITION_STAMP_DIGITS}d}{_ABOVE}"
        values: dict[str, Any] = {":settled": {"S": settled}}
        if after is None:
            positions = SETTLED
        elif descending:  # below a position handed out: settled already, whatever this clock says
            positions, values = BELOW, {":after": {"S": after}}
        elif after + _SUCCESSOR <= settled:
            positions = BETWEEN
            values[":after"] = {"S": after + _SUCCESSOR}
        else:  # this instance's clock is behind the one that made the cursor: nothing settled yet
            return Page([], True, after)
        query = page_query(self._events, event_type, descending, positions)
        keys = page_partitions(account_id, event_type, self._shard_ids)
        shards = [_Shard({**values, ":pk": {"S": key}}) for key in keys]
        items, has_more = await self._read(query, shards, limit + 1, descending)
        events = [i.event() for i in items[:limit]]
        has_more = has_more or len(items) > limit
        return Page(events, has_more, events[-1].position if events else (after if has_more else None))

    async def head(self, partition: str, limit: int) -> list[PageItem]:
        """The ``limit`` available events first in position order, settled or not: what a claim
        takes from. A claim hands out no cursor, so an event committed late is claimed later,
        never passed: no settle margin to wait out."""
        query = page_query(self._events, None, False, ANY)
        shards = [_Shard({":pk": {"S": key}}) for key in page_partitions(partition, None, self._shard_ids)]
        items, _ = await self._read(query, shards, limit, False)
        return items

    async def failed_page(self, partition: str, descending: bool, limit: int, after: str | None) -> FailedPage:
        """Up to ``limit`` events of the partition's failed list past the position ``after``,
        in the order they failed; settled as the inbox's pages are (``page_from``)."""
        settled_us = self._clock_us() - self._settle_us
        if (
            after is not None
            and not descending
            and after + _SUCCESSOR > f"{settled_us:0{POSITION_STAMP_DIGITS}d}{_ABOVE}"
        ):
            return FailedPage([], True, after)  # this clock is behind the cursor's: nothing settled yet
        params = failed_query(
            self._events, partition, descending=descending, settled_us=settled_us, after=after, limit=limit + 1
        )
        items: list[HeldItem] = []
        for _ in range(1 + PAGE_EXTRA_QUERIES):
            answer = await self._client.query_decoded(held_answer, **params)
            items += answer.Items
            if len(items) > limit or answer.LastEvaluatedKey is None:
                break
            params = {**params, "ExclusiveStartKey": answer.LastEvaluatedKey, "Limit": limit + 1 - len(items)}
        has_more = len(items) > limit or answer.LastEvaluatedKey is not None
        events = items[:limit]
        return FailedPage(events, has_more, events[-1].pos if events else (after if has_more else None))

    async def _read(
        self, query: dict[str, Any], shards: list[_Shard], need: int, descending: bool
    ) -> tuple[list[PageItem], bool]:
        """The first ``need`` items of the merged shards, or fewer, and whether any shard has more.

        A shard whose answer was cut (by ``Limit`` or by DynamoDB's 1 MB) is known only up to
        its cut: the merge never goes past the lowest cut, so no unread item can belong
        before what is returned. Cut shards that hold the page back are read further while
        the query budget lasts.
        """
        # A fair share per shard with room for unevenness; one shard alone reads what it needs.
        share = need if len(shards) == 1 else min(need, math.ceil(need * 1.25 / len(shards)) + 4)
        reading = [(shard, share) for shard in shards]
        budget = len(shards) + PAGE_EXTRA_QUERIES
        while True:
            if len(reading) == 1:  # the usual case: no task to spawn
                await self._query(query, *reading[0])
            else:
                await asyncio.gather(*(self._query(query, shard, n) for shard, n in reading))
            budget -= len(reading)
            cut = [s for s in shards if not s.done]
            frontier = (max if descending else min)((s.cut for s in cut), default=None)
            ready = _merge(shards, frontier, descending)
            if len(ready) >= need or frontier is None or budget <= 0:
                return ready[:need], frontier is not None
            # The shards whose cut falls before the ``need``-th item read so far hold it back.
            buffered = _merge(shards, None, descending)
            bound = buffered[need - 1].pos if len(buffered) >= need else None
            behind = [s for s in cut if bound is None or (s.cut > bound if descending else s.cut < bound)]
            behind.sort(key=lambda s: s.cut, reverse=descending)
            reading = [(s, need - len(ready)) for s in behind[:budget]]

    async def _query(self, query: dict[str, Any], shard: _Shard, limit: int) -> None:
        params = {**query, "Limit": limit, "ExpressionAttributeValues": shard.values}
        if shard.start is not None:
            params["ExclusiveStartKey"] = shard.start
        answer = await self._client.query_decoded(page_answer, **params)
        shard.items += answer.Items
        shard.start = answer.LastEvaluatedKey
        shard.done = answer.LastEvaluatedKey is None

    async def count(self, account_id: str, event_type: str | None) -> int:
        """Exact undelivered (available) count: the sum of the counter's shards, read consistently."""
        return (await self.counts(account_id, event_type)).undelivered

    async def counts(self, account_id: str, event_type: str | None = None) -> Counts:
        """Exact counts of a partition (or of one type: available only), read consistently."""
        return await read_counts(self._client, self._counters, counter_id(account_id, event_type))

    async def get(self, account_id: str, event_id: str, aliases_of: str | None = None) -> StoredEvent:
        """One event of the account (or of a consumer's partition); a duplicate's id resolves
        to the original. Aliases live in the account's own partition only: a consumer's
        partition passes its account as ``aliases_of``, where an id it lacks is looked up."""
        item = await self._get_item(account_id, event_id)
        if item is None and aliases_of is not None and aliases_of != account_id:
            item = await self._get_item(aliases_of, event_id)
            if item is None or alias_target(item) is None:  # not a duplicate's id: none of its events
                raise NotFound("No such event.")
        if item is not None and (original := alias_target(item)) is not None:
            item = await self._get_item(account_id, original)
        if item is None:
            raise NotFound("No such event.")
        return stored_event(item)

    async def _get_item(self, account_id: str, event_id: str) -> dict[str, Any] | None:
        response = await self._client.get_item(
            TableName=self._events, Key=event_key(account_id, event_id), ConsistentRead=True
        )
        return response.get("Item")
