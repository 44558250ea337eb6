"""Acknowledgements: mark events delivered and decrement their counts, atomically, once.

An event is acknowledged by id (whatever its state: available, leased, failed) or by a lease
token (``ack_leases``: only while the event holds that token's lease, shared.storage.leases).
Acknowledging n ids costs one consistent BatchGetItem per 100 ids (one more for ids that are
a duplicate's alias), then one transaction per group of up to 98 events (fewer across many
types): an update per event, on condition that it is still in the state read, and one update
per counter the group touches (the partition's total, with its leased and failed counts, and
one per event type), not one per event. An event whose condition fails changed meanwhile
(acknowledged by someone else, claimed, given back): it is read again and settled on what it
is now; the rest of its group is written again. So concurrent acknowledgements and claims of
the same events, from any number of inbox processes, move each count exactly once per event.
"""

from __future__ import annotations

import enum
import time
from collections import Counter
from dataclasses import dataclass

from shared.aws.dynamodb import LeanDynamoDB
from shared.settings import Settings
from shared.storage.counters import ShardChooser, counter_moves
from shared.storage.events import ACK_PROJECTION, AckItem, ack_read_answer, ack_update, ack_values, event_key
from shared.storage.layout import TRANSACTION_MAX_ITEMS, held_pk
from shared.storage.leases import held_ack_update
from shared.storage.reads import batch_get
from shared.storage.transactions import Role, TransactionCancelled, TxItem, retrying, transact

# Unprocessed keys are read again (shared.storage.reads), conflicts retried under the
# transactions' one policy (shared.storage.transactions); after a conflict the account's
# counter writes spread over shards (shared.storage.counters).

# Reads of events whose state changed under an acknowledgement: each round settles every
# event that did not change again meanwhile, so more rounds than this mean a storm of claims.
_STATE_ROUNDS = 5


class AckOutcome(enum.Enum):
    ACKNOWLEDGED = "acknowledged"  # this call marked it delivered
    ALREADY_DELIVERED = "already_delivered"
    NOT_FOUND = "not_found"
    LEASE_LOST = "lease_lost"  # a token's event was claimed again since: not the caller's to acknowledge


class _State(enum.Enum):
    AVAILABLE = "available"
    LEASED = "leased"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class _Mark:
    """An event to mark delivered: as read, in the state read, and the token's lease if any."""

    item: AckItem
    state: _State
    lease: str | None

    @property
    def id(self) -> str:
        return self.item.id


# One item of an acknowledgement's transaction: the event it marks (None for counter updates).
_Item = TxItem[_Mark | None]


