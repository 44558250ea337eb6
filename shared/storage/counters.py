"""Which shard of an undelivered counter a write adds to.

A count is read with one consistent Query of the counter's item collection, which returns
only the shards that exist. So writes stay on shard 0 until they contend: an account whose
counter writes never collide keeps one item, and its count reads one small item. When a
transaction touching an account's counter is cancelled by a conflict, this process sends
that account's counter writes to a random shard for ``CONTENDED_FOR_S``: a busy account
spreads over ``TRIGGERS_COUNTER_SHARDS`` items, which concurrent transactions rarely share.

A partition's total counter also holds ``n_leased`` (events under a lease, or waiting out a
nack's delay) and ``n_failed`` (on its failed list) beside ``n`` (available), on the same
shard items: the three are read by the one count Query, and a move between them is one
update. This module owns the counter item (``counter_id``, ``shard_index``, ``n``,
``n_leased``, ``n_failed``): the writer's and
the acknowledgements' updates, the inbox's count Query and what it decodes, the migration's
items. Nothing else spells its attributes.
"""

from __future__ import annotations

import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from shared.aws.dynamodb import LeanDynamoDB
from shared.storage.attributes import NumberValue, StringValue
from shared.storage.layout import TRANSACTION_MAX_ITEMS, counter_id
from shared.storage.reads import BATCH_GET_MAX_KEYS, BatchGetAnswer
from shared.storage.transactions import CONFLICT, Cancellation, Role, TxItem

T = TypeVar("T")
# TransactWriteItems takes 100 items and 4 MB: the byte budget keeps a group of large
# payloads under the size limit (``transaction_groups``).
GROUP_MAX_BYTES = 3 * 1024 * 1024

# How long an account whose counter writes conflicted keeps writing to random shards: long
# enough to cover a burst, short enough that a quiet account goes back to one shard.
CONTENDED_FOR_S = 60.0
# Accounts remembered as contended, per process; the least recently marked go first.
CONTENDED_REMEMBERED = 4096


