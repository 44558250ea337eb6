"""Copies of event items into named consumers' partitions, exactly once: the one class the
writer (for the events it stores) and the backfill job (for the events stored before the
writers knew the consumer) both write copies through.

For a group of copies, one TransactWriteItems call does, all or nothing:
- put each copy (``events.consumer_copy``) on condition that its id is not in that
  partition yet: whoever comes second (a redelivery, another writer, the backfill racing a
  writer) finds it ``ALREADY_COPIED``, and the counters move once;
- add the number of new copies to one shard of each partition's undelivered counter, and of
  each (partition, type)'s (``shared.storage.counters``).
Cancellation reasons are read by item (``shared.storage.transactions``); conflicts are
retried under the transactions' one policy. A commit that came later than a quarter of the
settle margin after its stamp moves its copies to a fresh position, and a copy met already
stored with a stale stamp moves too (``shared.storage.restamp``), exactly as the writer's
events do: a consumer paging forward never passes a copy stored late. The backfill moves only
the stale copies it made itself (``backfill``: marked so, its earlier attempts, whose answer
may have been lost): the others are the writers', settled by the writers, and moving them
would show them again to a consumer that has already paged past them.

Every copy gets its own outcome, keyed (partition, event id): ``COPIED``, ``ALREADY_COPIED``
(both settled), ``RETRY`` (conflicts persisted, a failed move), ``THROTTLED`` (its partition
was: the writer sends its event again in a message of its own, as it does a throttled event,
so a hot consumer never ages a message into the dead-letter queue),
``UNAVAILABLE`` (storage as a whole did not answer) or ``REJECTED`` (its source item cannot
be copied, or DynamoDB refuses the copy: found by halving a refused group).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from shared.aws.dynamodb import LeanDynamoDB
from shared.settings import Settings
from shared.storage.counters import ShardChooser, counter_updates, transaction_groups
from shared.storage.events import Placement, by_backfill, consumer_copy, event_put
from shared.storage.restamp import Restamper, Unsettled
from shared.storage.transactions import (
    INVALID,
    Role,
    TransactionCancelled,
    TxItem,
    retrying,
    transact,
    unavailable,
)

__all__ = ["Copy", "CopyOutcome", "CopyWriter"]

log = structlog.get_logger()

_ITEM_OVERHEAD_BYTES = 512  # keys, index keys, position, names: a generous bound


class CopyOutcome(enum.StrEnum):
    COPIED = "copied"  # new in the consumer's inbox
    ALREADY_COPIED = "already_copied"  # this very copy was made before (redelivery, a racing copier)
    RETRY = "retry"  # not copied now; safe to try again later
    THROTTLED = "throttled"  # its partition was throttled: try again later, apart from the others
    UNAVAILABLE = "unavailable"  # storage as a whole did not answer: wait for it
    REJECTED = "rejected"  # can never be copied as it is


SETTLED = frozenset({CopyOutcome.COPIED, CopyOutcome.ALREADY_COPIED})


@dataclass(frozen=True, slots=True)
class Copy:
    partition: str  # consumer.partition
    item: dict[str, Any]  # the source event item, as built by events.event_item or as stored

    @property
    def key(self) -> tuple[str, str]:
        return self.partition, str(self.item["event_id"]["S"])

    @property
    def event_type(self) -> str:
        return str(self.item["event_type"]["S"])


# One item of a copy transaction: its copy (None for counter updates).
_Item = TxItem[Copy | None]
_Results = dict[tuple[str, str], CopyOutcome]


class CopyWriter:
    def __init__(
        self,
        client: LeanDynamoDB,
        settings: Settings,
        *,
        clock_us: Callable[[], int] | None = None,
        monotonic_us: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        self._clock_us = clock_us or _wall_clock_us  # the copies' inbox position stamp
        # How long a commit took: never the wall clock, which NTP may step meanwhile.
        self._monotonic_us = monotonic_us or _monotonic_clock_us
        self._events_table = settings.events_table
        self._counters_table = settings.counters_table
        self._inbox_shards = settings.inbox_shards
        self._shards = ShardChooser(settings.counter_shards)
        self._restamper = Restamper(
            client, settings.events_table, settings.inbox_settle_ms, self._clock_us, self._monotonic_us
        )

    async def copy(self, copies: list[Copy], *, backfill: bool = False) -> dict[tuple[str, str], CopyOutcome]:
        """Copy each item into its partition exactly once; the outcome of each, by (partition, event id).

        A repeated (partition, event id) is copied once (a transaction may not touch one item
        twice) and has that copy's outcome. With ``backfill``, the copies are marked as the
        backfill's, and a copy met already made moves (if stale) only if it carries that mark:
        an earlier attempt of the backfill, never a writer's settled copy.
        """
        results: _Results = {}
        pending = _unique(_buildable(copies, results))
        down = False
        for group in transaction_groups(pending, gains=_gains, size=_size, items_each=1):
            if down:  # storage as a whole is unavailable: the rest would only fail the same way
                results.update(dict.fromkeys((c.key for c in group), CopyOutcome.UNAVAILABLE))
                continue
            await self._write_group(group, results, backfill)
            down = any(results[c.key] is CopyOutcome.UNAVAILABLE for c in group)
        return results

    async def _write_group(self, group: list[Copy], results: _Results, backfill: bool) -> None:
        # Each attempt leaves a provisional outcome on what it returns as pending, so what is
        # still pending when the attempts run out already says why.
        await retrying(group, lambda pending: self._attempt(pending, results, backfill))

    async def _attempt(self, pending: list[Copy], results: _Results, backfill: bool) -> list[Copy]:
        items = self._transaction(pending, self._clock_us(), backfill)  # one stamp for the attempt
        started_us = self._monotonic_us()
        try:
            await transact(self._client, items)
        except TransactionCancelled as cancelled:
            self._shards.cancelled(cancelled.cancellations, {c.partition for c in pending})
            return await self._resolve(pending, cancelled, results, backfill)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ValidationException" and not unavailable(exc):
                await self._bisect(pending, results, backfill)
                return []
            _unsettled(pending, results, exc)
            return []
        except BotoCoreError as exc:
            _unsettled(pending, results, exc)
            return []
        results.update(dict.fromkeys((c.key for c in pending), CopyOutcome.COPIED))
        if self._restamper.late(self._monotonic_us() - started_us):
            written = (i.request["Put"]["Item"] for i in items if i.role is Role.COPY_PUT)
            _settle(await self._restamper.move_written(written, "copy_late_commit"), results)
        return []

    async def _resolve(
        self, pending: list[Copy], cancelled: TransactionCancelled[Copy | None], results: _Results, backfill: bool
    ) -> list[Copy]:
        """Settle the copies whose conditions failed; return those to write again."""
        put = {c.item.ref.key: c for c in cancelled.of(Role.COPY_PUT) if c.item.ref is not None}
        # A throttled item concerns its partition alone: its copies wait for their message's
        # next delivery (or the job's next step), the others are written again.
        throttled = {c.item.account for c in cancelled.cancellations if c.throttled}
        again, stored = [], []
        for copy in pending:
            reason = put.get(copy.key)
            if reason is not None and reason.condition_failed:
                results[copy.key] = CopyOutcome.ALREADY_COPIED
                if reason.old is not None and (not backfill or by_backfill(reason.old)):
                    stored.append(reason.old)
            elif reason is not None and reason.code == INVALID:
                log.warning("copy_rejected", error=reason.message or "invalid item")
                results[copy.key] = CopyOutcome.REJECTED
            elif copy.partition in throttled:
                results[copy.key] = CopyOutcome.THROTTLED
            else:
                again.append(copy)
                results[copy.key] = CopyOutcome.RETRY  # provisional: conflicts persisted
        _settle(await self._restamper.move_stale(stored, "copy_already_copied"), results)
        return again

    async def _bisect(self, group: list[Copy], results: _Results, backfill: bool) -> None:
        """DynamoDB refused the whole call, naming no item: find the bad copy by halving."""
        if len(group) == 1:
            log.warning("copy_rejected", error="ValidationException")
            results[group[0].key] = CopyOutcome.REJECTED
            return
        half = len(group) // 2
        for part in (group[:half], group[half:]):
            await self._write_group(part, results, backfill)

    def _transaction(self, copies: list[Copy], stamp_us: int, backfill: bool) -> list[_Item]:
        """The attempt's items: every copy carries the attempt's one stamp."""
        items: list[_Item] = []
        for copy in copies:
            made = consumer_copy(copy.item, copy.partition, self._inbox_shards, stamp_us, backfill=backfill)
            put = event_put(self._events_table, made)
            items.append(TxItem(Role.COPY_PUT, {"Put": put}, copy, copy.partition))
        gained = [(c.partition, c.event_type) for c in copies]
        return items + counter_updates(self._counters_table, self._shards, gained)


def _wall_clock_us() -> int:
    return time.time_ns() // 1000


def _monotonic_clock_us() -> int:
    return time.monotonic_ns() // 1000


def _unique(copies: list[Copy]) -> list[Copy]:
    seen: dict[tuple[str, str], Copy] = {}
    for copy in copies:
        seen.setdefault(copy.key, copy)
    return list(seen.values())


def _buildable(copies: list[Copy], results: _Results) -> list[Copy]:
    """The copies whose source item can be copied; the others are rejected alone."""
    good = []
    for copy in copies:
        try:
            consumer_copy(copy.item, copy.partition, 1, 0)
        except (KeyError, TypeError) as exc:
            log.warning("copy_rejected", error=f"source item unusable: {type(exc).__name__}")
            results[copy.partition, str(copy.item.get("event_id", {}).get("S", ""))] = CopyOutcome.REJECTED
            continue
        good.append(copy)
    return good


def _gains(copy: Copy) -> tuple[str, str]:
    return copy.partition, copy.event_type


def _size(copy: Copy) -> int:
    payload = str(copy.item["payload"]["S"])
    return (len(payload) if payload.isascii() else len(payload.encode())) + _ITEM_OVERHEAD_BYTES


def _unsettled(copies: list[Copy], results: _Results, exc: Exception) -> None:
    outcome = CopyOutcome.UNAVAILABLE if unavailable(exc) else CopyOutcome.RETRY
    code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
    log.warning("copy_failed", error=code, copies=len(copies))
    results.update(dict.fromkeys((c.key for c in copies), outcome))


def _settle(failed: list[tuple[Placement, Unsettled]], results: _Results) -> None:
    """Copies whose move failed are not settled: their message (or job step) must come back."""
    for place, failure in failed:
        results[place.account_id, place.event_id] = (
            CopyOutcome.UNAVAILABLE if failure.unavailable else CopyOutcome.RETRY
        )
