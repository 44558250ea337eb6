"""Leases: claims, the end of leases, nacks and extensions (the contract's "Leases").

A claim leases up to ``limit`` of a consumer partition's events for ``lease_s``, in two steps:
1. the partition's leases that ended (one Query of the ``held`` index, at most
   ``ENDED_READ``): those claimed ``max_deliveries`` times move to the failed list, the others
   are leased again (``deliveries`` + 1), the longest ended first;
2. the rest from the inbox's oldest available events (``InboxStore.head``): the first
   ``need``; a claimer that lost some to competing claimers picks again, at random among the
   first ``2 * need`` it did not try, so that they stop colliding, at most ``CLAIM_PASSES``
   times.
Every move is a conditional update of the event (shared.storage.leases), written with the
counts it moves in one transaction per group (``_apply``): an event whose condition fails
went to someone else, the rest of its group is written again. No lease state lives in a
process: any inbox instance serves any call, and a claimer that dies loses nothing (its
leases end, and the next claim, or page, takes them back).

Costs: a claim of k events is one Query of ``held`` + one Query per inbox shard + one
transaction of k + 2 items or so (more for many types); an ack by token is one BatchGetItem
and one transaction per 98 tokens (inbox_api/acks.py).
"""

from __future__ import annotations

import enum
import random
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inbox_api.store import InboxStore, wall_clock_us
from shared.aws.dynamodb import LeanDynamoDB
from shared.settings import Settings
from shared.storage.counters import ShardChooser, counter_moves
from shared.storage.events import EventItem, StoredEvent, event_key
from shared.storage.layout import TRANSACTION_MAX_ITEMS
from shared.storage.leases import (
    HELD_PROJECTION,
    HeldItem,
    claim_update,
    expired_query,
    fail_update,
    held_answer,
    held_read_answer,
    release_update,
    relet_update,
)
from shared.storage.reads import batch_get
from shared.storage.transactions import Role, TransactionCancelled, TxItem, retrying, transact

ENDED_READ = 100  # ended leases one call takes back: the rest wait for the next
CLAIM_PASSES = 3  # picks from the inbox when competing claimers took what was picked
WINDOW_MAX = 200  # available events a claim reads to pick from
_US = 1_000_000
_LEASE_ID_BYTES = 9
_TOKEN_BYTES = 18  # a ClientRequestToken: 36 characters at most


class LeaseRefusal(enum.StrEnum):
    LEASE_LOST = "lease_lost"  # the event was claimed again (or given back) since the token's lease
    LEASE_ENDED = "lease_ended"  # the event is no longer leased: acknowledged, failed or back in the inbox
    NOT_FOUND = "not_found"  # no such event in this consumer (its retention passed, or it was deleted)


@dataclass(frozen=True, slots=True)
class Claimed:
    event: StoredEvent
    deliveries: int
    lease_id: str
    until_us: int


@dataclass(frozen=True, slots=True)
class _Move:
    """One event's move in a lease transaction: its update and the counts it moves."""

    event_id: str
    event_type: str
    update: dict[str, Any]
    available: int = 0  # +1: into the inbox, -1: out of it
    leased: int = 0
    failed: int = 0
    claimed: Claimed | None = None


_Item = TxItem[_Move | None]


