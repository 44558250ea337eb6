"""Which shard of an undelivered counter a write adds to.

A count is read with one consistent Query of the counter's item collection, which returns
only the shards that exist. So writes stay on shard 0 until they contend: an account whose
counter writes never collide keeps one item, and its count reads one small item. When a
transaction touching an account's counter is cancelled by a conflict, this process sends
that account's counter writes to a random shard for ``CONTENDED_FOR_S``: a busy account
spreads over ``TRIGGERS_COUNTER_SHARDS`` items, which concurrent transactions rarely share.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from shared.storage.layout import counter_key

# How long an account whose counter writes conflicted keeps writing to random shards: long
# enough to cover a burst, short enough that a quiet account goes back to one shard.
CONTENDED_FOR_S = 60.0
# Accounts remembered as contended, per process; the least recently marked go first.
CONTENDED_REMEMBERED = 4096
# Cancellation reasons of an item over its partition's throughput.
THROTTLE_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"})


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

    def cancelled(
        self, reasons: list[Any], accounts: Iterable[str], counters: Sequence[str | None] | None = None
    ) -> None:
        """A transaction writing these accounts' counters was cancelled for ``reasons``.

        ``counters`` names, item by item, the account whose counter the item updates (None
        for other items). A conflict spreads every account of the transaction; a throttled
        counter item spreads its own account (its one shard is over its partition's rate),
        or every account when the items are not named.
        """
        if any(r.get("Code") == "TransactionConflict" for r in reasons):
            self.contended(accounts)
        throttled = [i for i, r in enumerate(reasons) if r.get("Code") in THROTTLE_REASONS]
        if throttled and counters is None:
            self.contended(accounts)
        elif throttled and counters is not None:
            self.contended({a for i in throttled if i < len(counters) and (a := counters[i]) is not None})

    def contended(self, accounts: Iterable[str]) -> None:
        """These accounts' counter writes just conflicted with another transaction."""
        until = self._clock() + CONTENDED_FOR_S
        for account in accounts:
            self._contended[account] = until
            self._contended.move_to_end(account)
        while len(self._contended) > CONTENDED_REMEMBERED:
            self._contended.popitem(last=False)


def counter_add(table: str, counter: str, shard: int, delta: int) -> dict[str, Any]:
    """A transaction's update adding ``delta`` (negative to subtract) to one shard."""
    return {
        "TableName": table,
        "Key": counter_key(counter, shard),
        "UpdateExpression": "ADD n :d",
        "ExpressionAttributeValues": {":d": {"N": str(delta)}},
    }
