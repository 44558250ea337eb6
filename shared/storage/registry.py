"""An account's named consumers, as the inbox's ``/consumers`` routes and the operators' CLI
(``triggers consumers``) read and change them: one class, so both keep the same rules.

Creation and deletion each write one transaction on the consumers table: the consumer item
and the account's ``#account`` count move together, the count on condition that it stays
within ``consumers_per_account``. So concurrent creates never take an account past its limit,
and a deletion frees the name and the slot at once (the item moves to its deleted name, with
its clean-up job; ``shared.storage.consumers``). A cancelled transaction's reasons are read
by item: which condition failed says which refusal it is.

The ``default`` consumer is never stored: callers answer for it (``consumers.DEFAULT``).
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from shared.aws.dynamodb import LeanDynamoDB
from shared.errors import AppError, ConsumerExists, ConsumerLimitReached, NotFound
from shared.settings import Settings
from shared.storage import consumers
from shared.storage.consumers import Consumer, Job, Status
from shared.storage.counters import Counts, read_counts
from shared.storage.layout import counter_id
from shared.storage.transactions import Role, TransactionCancelled, TxItem, retrying, transact

_US = 1_000_000
NO_SUCH_CONSUMER = "No such consumer."


class _Part(enum.Enum):
    """What an item of a registry transaction writes: its cancellation reason says which refusal."""

    CONSUMER = "consumer"  # the consumer item under its name (put, or removed when deleting)
    MOVED = "moved"  # a deleted consumer's item under its moved name
    COUNT = "count"  # the account's #account count


_ROLES = {_Part.CONSUMER: Role.CONSUMER, _Part.MOVED: Role.CONSUMER, _Part.COUNT: Role.CONSUMER_COUNT}


# Module-level names for the types a method of ConsumerRegistry names: its ``list`` method
# hides the builtin inside the class.
_Items = list[dict[str, Any]]
_Transaction = list[TxItem[_Part]]


class Keep(enum.Enum):
    """``update``'s "leave the filter as it is" (None means every type)."""

    KEEP = "keep"