class Leaser:
    def __init__(
        self, client: LeanDynamoDB, settings: Settings, store: InboxStore, clock_us: Callable[[], int] = wall_clock_us
    ) -> None:
        self._client = client
        self._store = store
        self._events = settings.events_table
        self._counters = settings.counters_table
        self._inbox_shards = settings.inbox_shards
        self._shards = ShardChooser(settings.counter_shards)
        self._clock_us = clock_us

    async def claim(self, partition: str, limit: int, lease_s: int, max_deliveries: int) -> list[Claimed]:
        """Lease up to ``limit`` events nobody holds, oldest first (by receipt)."""
        now = self._clock_us()
        lease_id, until = secrets.token_urlsafe(_LEASE_ID_BYTES), now + lease_s * _US
        ended = await self._ended(partition, now)
        again = [h for h in ended if h.times < max_deliveries][:limit]
        moves = [self._fail(partition, h, now, ended=True) for h in ended if h.times >= max_deliveries]
        moves += [self._lease(partition, h, lease_id, until, ended=h) for h in again]
        claimed = _claimed(moves, await self._apply(partition, moves))
        tried = {h.id for h in ended}
        for _ in range(CLAIM_PASSES):
            need = limit - len(claimed)
            if need <= 0:
                break
            window = await self._store.head(partition, min(WINDOW_MAX, 2 * need + len(tried)))
            window = [i for i in window if i.event_id.S not in tried]
            # The oldest first; once competing claimers took some, a random pick among the
            # rest, so that they stop colliding on the same events.
            chosen = window[:need] if not tried else random.sample(window, min(need, len(window)))
            tried.update(i.event_id.S for i in chosen)
            moves = [self._lease(partition, item, lease_id, until) for item in chosen]
            done = await self._apply(partition, moves)
            claimed += _claimed(moves, done)
            if len(done) == len(moves):  # nobody else took any: the window had no more to give
                break
        return sorted(claimed, key=lambda c: c.event.event_id)

    async def release_ended(self, partition: str, max_deliveries: int) -> int:
        """Give the partition's ended leases back to the inbox (or to the failed list, once
        their deliveries are spent): what a page does before reading, when leases are out."""
        now = self._clock_us()
        moves = [
            self._fail(partition, h, now, ended=True)
            if h.times >= max_deliveries
            else _Move(
                h.id, h.type, release_update(self._events, partition, h, self._inbox_shards, now, ended=True), 1, -1
            )
            for h in await self._ended(partition, now)
        ]
        return len(await self._apply(partition, moves))

    async def nack(
        self, partition: str, leases: dict[str, str], delay_s: int, max_deliveries: int
    ) -> dict[str, LeaseRefusal | None]:
        """Give leased events back: to the inbox now, or after ``delay_s`` (a lease nobody
        holds); to the failed list if their deliveries are spent. None: given back."""
        now = self._clock_us()
        refusals, held = await self._holding(partition, leases)
        moves = [self._given_back(partition, h, now, delay_s, max_deliveries) for h in held]
        return _answers(leases, refusals, moves, await self._apply(partition, moves))

    def _given_back(self, partition: str, held: HeldItem, now: int, delay_s: int, max_deliveries: int) -> _Move:
        if delay_s:  # a lease nobody holds, ending after the delay
            nobody = secrets.token_urlsafe(_LEASE_ID_BYTES)
            until = now + delay_s * _US
            update = relet_update(
                self._events, partition, held.id, lease_id=held.lease, new_lease=nobody, until_us=until
            )
            return _Move(held.id, held.type, update)
        if held.times >= max_deliveries:
            return self._fail(partition, held, now, ended=False)
        update = release_update(self._events, partition, held, self._inbox_shards, now, ended=False)
        return _Move(held.id, held.type, update, 1, -1)

    async def extend(
        self, partition: str, leases: dict[str, str], lease_s: int
    ) -> tuple[dict[str, LeaseRefusal | None], int]:
        """Make leases end ``lease_s`` from now; the answer per event, and the new end."""
        until = self._clock_us() + lease_s * _US
        refusals, held = await self._holding(partition, leases)
        moves = [
            _Move(
                h.id,
                h.type,
                relet_update(self._events, partition, h.id, lease_id=h.lease, new_lease=h.lease, until_us=until),
            )
            for h in held
        ]
        return _answers(leases, refusals, moves, await self._apply(partition, moves)), until

    async def any_ended(self, partition: str) -> bool:
        """Has a lease of the partition ended (what a waiting claim waits for, beside new events)?"""
        answer = await self._client.query_decoded(
            held_answer, **expired_query(self._events, partition, self._clock_us(), 1)
        )
        return bool(answer.Items)

    # Reading

    async def _ended(self, partition: str, now_us: int) -> list[HeldItem]:
        answer = await self._client.query_decoded(
            held_answer, **expired_query(self._events, partition, now_us, ENDED_READ)
        )
        return answer.Items

    async def _holding(self, partition: str, leases: dict[str, str]) -> tuple[dict[str, LeaseRefusal], list[HeldItem]]:
        """The events (as read, consistently) that hold the lease their token names, and why the others do not."""
        keys = [event_key(partition, i) for i in sorted(leases)]
        found = {h.id: h for h in await batch_get(self._client, self._events, keys, HELD_PROJECTION, held_read_answer)}
        refusals: dict[str, LeaseRefusal] = {}
        held = []
        for event_id, lease in leases.items():
            item = found.get(event_id)
            if item is None:
                refusals[event_id] = LeaseRefusal.NOT_FOUND
            elif item.lease != lease:
                refusals[event_id] = LeaseRefusal.LEASE_LOST
            elif not item.leased_in(partition):
                refusals[event_id] = LeaseRefusal.LEASE_ENDED
            else:
                held.append(item)
        return refusals, held

    # Moves

    def _lease(
        self, partition: str, item: EventItem, lease_id: str, until: int, *, ended: HeldItem | None = None
    ) -> _Move:
        update = claim_update(self._events, partition, item, lease_id, until, expired=ended)
        claimed = Claimed(item.event(), item.times + 1, lease_id, until)
        if ended is not None:  # leased again: it stays in flight
            return _Move(item.id, item.type, update, claimed=claimed)
        return _Move(item.id, item.type, update, -1, 1, claimed=claimed)

    def _fail(self, partition: str, held: HeldItem, now: int, *, ended: bool) -> _Move:
        return _Move(held.id, held.type, fail_update(self._events, partition, held, now, ended=ended), 0, -1, 1)

    async def _apply(self, partition: str, moves: list[_Move]) -> set[str]:
        """Write the moves, a transaction per group, with the counts they move; the ids moved
        (the others' conditions failed: someone else moved them first)."""
        done: set[str] = set()
        for group in _groups(moves):

            async def attempt(pending: list[_Move]) -> list[_Move]:
                try:
                    # A token per attempt: the transport's retry of a call whose answer was
                    # lost finds it done, instead of failing its conditions (moves lost).
                    token = secrets.token_urlsafe(_TOKEN_BYTES)
                    await transact(self._client, self._transaction(partition, pending), token=token)
                except TransactionCancelled as cancelled:
                    lost = {c.item.ref.event_id for c in cancelled.of(Role.LEASE) if c.condition_failed and c.item.ref}
                    self._shards.cancelled(cancelled.cancellations, [partition])
                    return [m for m in pending if m.event_id not in lost]
                done.update(m.event_id for m in pending)
                return []

            if await retrying(group, attempt):
                raise TimeoutError("lease moves kept conflicting")
        return done

    def _transaction(self, partition: str, moves: Sequence[_Move]) -> list[_Item]:
        items: list[_Item] = [TxItem(Role.LEASE, {"Update": m.update}, m, partition) for m in moves]
        available: Counter[str] = Counter()
        for m in moves:
            available[m.event_type] += m.available
        leased, failed = sum(m.leased for m in moves), sum(m.failed for m in moves)
        if any(available.values()) or leased or failed:
            items += counter_moves(self._counters, self._shards, partition, available, leased=leased, failed=failed)
        return items


def _claimed(moves: list[_Move], done: set[str]) -> list[Claimed]:
    return [m.claimed for m in moves if m.claimed is not None and m.event_id in done]


def _answers(
    leases: dict[str, str], refusals: dict[str, LeaseRefusal], moves: list[_Move], done: set[str]
) -> dict[str, LeaseRefusal | None]:
    """None for each event moved; a move whose condition failed lost its lease meanwhile."""
    moved = {m.event_id for m in moves}
    return {
        i: None if i in done else refusals.get(i, LeaseRefusal.LEASE_LOST if i in moved else LeaseRefusal.NOT_FOUND)
        for i in leases
    }


def _groups(moves: list[_Move]) -> list[list[_Move]]:
    """Moves in groups whose transaction (an update each, the total and one per type) fits."""
    groups: list[list[_Move]] = []
    group: list[_Move] = []
    types: set[str] = set()
    for move in moves:
        if len(group) + 2 + len(types | {move.event_type}) > TRANSACTION_MAX_ITEMS:
            groups.append(group)
            group, types = [], set()
        group.append(move)
        types.add(move.event_type)
    return [*groups, group] if group else groups
