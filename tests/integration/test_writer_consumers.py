"""Copies into named consumers' partitions, on DynamoDB Local: the CopyWriter alone (exactly
once, counters exact, racing copiers, late commits), and the writer copying what it stores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from inbox_api.store import InboxStore
from shared.aws.clients import AwsClients, open_clients
from shared.aws.dynamodb import LeanDynamoDB
from shared.contract.envelope import QueuedEvent
from shared.keys.admin import new_account_id
from shared.settings import Settings
from shared.storage.consumers import Consumer, Status, create_put, new_generation
from shared.storage.copies import Copy, CopyOutcome, CopyWriter
from shared.storage.events import event_item, event_key
from shared.storage.layout import consumer_partition, position_stamp_us
from tests.conftest import Stack
from tests.helpers import ManualClock, queued_event, sweep
from writer_worker.consumer_view import ConsumerViews
from writer_worker.store import EventWriter, Outcome

_MARGIN_MS = 400


@pytest.fixture
async def clients(dynamodb_local: Stack) -> AsyncIterator[AwsClients]:
    async with open_clients(dynamodb_local.settings) as opened:
        yield opened


def _items(account: str, types: list[str]) -> list[dict[str, Any]]:
    return [event_item(queued_event(account, t, {"n": n})) for n, t in enumerate(types)]


def _partition(account: str, name: str = "audit") -> str:
    return consumer_partition(account, name, new_generation())


async def _stored(clients: AwsClients, settings: Settings, partition: str, event_id: str) -> dict[str, Any]:
    answer = await clients.dynamodb.get_item(
        TableName=settings.events_table, Key=event_key(partition, event_id), ConsistentRead=True
    )
    return dict(answer["Item"])


# The CopyWriter alone


async def test_copies_land_in_their_partitions_with_exact_counts(dynamodb_local: Stack, clients: AwsClients) -> None:
    settings = dynamodb_local.settings
    account = new_account_id()
    audit, billing = _partition(account), _partition(account, "billing")
    items = _items(account, ["order.created", "order.created", "user.deleted"])
    copies = [Copy(audit, item) for item in items] + [Copy(billing, items[2])]

    outcomes = await CopyWriter(clients.dynamodb, settings).copy(copies)

    assert outcomes == {c.key: CopyOutcome.COPIED for c in copies}
    inbox = InboxStore(clients.dynamodb, settings)
    assert sorted(await sweep(inbox, audit)) == sorted(i["event_id"]["S"] for i in items)
    assert await sweep(inbox, billing) == [items[2]["event_id"]["S"]]
    assert await sweep(inbox, account) == []  # the source items are not the writer's to store here
    assert await inbox.count(audit, None) == 3
    assert await inbox.count(audit, "order.created") == 2
    assert await inbox.count(audit, "user.deleted") == 1
    assert await inbox.count(billing, None) == 1
    assert await inbox.count(billing, "order.created") == 0
    copy = await _stored(clients, settings, audit, items[0]["event_id"]["S"])
    assert copy["payload"] == items[0]["payload"]
    assert copy["received_at_us"] == items[0]["received_at_us"]
    assert (await inbox.get(audit, items[0]["event_id"]["S"])).event_type == "order.created"


async def test_a_second_copy_is_already_copied_and_counts_once(dynamodb_local: Stack, clients: AwsClients) -> None:
    settings = dynamodb_local.settings
    account = new_account_id()
    audit = _partition(account)
    items = _items(account, ["a", "b"])
    copier = CopyWriter(clients.dynamodb, settings)
    first = await copier.copy([Copy(audit, items[0])])
    # Again, with a new one beside it and the same copy twice in one call.
    again = [Copy(audit, items[0]), Copy(audit, items[1]), Copy(audit, items[1])]
    second = await copier.copy(again)

    assert first == {(audit, items[0]["event_id"]["S"]): CopyOutcome.COPIED}
    assert second == {
        (audit, items[0]["event_id"]["S"]): CopyOutcome.ALREADY_COPIED,
        (audit, items[1]["event_id"]["S"]): CopyOutcome.COPIED,
    }
    inbox = InboxStore(clients.dynamodb, settings)
    assert await inbox.count(audit, None) == 2
    assert await inbox.count(audit, "a") == 1
    assert await inbox.count(audit, "b") == 1
    assert sorted(await sweep(inbox, audit)) == sorted(i["event_id"]["S"] for i in items)


async def test_concurrent_copiers_of_the_same_events_count_once(dynamodb_local: Stack, clients: AwsClients) -> None:
    settings = dynamodb_local.settings
    account = new_account_id()
    audit = _partition(account)
    items = _items(account, ["a", "b"] * 15)
    copies = [Copy(audit, item) for item in items]

    answers = await asyncio.gather(
        CopyWriter(clients.dynamodb, settings).copy(copies),
        CopyWriter(clients.dynamodb, settings).copy(list(reversed(copies))),
    )

    for copy in copies:
        assert sorted(a[copy.key] for a in answers) == [CopyOutcome.ALREADY_COPIED, CopyOutcome.COPIED]
    inbox = InboxStore(clients.dynamodb, settings)
    assert await inbox.count(audit, None) == 30
    assert await inbox.count(audit, "a") == 15
    assert await inbox.count(audit, "b") == 15
    assert len(await sweep(inbox, audit)) == 30


class _LateStorage:
    """DynamoDB whose transactions answer ``late_us`` after they were sent (monotonic clock)."""

    def __init__(self, client: LeanDynamoDB, late_us: int) -> None:
        self._client = client
        self.late_us = late_us
        self.offset_us = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **params: Any) -> Any:
        answer = await self._client.transact_write_items(**params)
        self.offset_us += self.late_us
        return answer

    def monotonic_us(self) -> int:
        return time.monotonic_ns() // 1000 + self.offset_us


async def test_a_copy_committed_late_moves_to_a_fresh_position(dynamodb_local: Stack, clients: AwsClients) -> None:
    settings = msgspec.structs.replace(dynamodb_local.settings, inbox_settle_ms=_MARGIN_MS)
    account = new_account_id()
    audit = _partition(account)
    item = _items(account, ["a"])[0]
    storage = _LateStorage(clients.dynamodb, 2 * _MARGIN_MS * 1000)
    stamps: list[int] = []

    def clock_us() -> int:
        stamps.append(time.time_ns() // 1000)
        return stamps[-1]

    copier = CopyWriter(cast(LeanDynamoDB, storage), settings, clock_us=clock_us, monotonic_us=storage.monotonic_us)
    assert await copier.copy([Copy(audit, item)]) == {(audit, item["event_id"]["S"]): CopyOutcome.COPIED}

    position = (await _stored(clients, settings, audit, item["event_id"]["S"]))["inbox_pos"]["S"]
    assert position_stamp_us(position) > stamps[0]  # moved past the attempt's stamp
    assert await InboxStore(clients.dynamodb, settings).count(audit, None) == 1


# The writer copying what it stores


def _writer(clients: AwsClients, settings: Settings, client: Any = None, **views: Any) -> EventWriter:
    dynamodb = cast(LeanDynamoDB, client or clients.dynamodb)
    return EventWriter(dynamodb, settings, views=ConsumerViews(dynamodb, settings, **views))


async def _consumer(
    clients: AwsClients,
    settings: Settings,
    account: str,
    name: str,
    event_types: tuple[str, ...] | None = None,
    *,
    start_us: int = 0,
    status: Status = Status.ACTIVE,
) -> Consumer:
    consumer = Consumer(account, name, new_generation(), event_types, start_us, time.time_ns() // 1000, status=status)
    await clients.dynamodb.put_item(**create_put(settings.consumers_table, consumer))
    return consumer


async def _copied(settings: Settings, clients: AwsClients, consumer: Consumer) -> list[str]:
    return sorted(await sweep(InboxStore(clients.dynamodb, settings), consumer.partition))


def _ids(events: list[QueuedEvent]) -> list[str]:
    return sorted(e.event_id for e in events)


async def test_each_matching_consumer_gets_each_event_once_through_redelivery(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    settings = dynamodb_local.settings
    account = new_account_id()
    every = await _consumer(clients, settings, account, "every")
    orders = await _consumer(clients, settings, account, "orders", ("order.*",))
    exact = await _consumer(clients, settings, account, "exact", ("user.deleted", "order.paid"))
    types = ["order.created", "order.paid", "user.deleted", "order", "user.created", "order.a.b"]
    events = [queued_event(account, t, {"n": n}) for n, t in enumerate(types)]
    writer = _writer(clients, settings)

    first = await writer.write(events)
    again = await writer.write(events)  # SQS delivers the message again
    again_later = await _writer(clients, settings).write(events[:3])  # to another writer

    assert {r.outcome for r in first.values()} == {Outcome.STORED}
    assert {r.outcome for r in [*again.values(), *again_later.values()]} == {Outcome.ALREADY_STORED}
    by_type = {e.event_type: e for e in events}
    assert await _copied(settings, clients, every) == _ids(events)
    assert await _copied(settings, clients, orders) == _ids(
        [by_type[t] for t in ("order.created", "order.paid", "order.a.b")]
    )
    assert await _copied(settings, clients, exact) == _ids([by_type["order.paid"], by_type["user.deleted"]])
    inbox = InboxStore(clients.dynamodb, settings)
    assert await inbox.count(every.partition, None) == 6
    assert await inbox.count(orders.partition, None) == 3
    assert await inbox.count(exact.partition, None) == 2
    assert await inbox.count(orders.partition, "order.created") == 1
    assert await inbox.count(orders.partition, "order") == 0
    assert await inbox.count(exact.partition, "order.paid") == 1
    assert await inbox.count(account, None) == 6  # the default inbox, as before


async def test_a_duplicate_gets_no_copy(dynamodb_local: Stack, clients: AwsClients) -> None:
    settings = dynamodb_local.settings
    account = new_account_id()
    audit = await _consumer(clients, settings, account, "audit")
    original = queued_event(account, "t", {"n": 1}, idempotency_key="k")
    duplicate = queued_event(account, "t", {"n": 2}, idempotency_key="k")
    writer = _writer(clients, settings)

    assert (await writer.write([original]))[original.event_id].outcome is Outcome.STORED
    assert (await writer.write([duplicate]))[duplicate.event_id].outcome is Outcome.DUPLICATE
    assert (await writer.write([duplicate, original]))[duplicate.event_id].outcome is Outcome.DUPLICATE

    assert await _copied(settings, clients, audit) == [original.event_id]
    assert await InboxStore(clients.dynamodb, settings).count(audit.partition, "t") == 1


async def test_concurrent_writers_of_the_same_events_copy_them_once(dynamodb_local: Stack, clients: AwsClients) -> None:
    settings = dynamodb_local.settings
    account = new_account_id()
    audit = await _consumer(clients, settings, account, "audit")
    orders = await _consumer(clients, settings, account, "orders", ("order.*",))
    events = [queued_event(account, "order.created" if n % 2 else "user.x", {"n": n}) for n in range(20)]

    answers = await asyncio.gather(*(_writer(clients, settings).write(events) for _ in range(2)))

    for event in events:
        outcomes = sorted(a[event.event_id].outcome for a in answers)
        assert outcomes == [Outcome.ALREADY_STORED, Outcome.STORED]
    inbox = InboxStore(clients.dynamodb, settings)
    assert await _copied(settings, clients, audit) == _ids(events)
    assert await inbox.count(audit.partition, None) == 20
    assert await inbox.count(audit.partition, "user.x") == 10
    assert await inbox.count(orders.partition, None) == 10
    assert await inbox.count(orders.partition, "order.created") == 10
    assert len(await _copied(settings, clients, orders)) == 10


async def test_a_consumer_gets_events_received_from_its_start_on(dynamodb_local: Stack, clients: AwsClients) -> None:
    settings = dynamodb_local.settings
    account = new_account_id()
    start_us = time.time_ns() // 1000
    audit = await _consumer(clients, settings, account, "audit", start_us=start_us)
    before = queued_event(account, "t", {"n": 1}, at_us=start_us - 1)
    at_start = queued_event(account, "t", {"n": 2}, at_us=start_us)
    after = queued_event(account, "t", {"n": 3}, at_us=start_us + 1_000)

    results = await _writer(clients, settings).write([before, at_start, after])

    assert {r.outcome for r in results.values()} == {Outcome.STORED}
    assert await _copied(settings, clients, audit) == _ids([at_start, after])
    assert await InboxStore(clients.dynamodb, settings).count(audit.partition, None) == 2


async def test_a_deleting_consumer_gets_nothing(dynamodb_local: Stack, clients: AwsClients) -> None:
    settings = dynamodb_local.settings
    account = new_account_id()
    gone = await _consumer(clients, settings, account, "audit", status=Status.DELETING)
    again = await _consumer(clients, settings, account, "audit")  # the name, created anew
    event = queued_event(account, "t", {"n": 1})

    assert (await _writer(clients, settings).write([event]))[event.event_id].outcome is Outcome.STORED

    assert await _copied(settings, clients, gone) == []
    assert await InboxStore(clients.dynamodb, settings).count(gone.partition, None) == 0
    assert await _copied(settings, clients, again) == [event.event_id]


async def test_a_new_consumer_is_used_once_the_view_is_older_than_view_s(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    settings = msgspec.structs.replace(dynamodb_local.settings, consumer_view_s=0.2)
    account = new_account_id()
    clock = ManualClock(1000.0)
    writer = _writer(clients, settings, clock=clock)
    first, second, third = (queued_event(account, "t", {"n": n}) for n in range(3))
    assert (await writer.write([first]))[first.event_id].outcome is Outcome.STORED  # reads a view: no consumers
    audit = await _consumer(clients, settings, account, "audit")

    clock.now += 0.19  # the view is younger than view_s: still the one read before the consumer
    assert (await writer.write([second]))[second.event_id].outcome is Outcome.STORED
    assert await _copied(settings, clients, audit) == []
    clock.now += 0.01  # view_s after the read was sent: read again
    assert (await writer.write([third]))[third.event_id].outcome is Outcome.STORED
    assert await _copied(settings, clients, audit) == [third.event_id]
    # What the stale view missed is the backfill's (it starts view_s + margin_s after creation).


class _FailingCopies:
    """DynamoDB whose consumers' Query, or whose transactions writing copies, fail while set."""

    def __init__(self, client: LeanDynamoDB, settings: Settings) -> None:
        self._client = client
        self._consumers_table = settings.consumers_table
        self.query_fails = False
        self.copies_fail = False
        self.copies_throttled = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def query(self, **params: Any) -> Any:
        if self.query_fails and params["TableName"] == self._consumers_table:
            raise EndpointConnectionError(endpoint_url="dynamodb")
        return await self._client.query(**params)

    async def transact_write_items(self, **params: Any) -> Any:
        if self.copies_fail and '"c:' in msgspec.json.encode(params).decode():
            error = {"Code": "InternalServerError", "Message": "boom"}
            raise ClientError(cast(Any, {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 500}}), "Transact")
        if self.copies_throttled and '"c:' in msgspec.json.encode(params).decode():
            # As DynamoDB cancels a transaction whose items' partition is hot: by item.
            reasons = [{"Code": "ThrottlingError" if "Put" in i else "None"} for i in params["TransactItems"]]
            error = {"Code": "TransactionCanceledException", "Message": "Transaction cancelled"}
            answer = {"Error": error, "CancellationReasons": reasons, "ResponseMetadata": {"HTTPStatusCode": 400}}
            raise ClientError(cast(Any, answer), "TransactWriteItems")
        return await self._client.transact_write_items(**params)