class ShardChooser:
    def __init__(self, shards: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._shards = shards
        self._clock = clock
        self._contended: OrderedDict[str, float] = OrderedDict()  # account -> until

    def shard(self, accounts: Iterable[str]) -> int:
        """The shard for one transaction's counter writes to these accounts."""
        now = self._clock()
        if any(self._contended.get(a, 0.0) > now for a in accounts):
            return random.randrange(self._shards)
        return 0

    def cancelled(self, cancellations: Sequence[Cancellation[Any]], accounts: Iterable[str]) -> None:
        """A transaction writing these accounts' counters was cancelled, for these reasons.

        A conflict spreads every account of the transaction; a throttled counter item
        spreads its own account (its one shard is over its partition's rate).
        """
        if any(c.code == CONFLICT for c in cancellations):
            self.contended(accounts)
        throttled = {c.item.account for c in cancellations if c.throttled and c.item.role is Role.COUNTER}
        if throttled:
            self.contended(throttled)

    def contended(self, accounts: Iterable[str]) -> None:
        """These accounts' counter writes just conflicted with another transaction."""
        until = self._clock() + CONTENDED_FOR_S
        for account in accounts:
            self._contended[account] = until
            self._contended.move_to_end(account)
        while len(self._contended) > CONTENDED_REMEMBERED:
            self._contended.popitem(last=False)


def counter_key(counter: str, shard: int) -> dict[str, dict[str, str]]:
    """One shard of a counter, as a DynamoDB key."""
    return {"counter_id": {"S": counter}, "shard_index": {"N": str(shard)}}


def counter_add(
    table: str, counter: str, shard: int, delta: int, *, leased: int = 0, failed: int = 0
) -> dict[str, Any]:
    """A transaction's update adding ``delta`` (negative to subtract) to one shard's
    undelivered count ``n``, and ``leased`` / ``failed`` to its ``n_leased`` and ``n_failed``
    (a partition's total only: shared.storage.leases moves events between the three)."""
    names, values = [], {}
    for name, placeholder, value in (("n", ":d", delta), ("n_leased", ":l", leased), ("n_failed", ":f", failed)):
        if value or (name == "n" and not (leased or failed)):
            names.append(f"{name} {placeholder}")
            values[placeholder] = {"N": str(value)}
    return {
        "TableName": table,
        "Key": counter_key(counter, shard),
        "UpdateExpression": "ADD " + ", ".join(names),
        "ExpressionAttributeValues": values,
    }


def counter_updates(table: str, shards: ShardChooser, gained: Sequence[tuple[str, str]]) -> list[TxItem[None]]:
    """A transaction's counter items for what it adds, one (partition, event type) per new
    item: each partition's total and each (partition, type) move once, by how many, all on
    the one shard ``shards`` picks for the partitions (the writer's events and the copies)."""
    by_partition = Counter(partition for partition, _ in gained)
    by_type = Counter(gained)
    shard = shards.shard(by_partition)
    items = [_update(table, counter_id(p), shard, n, p) for p, n in by_partition.items()]
    items += [_update(table, counter_id(p, t), shard, n, p) for (p, t), n in by_type.items()]
    return items


def counter_moves(
    table: str, shards: ShardChooser, partition: str, available: Mapping[str, int], *, leased: int = 0, failed: int = 0
) -> list[TxItem[None]]:
    """A transaction's counter items for events of one partition moving between its states:
    ``available`` by type (the inbox's ``n``: the total's and each type's), ``leased`` and
    ``failed`` on the total alone, all on the one shard ``shards`` picks for it."""
    shard = shards.shard([partition])
    total = sum(available.values())
    update = counter_add(table, counter_id(partition), shard, total, leased=leased, failed=failed)
    items = [TxItem(Role.COUNTER, {"Update": update}, None, partition)]
    items += [_update(table, counter_id(partition, t), shard, n, partition) for t, n in available.items() if n]
    return items


def transaction_groups(
    entries: Iterable[T], *, gains: Callable[[T], tuple[str, str]], size: Callable[[T], int], items_each: int
) -> Iterator[list[T]]:
    """Fill each transaction as far as DynamoDB's limits allow: ``items_each`` items per entry
    plus the counter updates of what the group gains (``counter_updates``: one per partition
    and per (partition, type)), within ``TRANSACTION_MAX_ITEMS`` and ``GROUP_MAX_BYTES``."""
    group: list[T] = []
    counters: set[tuple[str, str | None]] = set()  # (partition, None) is the partition's total
    total = 0
    for entry in entries:
        partition, event_type = gains(entry)
        entry_size = size(entry)
        new = {(partition, None), (partition, event_type)} - counters
        items = items_each * (len(group) + 1) + len(counters) + len(new)
        if group and (items > TRANSACTION_MAX_ITEMS or total + entry_size > GROUP_MAX_BYTES):
            yield group
            group, counters, total = [], set(), 0
            new = {(partition, None), (partition, event_type)}
        group.append(entry)
        counters |= new
        total += entry_size
    if group:
        yield group


def _update(table: str, counter: str, shard: int, delta: int, partition: str) -> TxItem[None]:
    return TxItem(Role.COUNTER, {"Update": counter_add(table, counter, shard, delta)}, None, partition)


def counter_probe(table: str, counter: str) -> dict[str, Any]:
    """A known-good counter update that can never apply: its key never exists (the writer's probe)."""
    return {**counter_add(table, counter, 0, 1), "ConditionExpression": "attribute_exists(counter_id)"}


def count_query(table: str, counter: str) -> dict[str, Any]:
    """The consistent Query of every shard of a counter, reading only the counts."""
    return {
        "TableName": table,
        "KeyConditionExpression": "counter_id = :c",
        "ExpressionAttributeValues": {":c": {"S": counter}},
        "ProjectionExpression": "n, n_leased, n_failed",
        "ConsistentRead": True,
    }


def shard_keys_query(table: str, counter: str) -> dict[str, Any]:
    """``count_query`` reading the keys of the counter's shards: what deleting a counter deletes."""
    return {**count_query(table, counter), "ProjectionExpression": "counter_id, shard_index"}


class CounterItem(msgspec.Struct, frozen=True, gc=False):  # gc=False: no field can hold a cycle
    n: NumberValue | None = None
    n_leased: NumberValue | None = None
    n_failed: NumberValue | None = None


class Counts(msgspec.Struct, frozen=True, gc=False):
    """A partition's exact counts: available, leased (or waiting out a nack's delay), failed."""

    undelivered: int = 0
    in_flight: int = 0
    failed: int = 0


class CountAnswer(msgspec.Struct, frozen=True):
    """A ``count_query`` answer, decoded straight from the wire."""

    Items: list[CounterItem] = []
    LastEvaluatedKey: dict[str, Any] | None = None

    def total(self) -> int:
        return sum(i.n.N for i in self.Items if i.n is not None)

    def counts(self) -> Counts:
        return Counts(
            self.total(),
            sum(i.n_leased.N for i in self.Items if i.n_leased is not None),
            sum(i.n_failed.N for i in self.Items if i.n_failed is not None),
        )


count_answer = msgspec.json.Decoder(CountAnswer, strict=False)


class ShardItem(msgspec.Struct, frozen=True, gc=False):
    """One shard of a counter as a waiter's poll reads it (inbox_api/waiting.py)."""

    counter_id: StringValue
    shard_index: NumberValue
    n: NumberValue | None = None
    n_leased: NumberValue | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.counter_id.S, self.shard_index.N

    @property
    def available(self) -> int:
        return self.n.N if self.n is not None else 0

    @property
    def leased(self) -> int:
        return self.n_leased.N if self.n_leased is not None else 0


class ShardAnswer(msgspec.Struct, frozen=True):
    Items: list[ShardItem] = []
    LastEvaluatedKey: dict[str, Any] | None = None


_shard_answer = msgspec.json.Decoder(ShardAnswer, strict=False)
_shards_read = msgspec.json.Decoder(BatchGetAnswer[ShardItem], strict=False)
_SHARD_PROJECTION = "counter_id, shard_index, n, n_leased"


async def shard_counts(client: LeanDynamoDB, table: str, counter: str) -> list[ShardItem]:
    """Every shard of a counter, read consistently: which shards exist, and what each holds."""
    params = {**count_query(table, counter), "ProjectionExpression": _SHARD_PROJECTION}
    items: list[ShardItem] = []
    while True:
        answer = await client.query_decoded(_shard_answer, **params)
        items += answer.Items
        if answer.LastEvaluatedKey is None:
            return items
        params["ExclusiveStartKey"] = answer.LastEvaluatedKey


async def peek_shards(client: LeanDynamoDB, table: str, keys: Sequence[tuple[str, int]]) -> list[ShardItem]:
    """These shards of counters, eventually consistent (half a read unit each): what a
    waiter's poll reads, 100 keys a call; keys left unprocessed are left for the next poll."""
    found: list[ShardItem] = []
    for start in range(0, len(keys), BATCH_GET_MAX_KEYS):
        chunk = [counter_key(c, s) for c, s in keys[start : start + BATCH_GET_MAX_KEYS]]
        request: Any = {table: {"Keys": chunk, "ProjectionExpression": _SHARD_PROJECTION}}
        answer = await client.batch_get_item_decoded(_shards_read, RequestItems=request)
        found += answer.Responses.get(table, [])
    return found


async def read_counts(client: LeanDynamoDB, table: str, counter: str) -> Counts:
    """A counter's exact counts: the sum of its shards, read with one consistent Query."""
    undelivered = in_flight = failed = 0
    params = count_query(table, counter)
    while True:  # a counter has at most TRIGGERS_COUNTER_SHARDS small items: one answer
        response = await client.query_decoded(count_answer, **params)
        counts = response.counts()
        undelivered += counts.undelivered
        in_flight += counts.in_flight
        failed += counts.failed
        if response.LastEvaluatedKey is None:
            return Counts(undelivered, in_flight, failed)
        params["ExclusiveStartKey"] = response.LastEvaluatedKey


def counter_item(counter: str, shard: int, n: int) -> dict[str, Any]:
    """A whole shard item holding ``n`` (the migration's carried-over sum)."""
    return {**counter_key(counter, shard), "n": {"N": str(n)}}


def legacy_count(item: dict[str, Any]) -> tuple[str, int]:
    """A pre-0.2 counter item (one item per shard): its id and its count."""
    return item["counter_id"]["S"], int(item.get("n", {}).get("N", "0"))