KEEP = Keep.KEEP


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class ConsumerRegistry:
    def __init__(self, client: LeanDynamoDB, settings: Settings, clock_us: Callable[[], int] = wall_clock_us) -> None:
        self._client = client
        self._table = settings.consumers_table
        self._counters = settings.counters_table
        self._limit = settings.consumers_per_account
        # A job waits until every writer's view holds the change, and every commit made
        # under an older view has landed (docs/architecture.md, "Consumers").
        self._job_delay_us = round((settings.consumer_view_s + settings.consumer_margin_s) * _US)
        self._clock_us = clock_us

    async def create(
        self,
        account_id: str,
        name: str,
        event_types: tuple[str, ...] | None,
        start_us: int | None,
        max_deliveries: int = consumers.DEFAULT_MAX_DELIVERIES,
    ) -> Consumer:
        """A new consumer (a new generation, so a partition of its own) with its backfill due.
        ``start_us`` None: now (``consumers.start_of_now`` of the creation's own instant).

        ``ConsumerExists`` if the name is taken, ``ConsumerLimitReached`` at the account's limit.
        """
        now_us = self._clock_us()
        consumer = Consumer(
            account_id=account_id,
            name=name,
            generation=consumers.new_generation(),
            event_types=event_types,
            start_us=consumers.start_of_now(now_us) if start_us is None else start_us,
            created_at_us=now_us,
            job=Job.BACKFILL,
            job_due_us=now_us + self._job_delay_us,
            walk_until_us=now_us + self._job_delay_us,
            max_deliveries=max_deliveries,
        )
        put = consumers.create_put(self._table, consumer)
        count = consumers.count_update(self._table, account_id, +1, self._limit)
        # The name before the limit: a name that exists is refused whatever the count.
        refusals = {
            _Part.CONSUMER: ConsumerExists("The account already has a consumer of this name."),
            _Part.COUNT: ConsumerLimitReached(
                f"The account has {self._limit} consumers, as many as it may have,"
                f" or {self._limit} deleted ones whose clean-up has not ended (a minute or so)."
            ),
        }
        await self._transact([_item(_Part.CONSUMER, "Put", put), _item(_Part.COUNT, "Update", count)], refusals)
        return consumer

    async def list(self, account_id: str) -> list[Consumer]:
        """The account's active consumers, by name (``default`` is not among them)."""
        items = await self._account_items(account_id)
        active = [c for c in consumers.consumers_of(items) if c.status is Status.ACTIVE]
        return sorted(active, key=lambda c: c.name)

    async def get(self, account_id: str, name: str) -> Consumer:
        """One active consumer, read consistently; ``NotFound`` for any other name."""
        answer = await self._client.get_item(**consumers.get_key(self._table, account_id, name))
        item = answer.get("Item")
        consumer = consumers.consumer_from_item(item) if item is not None else None
        if consumer is None or consumer.status is not Status.ACTIVE:
            raise NotFound(NO_SUCH_CONSUMER)
        return consumer

    async def update(
        self,
        account_id: str,
        name: str,
        event_types: tuple[str, ...] | Keep | None = KEEP,
        max_deliveries: int | None = None,
    ) -> Consumer:
        """Change a consumer's filter (for the events stored from then on, within the writers'
        view) and its ``max_deliveries``; ``KEEP`` and None leave each as it is."""
        consumer = await self.get(account_id, name)
        changed = replace(
            consumer,
            event_types=consumer.event_types if isinstance(event_types, Keep) else event_types,
            max_deliveries=consumer.max_deliveries if max_deliveries is None else max_deliveries,
        )
        update = {**consumers.settings_update(self._table, changed), "ReturnValues": "ALL_NEW"}
        try:
            answer = await self._client.update_item(**update)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":  # deleted meanwhile
                raise NotFound(NO_SUCH_CONSUMER) from None
            raise
        updated = consumers.consumer_from_item(dict(answer["Attributes"]))
        return updated if updated is not None else changed

    async def delete(self, account_id: str, name: str) -> None:
        """Move the consumer to its deleted name with its clean-up job due, and free its slot."""
        consumer = await self.get(account_id, name)
        deleting = replace(
            consumer,
            status=Status.DELETING,
            job=Job.CLEANUP,
            job_due_us=self._clock_us() + self._job_delay_us,
            job_after=None,
            job_owner=None,
            job_lease_until_us=None,
        )
        await self._transact(
            [
                _item(_Part.CONSUMER, "Delete", consumers.delete_active(self._table, consumer)),
                _item(_Part.MOVED, "Put", consumers.moved_put(self._table, deleting)),
                _item(_Part.COUNT, "Update", consumers.count_update(self._table, account_id, -1, self._limit)),
            ],
            # The generation read is gone (deleted meanwhile), or already moved: deleted once.
            {_Part.CONSUMER: NotFound(NO_SUCH_CONSUMER), _Part.MOVED: NotFound(NO_SUCH_CONSUMER)},
        )

    async def undelivered(self, partition: str, event_type: str | None = None) -> int:
        """The exact undelivered (available) count of a partition (a consumer's, or an account's own)."""
        return (await self.counts(partition, event_type)).undelivered

    async def counts(self, partition: str, event_type: str | None = None) -> Counts:
        """A partition's exact counts: available, in flight, failed."""
        return await read_counts(self._client, self._counters, counter_id(partition, event_type))

    async def _account_items(self, account_id: str) -> _Items:
        params: dict[str, Any] = consumers.view_query(self._table, account_id)
        items: _Items = []
        while True:
            answer = await self._client.query(**params)
            items += [dict(item) for item in answer.get("Items", [])]
            if "LastEvaluatedKey" not in answer:
                return items
            params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    async def _transact(self, items: _Transaction, refusals: dict[_Part, AppError]) -> None:
        """Write ``items`` at once, conflicts retried; the first failed condition, in the
        order of ``refusals``, raises its refusal."""

        async def attempt(pending: list[_Transaction]) -> list[_Transaction]:
            try:
                # One token per attempt: a repeat after a lost answer (the AWS client's retry)
                # is the same call, while a conflict's retry is a new one.
                await transact(self._client, pending[0], token=secrets.token_hex(16))
            except TransactionCancelled as cancelled:
                failed = {c.item.ref for c in cancelled.cancellations if c.condition_failed}
                for part, refusal in refusals.items():
                    if part in failed:
                        raise refusal from None
                return pending  # a conflict (another create or delete of the account): again
            return []

        if await retrying([items], attempt):
            raise TimeoutError("the consumers transaction kept conflicting")


def _item(part: _Part, operation: str, request: dict[str, Any]) -> TxItem[_Part]:
    return TxItem(_ROLES[part], {operation: request}, part)
