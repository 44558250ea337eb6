"""Consumer jobs, run by every inbox process: a new consumer's backfill and a deleted one's
clean-up (docs/architecture.md, "Consumers", "Where jobs run").

Every ``job_poll_s`` (jittered, so processes started together drift apart) a process reads
the due jobs (``consumers.jobs_query``, earliest due first; a leased job is due again when
its lease ends, so running jobs never crowd out waiting ones), takes the lease of one
(``consumers.job_lease``, owner: a random id of this process) and runs it in steps of at
most a page of items, at most ``backfill_events_per_s`` items a second. Each step saves its
place and renews the lease in one conditional update (``consumers.job_progress``). A save
refused by its condition means the lease is lost (another process took it after it expired,
or the consumer moved): the job stops here, and whoever holds it resumes from the place
saved last. A step that fails, or must wait, gives the job back (``consumers.job_release``),
due again after ``STUCK_WAIT_S``. A step done twice writes nothing twice: copies are
conditional puts, and deleting a deleted item does nothing.

Backfill: walk the account's items from ``id_floor(start)`` to the consumer's
``walk_until_us`` (``events.walk_query``; the writers copy what was received later) and copy
each event the consumer takes through ``CopyWriter``, the writers' own copier. The place
never passes a copy that did not settle, except one storage refuses as it is (``REJECTED``:
logged and passed, so one event never stalls the rest). Clean-up: delete the partition's
copies a page at a time, each page after the counters of the types it holds (so an
interrupted clean-up forgets no type), then the partition's counter and the moved item.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import ClientError

from shared.aws.dynamodb import LeanDynamoDB
from shared.contract.ids import id_floor
from shared.retry import BackoffPolicy, retry_pending
from shared.settings import Settings
from shared.storage import consumers, events
from shared.storage.consumers import Consumer, Job
from shared.storage.copies import Copy, CopyOutcome, CopyWriter
from shared.storage.counters import shard_keys_query
from shared.storage.layout import counter_id
from shared.storage.transactions import Role, TransactionCancelled, TxItem, transact

log = structlog.get_logger()

LEASE_S = 30.0  # a process that died holds its job this long at most
STEP_ITEMS = 200  # items a step reads: one Query, one or two copy transactions
CLOSE_WAIT_S = 5.0  # how long close() waits for the cancelled step to unwind
# A job whose copy did not settle (a throttled partition, storage away) is given back, due
# again after this: any process may take it then, and other jobs run meanwhile.
STUCK_WAIT_S = 2.0
BATCH_WRITE_MAX = 25  # DynamoDB's limit of one BatchWriteItem
# Deletes a BatchWriteItem left unprocessed are sent again a few times within the step; what
# is still left fails the step, and the next poll starts it again.
BATCH_WRITE_RETRY = BackoffPolicy("batch_write", base_s=0.01, cap_s=0.5, attempts=5)
_SETTLED = frozenset({CopyOutcome.COPIED, CopyOutcome.ALREADY_COPIED})
_CONDITION_FAILED = "ConditionalCheckFailedException"


@dataclass(frozen=True, slots=True)
class _Step:
    """What one step did."""

    place: str | None  # the last id handled so far (the place to save)
    read: int  # items read: what the rate limit counts
    walked: int  # events passed (aliases aside)
    copied: int  # events the consumer now has from this step (copied here, or already by a writer)
    end: bool  # nothing is left past the place
    stuck: bool = False  # a copy did not settle: the place stops before it, a later poll retries


_StepFn = Callable[[Consumer, str | None], Awaitable[_Step]]


class JobRunner:
    """Runs one due consumer job at a time, in the background of an inbox process."""

    def __init__(
        self,
        client: LeanDynamoDB,
        settings: Settings,
        *,
        lease_s: float = LEASE_S,
        copier: CopyWriter | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._copier = copier or CopyWriter(client, settings)
        self._owner = secrets.token_hex(8)
        self._lease_us = int(lease_s * 1_000_000)
        self._page = max(1, min(STEP_ITEMS, settings.backfill_events_per_s))
        self._task: asyncio.Task[None] | None = None

    @property
    def owner(self) -> str:
        return self._owner

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._poll_forever(), name="consumer-jobs")

    async def close(self) -> None:
        """Stop within ``CLOSE_WAIT_S``: the running step is cancelled, the place saved so far stands."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=CLOSE_WAIT_S)
        if not done:
            log.warning("consumer_jobs_close_timed_out", waited_s=CLOSE_WAIT_S)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.job_poll_s * random.uniform(0.5, 1.5))
            try:
                await self.run_due()
            except Exception as exc:  # noqa: BLE001 - storage may be down: the next poll tries again
                log.warning("consumer_jobs_poll_failed", error=_code(exc))

    async def run_due(self) -> bool:
        """One poll: take the lease of one due job and run it until it ends, is stuck, or
        its lease is lost. Whether there was a job to take."""
        now_us = _now_us()
        answer = await self._client.query(**consumers.jobs_query(self._settings.consumers_table, now_us))
        for item in answer.get("Items", []):
            candidate = consumers.consumer_from_item(item)
            if candidate is None or candidate.job is None or self._leased_elsewhere(candidate, now_us):
                continue
            try:
                leased = await self._lease(candidate, now_us)
            except Exception as exc:  # noqa: BLE001 - one job's refusal must not hide the others
                log.warning("consumer_job_lease_failed", account_id=candidate.account_id, error=_code(exc))
                continue
            if leased is not None:
                await self._run(leased)
                return True
        return False

    def _leased_elsewhere(self, job: Consumer, now_us: int) -> bool:
        # The index is read eventually consistently: this saves a refused write, the lease decides.
        return job.job_owner not in (None, self._owner) and (job.job_lease_until_us or 0) >= now_us

    async def _lease(self, job: Consumer, now_us: int) -> Consumer | None:
        """The job as stored once leased (its saved place), or None if another holds it."""
        request = consumers.job_lease(self._settings.consumers_table, job, self._owner, now_us, now_us + self._lease_us)
        try:
            answer = await self._client.update_item(**request)
        except ClientError as exc:
            if _code(exc) == _CONDITION_FAILED:
                return None
            raise
        return consumers.consumer_from_item(answer["Attributes"])

    async def _run(self, job: Consumer) -> None:
        step_of: _StepFn = (
            self._backfill_step
            if job.job is Job.BACKFILL
            else functools.partial(self._cleanup_step, cleared=set())  # types whose counters are gone
        )
        context = {"job": str(job.job), "account_id": job.account_id, "consumer": job.name}
        place = job.job_after
        try:
            while True:
                started = time.monotonic()
                step = await step_of(job, place)
                log.info("consumer_job_step", **context, walked=step.walked, copied=step.copied, end=step.end)
                if step.place is not None and step.place != place and not await self._save(job, step.place, step):
                    log.info("consumer_job_lease_lost", **context)
                    return
                if step.stuck:
                    log.warning("consumer_job_waits", **context, wait_s=STUCK_WAIT_S)
                    await self._release(job)
                    return
                if step.end:
                    await self._finish(job, context)
                    return
                place = step.place
                await self._pace(started, step.read)
        except Exception as exc:  # noqa: BLE001 - the place saved last stands; given back, it resumes soon
            log.warning("consumer_job_step_failed", **context, error=_code(exc))
            with contextlib.suppress(Exception):  # storage may be down: then the lease runs out
                await self._release(job)

    async def _pace(self, started: float, read: int) -> None:
        """Hold the job to its rate: ``read`` items take at least ``read / rate`` seconds."""
        rest = read / self._settings.backfill_events_per_s - (time.monotonic() - started)
        if rest > 0:
            await asyncio.sleep(rest)

    async def _save(self, job: Consumer, place: str, step: _Step) -> bool:
        """Save the step's place and counts, renewing the lease; False when the lease is lost."""
        request = consumers.job_progress(
            self._settings.consumers_table,
            job,
            self._owner,
            after=place,
            walked=step.walked,
            delivered=step.copied,
            until_us=_now_us() + self._lease_us,
        )
        return await self._conditional(self._client.update_item(**request))

    async def _release(self, job: Consumer) -> None:
        due_us = _now_us() + int(STUCK_WAIT_S * 1_000_000)
        await self._conditional(
            self._client.update_item(**consumers.job_release(self._settings.consumers_table, job, self._owner, due_us))
        )

    async def _finish(self, job: Consumer, context: dict[str, str]) -> None:
        table = self._settings.consumers_table
        if job.job is Job.BACKFILL:
            ended = await self._conditional(self._client.update_item(**consumers.job_done(table, job, self._owner)))
            outcome = "consumer_job_done" if ended else "consumer_job_lease_lost"
        else:
            await self._delete_counter(counter_id(job.partition))
            outcome = await self._end_cleanup(job)
        log.info(outcome, **context)

    async def _end_cleanup(self, job: Consumer) -> str:
        """Remove the moved item and take it from the account's deletions waiting, at once;
        what came of it (the log line's event)."""
        table = self._settings.consumers_table
        items: list[TxItem[None]] = [
            TxItem(Role.CONSUMER, {"Delete": consumers.cleanup_done(table, job, self._owner)}, None),
            TxItem(Role.CONSUMER_COUNT, {"Update": consumers.cleanup_count_update(table, job.account_id)}, None),
        ]
        try:
            await transact(self._client, items, token=secrets.token_hex(16))
        except TransactionCancelled as cancelled:
            if any(c.condition_failed for c in cancelled.cancellations):
                return "consumer_job_lease_lost"
            await self._release(job)  # a creation or deletion met on the account item: again soon
            return "consumer_job_waits"
        return "consumer_job_done"

    @staticmethod
    async def _conditional(call: Awaitable[object]) -> bool:
        try:
            await call
        except ClientError as exc:
            if _code(exc) == _CONDITION_FAILED:
                return False
            raise
        return True

    # Backfill

    async def _backfill_step(self, job: Consumer, place: str | None) -> _Step:
        query = events.walk_query(
            self._settings.events_table,
            job.account_id,
            floor=id_floor(job.start_us // 1000),
            ceiling=id_floor(self._walk_until_us(job) // 1000 + 1),  # that millisecond whole
            after=place,
            limit=self._page,
        )
        if query is None:  # a start after the writers knew the consumer: they copy everything
            return _Step(place, 0, 0, 0, end=True)
        answer = await self._client.query(**query)
        items = events.past(list(answer.get("Items", [])), place)
        walk = [events.walked(item) for item in items]
        wanted = [Copy(job.partition, item) for item, seen in zip(items, walk, strict=True) if _takes(job, seen)]
        outcomes = await self._copier.copy(wanted, backfill=True) if wanted else {}
        walked = copied = 0
        for seen in walk:
            if _takes(job, seen):
                outcome = outcomes.get((job.partition, seen.event_id))
                if outcome is CopyOutcome.REJECTED:
                    # Storage refuses this copy as it is: waiting would stall the consumer for good.
                    log.error("consumer_copy_rejected", account_id=job.account_id, event_id=seen.event_id)
                elif outcome not in _SETTLED:
                    return _Step(place, len(items), walked, copied, end=False, stuck=True)
                else:
                    copied += 1
            if seen.event_type is not None:
                walked += 1
            place = seen.event_id
        return _Step(place, len(items), walked, copied, end="LastEvaluatedKey" not in answer)

    def _walk_until_us(self, job: Consumer) -> int:
        """From this instant of receipt on, every event reaches the writers after each has seen
        the consumer and every commit made under an older view has landed: the writers copy
        those, and the walk stops here (so it ends, however fast the account receives)."""
        if job.walk_until_us is not None:
            return job.walk_until_us
        delay_s = self._settings.consumer_view_s + self._settings.consumer_margin_s
        return job.created_at_us + round(delay_s * 1_000_000)

    # Clean-up

    async def _cleanup_step(self, job: Consumer, place: str | None, *, cleared: set[str]) -> _Step:
        query = events.copy_keys_query(self._settings.events_table, job.partition, self._page)
        answer = await self._client.query(**query)
        walk = [events.walked(item) for item in answer.get("Items", [])]
        # The counters of the page's types before its copies: a step cut short between the two
        # finds the copies again next time, while counters whose copies were gone would be
        # found by nothing.
        for event_type in sorted({s.event_type for s in walk if s.event_type is not None} - cleared):
            await self._delete_counter(counter_id(job.partition, event_type))
            cleared.add(event_type)
        deletes = [events.delete_request(job.partition, seen.event_id) for seen in walk]
        await self._delete_all(self._settings.events_table, deletes)
        place = walk[-1].event_id if walk else place
        return _Step(place, len(walk), len(walk), 0, end="LastEvaluatedKey" not in answer)

    async def _delete_counter(self, counter: str) -> None:
        """Delete every shard of a counter that exists."""
        answer = await self._client.query(**shard_keys_query(self._settings.counters_table, counter))
        keys = answer.get("Items", [])
        await self._delete_all(self._settings.counters_table, [{"DeleteRequest": {"Key": key}} for key in keys])

    async def _delete_all(self, table: str, requests: list[dict[str, Any]]) -> None:
        for start in range(0, len(requests), BATCH_WRITE_MAX):
            chunk = requests[start : start + BATCH_WRITE_MAX]
            left = await retry_pending(BATCH_WRITE_RETRY, chunk, functools.partial(self._batch_write, table))
            if left:
                raise _Unfinished(f"{len(left)} deletes left unprocessed")

    async def _batch_write(self, table: str, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answer = await self._client.admin.batch_write_item(RequestItems={table: requests})  # type: ignore[dict-item]
        return list(answer.get("UnprocessedItems", {}).get(table, []))  # type: ignore[arg-type]


class _Unfinished(Exception):
    """A step could not finish its deletes: it fails, and the next poll does it again."""


def _takes(job: Consumer, seen: events.Walked) -> bool:
    return seen.event_type is not None and job.takes(seen.event_type, seen.received_at_us)


def _now_us() -> int:
    return time.time_ns() // 1000


def _code(exc: Exception) -> str:
    return str(exc.response["Error"]["Code"]) if isinstance(exc, ClientError) else type(exc).__name__
