"""Acknowledgements: mark events delivered and decrement their counts, atomically, once.

Acknowledging n ids costs one consistent BatchGetItem per 100 ids (one more for ids that are
a duplicate's alias), then one transaction per group of up to 98 events (fewer across many
types): an update per event, on condition that it is still undelivered, and one decrement
per counter the group touches (the account's total and one per event type), not one per
event. An id whose condition fails was acknowledged by someone else meanwhile; the rest of
its group is written again. So concurrent acknowledgements of the same ids, from any number
of inbox processes, decrement each count exactly once per event.
"""

from __future__ import annotations

import enum
import time
from collections import Counter

from shared.aws.dynamodb import LeanDynamoDB
from shared.settings import Settings
from shared.storage.counters import ShardChooser, counter_add
from shared.storage.events import ACK_PROJECTION, AckItem, ack_read_answer, ack_update, ack_values, event_key
from shared.storage.layout import TRANSACTION_MAX_ITEMS, counter_id
from shared.storage.reads import batch_get
from shared.storage.transactions import Role, TransactionCancelled, TxItem, retrying, transact

# Unprocessed keys are read again (shared.storage.reads), conflicts retried under the
# transactions' one policy (shared.storage.transactions); after a conflict the account's
# counter writes spread over shards (shared.storage.counters).


class AckOutcome(enum.Enum):
    ACKNOWLEDGED = "acknowledged"  # this call marked it delivered
    ALREADY_DELIVERED = "already_delivered"
    NOT_FOUND = "not_found"


# One item of an acknowledgement's transaction: the event it marks (None for counter updates).
_Item = TxItem[AckItem | None]


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
        events = {found[t] for t in target.values() if found[t].original is None}
        outcomes = {e.id: AckOutcome.ALREADY_DELIVERED for e in events if e.is_delivered}
        for group in _groups([e for e in events if not e.is_delivered]):
            outcomes |= await self._mark(account_id, group)
        return {i: outcomes.get(target.get(i, ""), AckOutcome.NOT_FOUND) for i in event_ids}

    async def _read(self, account_id: str, event_ids: set[str]) -> dict[str, AckItem]:
        keys = [event_key(account_id, i) for i in sorted(event_ids)]
        items = await batch_get(self._client, self._events, keys, ACK_PROJECTION, ack_read_answer)
        return {item.id: item for item in items}

    async def _mark(self, account_id: str, group: list[AckItem]) -> dict[str, AckOutcome]:
        """Mark a group delivered in one transaction, settling ids others acknowledged first."""
        outcomes: dict[str, AckOutcome] = {}

        async def mark(pending: list[AckItem]) -> list[AckItem]:
            try:
                await transact(self._client, self._transaction(account_id, pending))
            except TransactionCancelled as cancelled:
                taken = {c.item.ref.id for c in cancelled.of(Role.ACK_UPDATE) if c.condition_failed and c.item.ref}
                outcomes.update({i: AckOutcome.ALREADY_DELIVERED for i in taken})
                self._shards.cancelled(cancelled.cancellations, [account_id])
                return [e for e in pending if e.id not in taken]
            outcomes.update({e.id: AckOutcome.ACKNOWLEDGED for e in pending})
            return []

        if await retrying(group, mark):
            raise TimeoutError("acknowledgement kept conflicting")
        return outcomes

    def _transaction(self, account_id: str, group: list[AckItem]) -> list[_Item]:
        values = ack_values(time.time_ns() // 1000, self._retention_s)
        items: list[_Item] = [
            TxItem(Role.ACK_UPDATE, {"Update": ack_update(self._events, account_id, e.id, values)}, e, account_id)
            for e in group
        ]
        shard = self._shards.shard([account_id])
        by_type = Counter(e.type for e in group)
        decrements = [(counter_id(account_id), len(group))]
        decrements += [(counter_id(account_id, t), n) for t, n in by_type.items()]
        for counter, n in decrements:
            update = counter_add(self._counters, counter, shard, -n)
            items.append(TxItem(Role.COUNTER, {"Update": update}, None, account_id))
        return items


def _groups(events: list[AckItem]) -> list[list[AckItem]]:
    """Events in groups whose transaction (an update each, a decrement per counter) fits."""
    groups: list[list[AckItem]] = []
    group: list[AckItem] = []
    types: set[str] = set()
    for event in sorted(events, key=lambda e: e.id):
        if len(group) + 2 + len(types | {event.type}) > TRANSACTION_MAX_ITEMS:
            groups.append(group)
            group, types = [], set()
        group.append(event)
        types.add(event.type)
    return [*groups, group] if group else groups