@pytest.mark.parametrize("fault", ["view", "copies"])
async def test_an_event_whose_copies_failed_is_not_settled_and_copied_when_it_comes_back(
    dynamodb_local: Stack, clients: AwsClients, fault: str
) -> None:
    settings = dynamodb_local.settings
    account = new_account_id()
    audit = await _consumer(clients, settings, account, "audit")
    storage = _FailingCopies(clients.dynamodb, settings)
    storage.query_fails, storage.copies_fail = fault == "view", fault == "copies"
    events = [queued_event(account, "t", {"n": n}) for n in range(3)]
    writer = _writer(clients, settings, storage)

    failed = await writer.write(events)
    assert {r.outcome for r in failed.values()} == {Outcome.UNAVAILABLE}  # the messages wait
    assert await InboxStore(clients.dynamodb, settings).count(account, None) == 3  # stored, not copied
    assert await _copied(settings, clients, audit) == []

    storage.query_fails = storage.copies_fail = False
    redelivered = await writer.write(events)
    assert {r.outcome for r in redelivered.values()} == {Outcome.ALREADY_STORED}
    assert await _copied(settings, clients, audit) == _ids(events)
    assert await InboxStore(clients.dynamodb, settings).count(audit.partition, None) == 3


async def test_an_event_whose_copies_were_throttled_is_sent_again_alone_and_copied_then(
    dynamodb_local: Stack, clients: AwsClients
) -> None:
    # THROTTLED: its message is done and the event goes back to the queue in a message of its
    # own, so a consumer's hot partition never ages the message into the dead-letter queue.
    settings = dynamodb_local.settings
    account = new_account_id()
    audit = await _consumer(clients, settings, account, "audit")
    storage = _FailingCopies(clients.dynamodb, settings)
    storage.copies_throttled = True
    events = [queued_event(account, "t", {"n": n}) for n in range(3)]
    writer = _writer(clients, settings, storage)

    throttled = await writer.write(events)
    assert {r.outcome for r in throttled.values()} == {Outcome.THROTTLED}
    assert await InboxStore(clients.dynamodb, settings).count(account, None) == 3  # stored, not copied
    assert await _copied(settings, clients, audit) == []

    storage.copies_throttled = False
    sent_again = await writer.write(events)
    assert {r.outcome for r in sent_again.values()} == {Outcome.ALREADY_STORED}
    assert await _copied(settings, clients, audit) == _ids(events)
