"""Consumer jobs on DynamoDB Local: a backfill copies every matching event once (from the
earliest, or from a time), resumes where an interrupted run saved its place, never passes a
copy that did not settle, and stops when its lease is taken; a clean-up removes a deleted
consumer's copies, counters and item, and nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest

from inbox_api.jobs import CLOSE_WAIT_S, JobRunner
from inbox_api.store import InboxStore
from shared.aws.clients import AwsClients, open_clients
from shared.aws.dynamodb import LeanDynamoDB
from shared.contract.envelope import QueuedEvent
from shared.keys.admin import new_account_id
from shared.settings import Settings
from shared.storage import consumers, events
from shared.storage.consumers import Consumer, Job
from shared.storage.copies import Copy, CopyOutcome, CopyWriter
from shared.storage.counters import counter_add
from shared.storage.layout import counter_id
from shared.storage.registry import ConsumerRegistry
from tests.conftest import Stack
from tests.helpers import queued_event

_serial = itertools.count()
_US = 1_000_000
DEADLINE_S = 30.0
TYPES = ("order.created", "order.a.b", "order", "user.signed_up")


@pytest.fixture
async def clients(dynamodb_local: Stack) -> AsyncIterator[AwsClients]:
    async with open_clients(dynamodb_local.settings) as opened:
        yield opened


def _settings(stack: Stack, events_per_s: int = 10_000) -> Settings:
    # Jobs due at once (the registry adds view + margin to the creation time), looked for often.
    return msgspec.structs.replace(
        stack.settings,
        consumer_view_s=0.001,
        consumer_margin_s=0.0,
        job_poll_s=0.05,
        backfill_events_per_s=events_per_s,
    )


def _events(account: str, count: int, *, first_us: int, step_us: int = 1000) -> list[QueuedEvent]:
    return [queued_event(account, TYPES[n % len(TYPES)], {"n": n}, at_us=first_us + n * step_us) for n in range(count)]


async def _store(client: LeanDynamoDB, settings: Settings, stored: list[QueuedEvent]) -> None:
    """The events as the writer stores them (base-table items; no counters: the walk reads items)."""
    table = settings.events_table
    for start in range(0, len(stored), 25):
        chunk = stored[start : start + 25]
        await asyncio.gather(*(client.put_item(**events.event_put(table, events.event_item(e))) for e in chunk))


async def _alias(client: LeanDynamoDB, settings: Settings, duplicate: QueuedEvent, original: QueuedEvent) -> None:
    await client.put_item(**events.alias_put(settings.events_table, duplicate, original.event_id))


async def _create(
    client: LeanDynamoDB, settings: Settings, account: str, types: tuple[str, ...] | None = None, start_us: int = 0
) -> Consumer:
    return await ConsumerRegistry(client, settings).create(account, f"c{next(_serial)}", types, start_us)


async def _stored(client: LeanDynamoDB, settings: Settings, consumer: Consumer) -> Consumer | None:
    key = consumers.get_key(settings.consumers_table, consumer.account_id, consumer.stored_name)
    item = (await client.get_item(**key)).get("Item")
    return consumers.consumer_from_item(dict(item)) if item is not None else None


async def _job_ended(client: LeanDynamoDB, settings: Settings, consumer: Consumer) -> bool:
    stored = await _stored(client, settings, consumer)
    return stored is None or stored.job is None


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.02)


async def _ids(client: LeanDynamoDB, settings: Settings, partition: str) -> list[str]:
    """Every item id of a partition of the events table, read consistently."""
    params: dict[str, Any] = {
        "TableName": settings.events_table,
        "KeyConditionExpression": "account_id = :p",
        "ExpressionAttributeValues": {":p": {"S": partition}},
        "ProjectionExpression": "event_id",
        "ConsistentRead": True,
    }
    ids: list[str] = []
    while True:
        answer = await client.query(**params)
        ids += [item["event_id"]["S"] for item in answer.get("Items", [])]
        if "LastEvaluatedKey" not in answer:
            return ids
        params["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


async def _counter_items(client: LeanDynamoDB, settings: Settings, counter: str) -> int:
    answer = await client.query(
        TableName=settings.counters_table,
        KeyConditionExpression="counter_id = :c",
        ExpressionAttributeValues={":c": {"S": counter}},
        ConsistentRead=True,
    )
    return len(answer.get("Items", []))


async def _counts(client: LeanDynamoDB, settings: Settings, partition: str) -> dict[str | None, int]:
    inbox = InboxStore(client, settings)
    return {t: await inbox.count(partition, t) for t in (None, *TYPES)}


def _expected_counts(taken: list[QueuedEvent]) -> dict[str | None, int]:
    return {None: len(taken), **{t: sum(e.event_type == t for e in taken) for t in TYPES}}


@contextlib.asynccontextmanager
async def _running(*runners: JobRunner) -> AsyncIterator[None]:
    for runner in runners:
        await runner.start()
    try:
        yield
    finally:
        for runner in runners:
            await runner.close()


class _CountingCopier(CopyWriter):
    """The real copier, recording what each call was asked to copy."""

    def __init__(self, client: LeanDynamoDB, settings: Settings) -> None:
        super().__init__(client, settings)
        self.calls: list[list[str]] = []

    async def copy(self, copies: list[Copy], *, backfill: bool = False) -> dict[tuple[str, str], CopyOutcome]:
        self.calls.append([c.key[1] for c in copies])
        return await super().copy(copies, backfill=backfill)


async def test_a_backfill_from_the_earliest_copies_every_matching_event_once_with_exact_counts(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    settings = _settings(dynamodb_local)
    client = clients.dynamodb
    account, stranger = new_account_id(), new_account_id()
    stored = _events(account, 450, first_us=1_600_000_000 * _US)  # three pages and a bit
    await _store(client, settings, [*stored, *_events(stranger, 5, first_us=1_600_000_000 * _US)])
    duplicate = queued_event(account, "order.created", {"dup": True})
    await _alias(client, settings, duplicate, stored[0])
    consumer = await _create(client, settings, account, ("order.*",))
    taken = [e for e in stored if e.event_type.startswith("order.")]

    async with _running(JobRunner(client, settings)):
        await _until(lambda: _job_ended(client, settings, consumer), "the backfill ends")

    assert sorted(await _ids(client, settings, consumer.partition)) == sorted(e.event_id for e in taken)
    assert await _counts(client, settings, consumer.partition) == _expected_counts(taken)
    done = await _stored(client, settings, consumer)
    assert done is not None
    assert (done.walked, done.delivered, done.job_due_us) == (len(stored), len(taken), None)


async def test_a_backfill_from_a_time_copies_only_the_events_received_from_it(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    settings = _settings(dynamodb_local)
    client = clients.dynamodb
    account = new_account_id()
    start_us = 1_650_000_000 * _US + 500  # 500 us into its millisecond
    before = _events(account, 30, first_us=start_us - 30_000)
    same_ms_earlier = queued_event(account, "order", {"early": True}, at_us=start_us - 400)  # id at the floor
    at_start = queued_event(account, "order", {"at": True}, at_us=start_us)
    after = _events(account, 30, first_us=start_us + 1000)
    await _store(client, settings, [*before, same_ms_earlier, at_start, *after])
    consumer = await _create(client, settings, account, None, start_us)

    async with _running(JobRunner(client, settings)):
        await _until(lambda: _job_ended(client, settings, consumer), "the backfill ends")

    taken = [at_start, *after]
    assert sorted(await _ids(client, settings, consumer.partition)) == sorted(e.event_id for e in taken)
    assert await _counts(client, settings, consumer.partition) == _expected_counts(taken)
    done = await _stored(client, settings, consumer)
    assert done is not None
    # The walk starts at the start's millisecond: it reads the one event before the start in it.
    assert (done.walked, done.delivered) == (len(taken) + 1, len(taken))


async def test_a_backfill_stops_at_the_events_the_writers_copy_themselves(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    # Events received after the writers' view held the consumer (here: 1 ms after its creation)
    # are the writers' to copy: a walk that went on would never end on a busy account.
    settings = _settings(dynamodb_local, events_per_s=10)  # pages of 10
    client = clients.dynamodb
    account = new_account_id()
    older = _events(account, 25, first_us=1_600_000_000 * _US)
    consumer = await _create(client, settings, account)
    newer = _events(account, 15, first_us=consumer.created_at_us + _US)
    await _store(client, settings, [*older, *newer])

    async with _running(JobRunner(client, settings)):
        await _until(lambda: _job_ended(client, settings, consumer), "the backfill ends")

    assert sorted(await _ids(client, settings, consumer.partition)) == sorted(e.event_id for e in older)
    done = await _stored(client, settings, consumer)
    assert done is not None
    assert (done.walked, done.delivered) == (len(older), len(older))


async def test_a_backfill_with_a_start_after_the_writers_knew_the_consumer_copies_nothing(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    settings = _settings(dynamodb_local)
    client = clients.dynamodb
    account = new_account_id()
    later_us = time.time_ns() // 1000 + 3600 * _US
    await _store(client, settings, _events(account, 5, first_us=later_us))
    consumer = await _create(client, settings, account, None, later_us)

    async with _running(JobRunner(client, settings)):
        await _until(lambda: _job_ended(client, settings, consumer), "the backfill ends")

    assert await _ids(client, settings, consumer.partition) == []


async def test_an_interrupted_backfill_resumes_from_its_place_and_copies_nothing_twice(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    settings = _settings(dynamodb_local, events_per_s=20)  # steps of 20 events, one a second
    client = clients.dynamodb
    account = new_account_id()
    stored = _events(account, 100, first_us=1_600_000_000 * _US)
    await _store(client, settings, stored)
    consumer = await _create(client, settings, account)
    first = JobRunner(client, settings, lease_s=1.0)

    async def some_progress() -> bool:
        now = await _stored(client, settings, consumer)
        return now is not None and now.walked >= 20

    await first.start()
    await _until(some_progress, "a first step is saved")
    closing = time.monotonic()
    await first.close()
    assert time.monotonic() - closing < CLOSE_WAIT_S
    interrupted = await _stored(client, settings, consumer)
    assert interrupted is not None
    assert interrupted.job is Job.BACKFILL
    assert interrupted.job_owner == first.owner
    assert 20 <= interrupted.walked < len(stored)

    second = JobRunner(client, settings)
    async with _running(second):
        await _until(lambda: _job_ended(client, settings, consumer), "the second runner ends the backfill")

    done = await _stored(client, settings, consumer)
    assert done is not None
    assert (done.walked, done.delivered) == (len(stored), len(stored))  # nothing walked twice
    assert sorted(await _ids(client, settings, consumer.partition)) == sorted(e.event_id for e in stored)
    assert await _counts(client, settings, consumer.partition) == _expected_counts(stored)


async def test_a_runner_whose_lease_was_taken_stops_at_its_next_step(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    settings = _settings(dynamodb_local, events_per_s=10)  # steps of 10 events, one a second: 10 s in all
    client = clients.dynamodb
    account = new_account_id()
    stored = _events(account, 100, first_us=1_600_000_000 * _US)
    await _store(client, settings, stored)
    consumer = await _create(client, settings, account)
    copier = _CountingCopier(client, settings)
    runner = JobRunner(client, settings, copier=copier)

    async def saved_once() -> bool:
        now = await _stored(client, settings, consumer)
        return now is not None and now.walked >= 10

    running = asyncio.create_task(_run_until(runner, saved_once))
    await _until(saved_once, "a first step is saved")
    # Another process takes the job, as it may once the lease has expired.
    taken = await _stored(client, settings, consumer)
    assert taken is not None
    far_us = time.time_ns() // 1000 + 3600 * _US
    await client.update_item(**consumers.job_lease(settings.consumers_table, taken, "other", far_us, far_us))
    calls_then = len(copier.calls)

    await asyncio.wait_for(running, timeout=5.0)  # well before the 9 s the rest of the walk takes

    assert len(copier.calls) <= calls_then + 1  # at most the step under way
    after = await _stored(client, settings, consumer)
    assert after is not None
    assert (after.job_owner, after.job_after, after.walked) == ("other", taken.job_after, taken.walked)


async def _run_until(runner: JobRunner, ran: Callable[[], Awaitable[bool]]) -> None:
    """Polls of ``runner`` until one has run the job ``ran`` tells of (others' jobs may be due too)."""
    deadline = time.monotonic() + DEADLINE_S
    while not (await runner.run_due() and await ran()):
        if time.monotonic() > deadline:
            raise AssertionError(f"the job was not run within {DEADLINE_S} s")
        await asyncio.sleep(0.02)


async def test_jobs_others_are_running_do_not_hide_a_waiting_one(dynamodb_local: Stack, clients: AwsClients) -> None:
    # More running jobs than one look for due jobs reads: the waiting one is still found.
    settings = _settings(dynamodb_local)
    client = clients.dynamodb
    account = new_account_id()
    await _store(client, settings, _events(account, 5, first_us=1_600_000_000 * _US))
    now_us = time.time_ns() // 1000
    for _ in range(12):
        running = await _create(client, settings, account)
        lease = consumers.job_lease(settings.consumers_table, running, "elsewhere", now_us, now_us + 120 * _US)
        await client.update_item(**lease)
    waiting = await _create(client, settings, account)

    await _run_until(JobRunner(client, settings), lambda: _job_ended(client, settings, waiting))

    assert len(await _ids(client, settings, waiting.partition)) == 5


async def test_two_runners_at_once_copy_each_event_once(dynamodb_local: Stack, clients: AwsClients) -> None:
    settings = _settings(dynamodb_local, events_per_s=500)
    client = clients.dynamodb
    account = new_account_id()
    stored = _events(account, 600, first_us=1_600_000_000 * _US)
    await _store(client, settings, stored)
    made = [await _create(client, settings, account, types) for types in (None, ("order.*",), ("user.signed_up",))]

    async def all_ended() -> bool:
        return all([await _job_ended(client, settings, c) for c in made])

    async with _running(JobRunner(client, settings), JobRunner(client, settings)):
        await _until(all_ended, "every backfill ends")

    for consumer in made:
        taken = [e for e in stored if consumer.takes(e.event_type, e.received_at_us)]
        ids = await _ids(client, settings, consumer.partition)
        assert sorted(ids) == sorted(e.event_id for e in taken)
        assert await _counts(client, settings, consumer.partition) == _expected_counts(taken)
        done = await _stored(client, settings, consumer)
        assert done is not None
        assert (done.walked, done.delivered) == (len(stored), len(taken))


class _FlakyCopier(CopyWriter):
    """The real copier, except that one event's copy answers ``outcome`` the first ``times`` times."""

    def __init__(
        self,
        client: LeanDynamoDB,
        settings: Settings,
        event_id: str,
        times: int,
        outcome: CopyOutcome = CopyOutcome.RETRY,
    ) -> None:
        super().__init__(client, settings)
        self._event_id, self._left, self._outcome = event_id, times, outcome

    async def copy(self, copies: list[Copy], *, backfill: bool = False) -> dict[tuple[str, str], CopyOutcome]:
        flaky = [c for c in copies if c.key[1] == self._event_id]
        if not flaky or self._left == 0:
            return await super().copy(copies, backfill=backfill)
        self._left -= 1
        others = [c for c in copies if c.key[1] != self._event_id]
        results = await super().copy(others, backfill=backfill)
        return {**results, flaky[0].key: self._outcome}


async def test_a_copy_that_did_not_settle_holds_the_place_until_it_does(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    settings = _settings(dynamodb_local)
    client = clients.dynamodb
    account = new_account_id()
    stored = _events(account, 50, first_us=1_600_000_000 * _US)
    await _store(client, settings, stored)
    consumer = await _create(client, settings, account)
    runner = JobRunner(client, settings, copier=_FlakyCopier(client, settings, stored[30].event_id, times=1))

    async def ran() -> bool:
        now = await _stored(client, settings, consumer)
        return now is not None and now.walked > 0

    await _run_until(runner, ran)  # one step: stuck at the copy that failed

    stuck = await _stored(client, settings, consumer)
    assert stuck is not None
    assert (stuck.job, stuck.job_after, stuck.walked, stuck.delivered) == (Job.BACKFILL, stored[29].event_id, 30, 30)
    await _run_until(runner, lambda: _job_ended(client, settings, consumer))
    assert sorted(await _ids(client, settings, consumer.partition)) == sorted(e.event_id for e in stored)
    done = await _stored(client, settings, consumer)
    assert done is not None
    assert (done.job, done.walked, done.delivered) == (None, 50, 50)


async def test_a_copy_storage_refuses_is_passed_not_waited_for(dynamodb_local: Stack, clients: AwsClients) -> None:
    settings = _settings(dynamodb_local)
    client = clients.dynamodb
    account = new_account_id()
    stored = _events(account, 50, first_us=1_600_000_000 * _US)
    await _store(client, settings, stored)
    consumer = await _create(client, settings, account)
    refused = stored[30].event_id
    copier = _FlakyCopier(client, settings, refused, times=10**6, outcome=CopyOutcome.REJECTED)
    await _run_until(JobRunner(client, settings, copier=copier), lambda: _job_ended(client, settings, consumer))
    assert sorted(await _ids(client, settings, consumer.partition)) == sorted(
        e.event_id for e in stored if e.event_id != refused
    )
    done = await _stored(client, settings, consumer)
    assert done is not None
    assert (done.job, done.walked, done.delivered) == (None, 50, 49)


async def test_a_backfill_leaves_the_copies_writers_made_where_they_are(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    # A writer's copy is the writer's to settle: a consumer may have paged past it. Moving it
    # to a fresh position (as a writer does with a stale item it meets again) would show it
    # twice, whether the writer made it long ago or just after the walk's bound.
    settings = msgspec.structs.replace(_settings(dynamodb_local), inbox_settle_ms=1000)
    client = clients.dynamodb
    account = new_account_id()
    stored = _events(account, 20, first_us=1_600_000_000 * _US)
    await _store(client, settings, stored)
    consumer = await _create(client, settings, account)
    assert consumer.walk_until_us is not None
    long_ago_us, after_bound_us = time.time_ns() // 1000 - 60 * _US, consumer.walk_until_us + 1
    for stamp_us, part in ((long_ago_us, stored[0:10:2]), (after_bound_us, stored[10:20:2])):
        writers = CopyWriter(client, settings, clock_us=itertools.repeat(stamp_us).__next__)
        await writers.copy([Copy(consumer.partition, events.event_item(e)) for e in part])
    # An earlier attempt of the backfill itself, whose answer was lost, stale by the time the
    # walk meets it again: it may sit behind a cursor, so it moves.
    earlier = CopyWriter(client, settings, clock_us=lambda: long_ago_us)
    await earlier.copy([Copy(consumer.partition, events.event_item(stored[1]))], backfill=True)
    before = await _positions(client, settings, consumer.partition)
    await asyncio.sleep(settings.inbox_settle_ms / 1000)  # all stale: older than a quarter of the margin

    async with _running(JobRunner(client, settings)):
        await _until(lambda: _job_ended(client, settings, consumer), "the backfill ends")

    after = await _positions(client, settings, consumer.partition)
    writers_copies = [e.event_id for e in stored[::2]]
    assert {k: after[k] for k in writers_copies} == {k: before[k] for k in writers_copies}
    assert after[stored[1].event_id] > before[stored[1].event_id]
    assert sorted(after) == sorted(e.event_id for e in stored)
    assert await _counts(client, settings, consumer.partition) == _expected_counts(stored)


async def _positions(client: LeanDynamoDB, settings: Settings, partition: str) -> dict[str, str]:
    answer = await client.query(
        TableName=settings.events_table,
        KeyConditionExpression="account_id = :p",
        ExpressionAttributeValues={":p": {"S": partition}},
        ConsistentRead=True,
    )
    return {item["event_id"]["S"]: item["inbox_pos"]["S"] for item in answer.get("Items", [])}


async def test_a_clean_up_removes_the_partition_and_touches_nothing_else(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    settings = _settings(dynamodb_local, events_per_s=40)  # pages of 40: two steps, deletes 25 a call
    client = clients.dynamodb
    account = new_account_id()
    stored = _events(account, 70, first_us=1_600_000_000 * _US)
    await _store(client, settings, stored)
    await client.update_item(**counter_add(settings.counters_table, counter_id(account), 0, len(stored)))
    registry = ConsumerRegistry(client, settings)
    gone = await registry.create(account, f"c{next(_serial)}", None, 0)
    kept = await registry.create(account, f"c{next(_serial)}", None, 0)
    copier = CopyWriter(client, settings)
    items = [events.event_item(e) for e in stored]
    await copier.copy([Copy(c.partition, item) for c in (gone, kept) for item in items])
    await registry.delete(account, gone.name)
    moved = [c for c in consumers.consumers_of(await _view(client, settings, account)) if c.job is Job.CLEANUP]
    assert len(moved) == 1

    async with _running(JobRunner(client, settings)):
        await _until(lambda: _job_ended(client, settings, moved[0]), "the clean-up ends")

    assert await _ids(client, settings, gone.partition) == []
    for counter in (counter_id(gone.partition), *(counter_id(gone.partition, t) for t in TYPES)):
        assert await _counter_items(client, settings, counter) == 0, counter
    assert await _stored(client, settings, moved[0]) is None
    assert len(await _ids(client, settings, kept.partition)) == len(stored)
    assert await _counts(client, settings, kept.partition) == _expected_counts(stored)
    assert len(await _ids(client, settings, account)) == len(stored)
    assert await InboxStore(client, settings).count(account, None) == len(stored)


async def _view(client: LeanDynamoDB, settings: Settings, account: str) -> list[dict[str, Any]]:
    answer = await client.query(**consumers.view_query(settings.consumers_table, account))
    return [dict(item) for item in answer.get("Items", [])]