class Acknowledger:
    def __init__(self, client: LeanDynamoDB, settings: Settings) -> None:
        self._client = client
        self._events = settings.events_table
        self._counters = settings.counters_table
        self._retention_s = settings.event_retention_s
        self._shards = ShardChooser(settings.counter_shards)

    async def ack(self, account_id: str, event_ids: list[str], aliases_of: str | None = None) -> dict[str, AckOutcome]:
        """The outcome of each id; a duplicate's id acknowledges the event it duplicates.

        ``account_id`` is the partition (an account's, or a consumer's). Aliases live in the
        account's own partition only: a consumer's passes its account as ``aliases_of``, where
        the ids its partition lacks are looked up (one more read, only for those).
        """
        found = await self._read(account_id, set(event_ids))
        aliases = {i: original for i, item in found.items() if (original := item.original) is not None}
        if aliases_of is not None and aliases_of != account_id and (missing := set(event_ids) - found.keys()):
            theirs = await self._read(aliases_of, missing)
            aliases |= {i: original for i, item in theirs.items() if (original := item.original) is not None}
        found |= await self._read(account_id, set(aliases.values()) - found.keys())
        target = {i: aliases.get(i, i) for i in event_ids if aliases.get(i, i) in found}
        events = {t: found[t] for t in target.values() if found[t].original is None}
        outcomes = await self._settle(account_id, dict.fromkeys(events), events)
        return {i: outcomes.get(target.get(i, ""), AckOutcome.NOT_FOUND) for i in event_ids}

    async def ack_leases(self, partition: str, leases: dict[str, str]) -> dict[str, AckOutcome]:
        """Acknowledge each event (id -> lease id, from a token) if it still holds that lease:
        ``LEASE_LOST`` once it was claimed again, whatever became of it after."""
        return await self._settle(partition, dict(leases), await self._read(partition, set(leases)))

    async def _settle(
        self, partition: str, wanted: dict[str, str | None], items: dict[str, AckItem]
    ) -> dict[str, AckOutcome]:
        """Mark every wanted event delivered from the state it was read in; those whose state
        changed meanwhile are read again and settled on their new state."""
        outcomes: dict[str, AckOutcome] = {}
        pending = wanted
        for _ in range(_STATE_ROUNDS):
            marks = []
            for event_id, lease in pending.items():
                mark = _mark_of(items.get(event_id), lease, partition)
                if isinstance(mark, AckOutcome):
                    outcomes[event_id] = mark
                else:
                    marks.append(mark)
            changed: set[str] = set()
            for group in _groups(marks):
                changed |= await self._mark(partition, group, outcomes)
            if not changed:
                return outcomes
            pending = {i: wanted[i] for i in changed}
            items = await self._read(partition, changed)
        raise TimeoutError("acknowledgement kept meeting events that changed")

    async def _read(self, account_id: str, event_ids: set[str]) -> dict[str, AckItem]:
        keys = [event_key(account_id, i) for i in sorted(event_ids)]
        items = await batch_get(self._client, self._events, keys, ACK_PROJECTION, ack_read_answer)
        return {item.id: item for item in items}

    async def _mark(self, partition: str, group: list[_Mark], outcomes: dict[str, AckOutcome]) -> set[str]:
        """Mark a group delivered in one transaction; the ids whose state changed since read."""
        changed: set[str] = set()

        async def mark(pending: list[_Mark]) -> list[_Mark]:
            try:
                await transact(self._client, self._transaction(partition, pending))
            except TransactionCancelled as cancelled:
                moved = {c.item.ref.id for c in cancelled.of(Role.ACK_UPDATE) if c.condition_failed and c.item.ref}
                changed.update(moved)
                self._shards.cancelled(cancelled.cancellations, [partition])
                return [m for m in pending if m.id not in moved]
            outcomes.update({m.id: AckOutcome.ACKNOWLEDGED for m in pending})
            return []

        if await retrying(group, mark):
            raise TimeoutError("acknowledgement kept conflicting")
        return changed

    def _transaction(self, partition: str, group: list[_Mark]) -> list[_Item]:
        values = ack_values(time.time_ns() // 1000, self._retention_s)
        items: list[_Item] = []
        for m in group:
            if m.state is _State.AVAILABLE:
                update = ack_update(self._events, partition, m.id, values, m.lease)
            else:
                update = held_ack_update(
                    self._events, partition, m.id, failed=m.state is _State.FAILED, values=values, lease_id=m.lease
                )
            items.append(TxItem(Role.ACK_UPDATE, {"Update": update}, m, partition))
        available = Counter(m.item.type for m in group if m.state is _State.AVAILABLE)
        leased = sum(m.state is _State.LEASED for m in group)
        failed = sum(m.state is _State.FAILED for m in group)
        negated = {t: -n for t, n in available.items()}
        return items + counter_moves(self._counters, self._shards, partition, negated, leased=-leased, failed=-failed)


def _mark_of(item: AckItem | None, lease: str | None, partition: str) -> _Mark | AckOutcome:
    """What to do with an id as read: mark it (in its state), or its outcome already."""
    if item is None or item.original is not None:
        return AckOutcome.NOT_FOUND
    if lease is not None and item.lease != lease:
        return AckOutcome.LEASE_LOST
    if item.is_delivered:
        return AckOutcome.ALREADY_DELIVERED
    held = item.held
    if held is None:
        return _Mark(item, _State.AVAILABLE, lease)
    return _Mark(item, _State.FAILED if held == held_pk(partition, True) else _State.LEASED, lease)


def _groups(events: list[_Mark]) -> list[list[_Mark]]:
    """Events in groups whose transaction (an update each, a counter update per type and the
    total) fits."""
    groups: list[list[_Mark]] = []
    group: list[_Mark] = []
    types: set[str] = set()
    for event in sorted(events, key=lambda e: e.id):
        if len(group) + 2 + len(types | {event.item.type}) > TRANSACTION_MAX_ITEMS:
            groups.append(group)
            group, types = [], set()
        group.append(event)
        types.add(event.item.type)
    return [*groups, group] if group else groups
