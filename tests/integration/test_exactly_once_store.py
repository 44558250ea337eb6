"""The writer's storage decides redeliveries, duplicates and races atomically (against moto)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import msgspec
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from inbox_api.acks import Acknowledger, AckOutcome
from inbox_api.store import InboxStore
from shared.aws.clients import AwsClients, open_clients
from shared.aws.dynamodb import LeanDynamoDB
from shared.contract.envelope import QueuedEvent
from shared.errors import NotFound
from shared.keys.admin import new_account_id
from shared.settings import Settings
from shared.storage.layout import dedup_id
from tests.conftest import Stack
from tests.helpers import queued_event
from writer_worker.store import EventWriter, Outcome


@pytest.fixture
async def clients(data_stack: Stack) -> AsyncIterator[AwsClients]:
    async with open_clients(data_stack.settings) as opened:
        yield opened


def event(
    account: str,
    payload: bytes = b'{"n": 1}',
    *,
    key: str | None = None,
    event_type: str = "t",
    at_us: int | None = None,
) -> QueuedEvent:
    return queued_event(account, event_type, payload, at_us=at_us, idempotency_key=key)


async def test_a_redelivered_event_is_stored_once(data_stack: Stack, clients: AwsClients) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    account = new_account_id()
    original = event(account)
    assert (await writer.write([original]))[original.event_id].outcome is Outcome.STORED
    assert (await writer.write([original]))[original.event_id].outcome is Outcome.ALREADY_STORED
    assert await inbox.count(account, None) == 1
    events, _ = await inbox.page(account, None, False, 10, None)
    assert [e.event_id for e in events] == [original.event_id]


async def test_a_copy_within_the_window_points_at_the_original(data_stack: Stack, clients: AwsClients) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    account = new_account_id()
    first, copy = event(account, key="k1"), event(account, b'{"other": true}', key="k1")
    await writer.write([first])
    result = (await writer.write([copy]))[copy.event_id]
    assert result.outcome is Outcome.DUPLICATE
    assert result.original_id == first.event_id
    assert (await inbox.get(account, copy.event_id)).event_id == first.event_id
    assert await inbox.count(account, None) == 1


async def test_a_copy_after_the_window_is_a_new_event(data_stack: Stack, clients: AwsClients) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    account = new_account_id()
    window_us = data_stack.settings.dedup_window_s * 1_000_000
    first = event(account, at_us=time.time_ns() // 1000 - window_us - 1_000_000)
    later = event(account)
    await writer.write([first])
    assert (await writer.write([later]))[later.event_id].outcome is Outcome.STORED
    assert await inbox.count(account, None) == 2


async def test_copies_in_one_batch_store_one_event(data_stack: Stack, clients: AwsClients) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    account = new_account_id()
    first = event(account, b'{"a": 1, "b": 2}')
    same_message_twice = first
    reordered = event(account, b'{"b": 2, "a": 1}')
    other = event(account, b'{"a": 2}')
    results = await writer.write([first, same_message_twice, reordered, other])
    assert results[first.event_id].outcome is Outcome.STORED
    assert results[reordered.event_id].outcome is Outcome.DUPLICATE
    assert results[other.event_id].outcome is Outcome.STORED
    assert await inbox.count(account, None) == 2
    assert await inbox.count(account, "t") == 2


async def test_concurrent_writers_store_each_copy_once(data_stack: Stack) -> None:
    account = new_account_id()
    copies = [event(account, b'{"same": 1}', key=f"k{i % 5}") for i in range(40)]

    async def write(part: list[QueuedEvent]) -> dict[str, Outcome]:
        async with open_clients(data_stack.settings) as own:
            results = await EventWriter(own.dynamodb, data_stack.settings).write(part)
        return {k: v.outcome for k, v in results.items()}

    parts = await asyncio.gather(*(write(copies[i::4]) for i in range(4)))
    outcomes = [o for part in parts for o in part.values()]
    assert outcomes.count(Outcome.STORED) == 5
    assert outcomes.count(Outcome.DUPLICATE) == 35
    async with open_clients(data_stack.settings) as clients:
        assert await InboxStore(clients.dynamodb, data_stack.settings).count(account, None) == 5


async def test_concurrent_acknowledgements_count_once(data_stack: Stack, clients: AwsClients) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    account = new_account_id()
    stored = event(account, event_type="acked")
    await writer.write([stored])
    acks = Acknowledger(clients.dynamodb, data_stack.settings)
    answers = await asyncio.gather(*(acks.ack(account, [stored.event_id]) for _ in range(4)))
    outcomes = [a[stored.event_id] for a in answers]
    assert outcomes.count(AckOutcome.ACKNOWLEDGED) == 1
    assert set(outcomes) <= {AckOutcome.ACKNOWLEDGED, AckOutcome.ALREADY_DELIVERED}
    assert await inbox.count(account, None) == 0
    assert await inbox.count(account, "acked") == 0


async def test_another_accounts_event_is_not_found(data_stack: Stack, clients: AwsClients) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    owner, stranger = new_account_id(), new_account_id()
    stored = event(owner)
    await writer.write([stored])
    with pytest.raises(NotFound):
        await inbox.get(stranger, stored.event_id)
    acks = Acknowledger(clients.dynamodb, data_stack.settings)
    assert await acks.ack(stranger, [stored.event_id]) == {stored.event_id: AckOutcome.NOT_FOUND}
    assert await inbox.count(owner, None) == 1


async def test_an_event_storage_refuses_is_rejected_alone(data_stack: Stack, clients: AwsClients) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    account = new_account_id()
    good = [event(account, b'{"g": %d}' % i) for i in range(5)]
    empty_key = msgspec.structs.replace(event(account, b'{"e": 1}'), account_id="")  # ValidationException
    not_json = event(account, b'{"s": "\\ud800"}')  # a lone surrogate: no canonical form
    too_large = event(account, b'{"pad": "' + b"x" * 420_000 + b'"}')  # over the 400 KB item limit
    batch = [good[0], empty_key, good[1], not_json, good[2], too_large, good[3], good[4]]
    results = await writer.write(batch)
    assert {e.event_id: results[e.event_id].outcome for e in good} == {e.event_id: Outcome.STORED for e in good}
    for bad in (empty_key, not_json, too_large):
        assert results[bad.event_id].outcome is Outcome.REJECTED
        assert results[bad.event_id].reason
    assert results[not_json.event_id].reason.startswith("event cannot be encoded")
    assert await inbox.count(account, None) == 5
    assert await inbox.count(account, "t") == 5
    for stored in good:
        assert bytes((await inbox.get(account, stored.event_id)).payload) == bytes(stored.payload)
    with pytest.raises(NotFound):
        await inbox.get(account, too_large.event_id)


async def test_claims_and_aliases_last_as_long_as_a_copy_can_arrive(data_stack: Stack, clients: AwsClients) -> None:
    """TTL would remove a claim or alias too early: the values written must outlive every copy."""
    settings = data_stack.settings
    writer = EventWriter(clients.dynamodb, settings)
    account = new_account_id()
    first, copy = event(account, key="ttl"), event(account, b'{"other": 1}', key="ttl")
    await writer.write([first])
    assert (await writer.write([copy]))[copy.event_id].outcome is Outcome.DUPLICATE
    claim = (
        await clients.dynamodb.get_item(
            TableName=settings.dedup_table, Key={"dedup_id": {"S": dedup_id(account, first.dedup_key())}}
        )
    )["Item"]
    window_ends_s = (first.received_at_us + settings.dedup_window_s * 1_000_000) // 1_000_000
    # A copy received inside the window may wait in SQS (14 days at most), be dead-lettered,
    # and be replayed while it is younger than the event retention: the claim outlives all that.
    assert int(claim["expires_at"]["N"]) >= window_ends_s + settings.event_retention_s + 14 * 24 * 3600
    alias = (
        await clients.dynamodb.get_item(
            TableName=settings.events_table, Key={"account_id": {"S": account}, "event_id": {"S": copy.event_id}}
        )
    )["Item"]
    assert alias["alias_of"]["S"] == first.event_id
    assert "expires_at" not in alias  # the original has no TTL until acknowledged: neither has its alias


# --- inbox positions: late commits and their re-stamps (docs/architecture.md, "Inbox") ----
_MARGIN_MS = 1000  # re-stamp threshold: 250 ms


class _FakeClock:
    """A writer's clock (wall and monotonic alike) a test moves: now + ``offset_us``."""

    def __init__(self, offset_us: int = 0) -> None:
        self.offset_us = offset_us

    def __call__(self) -> int:
        return time.time_ns() // 1000 + self.offset_us


class _Storage:
    """The writer's DynamoDB, with faults a test switches on, and the writer's two clocks.

    ``commit_late_us``: a transaction's answer comes that much after its stamp (the writer's
    wall clock read that much behind until then; its monotonic clock jumps), and with
    ``lost_answer`` the client sees a timeout although it committed. ``update_fails``:
    UpdateItem is throttled. ``update_late_us``: every UpdateItem answers that late.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.wall, self.monotonic = _FakeClock(), _FakeClock()
        self.commit_late_us = 0
        self.lost_answer = False
        self.update_fails = False
        self.update_late_us = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **params: Any) -> Any:
        answer = await self._client.transact_write_items(**params)
        self.wall.offset_us = 0
        self.monotonic.offset_us += self.commit_late_us
        if self.lost_answer:
            raise EndpointConnectionError(endpoint_url="dynamodb", error=TimeoutError())
        return answer

    async def update_item(self, **params: Any) -> Any:
        if self.update_fails:
            error = {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}
            raise ClientError(cast(Any, {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}), "UpdateItem")
        answer = await self._client.update_item(**params)
        self.monotonic.offset_us += self.update_late_us
        return answer

    def commit_late(self, late_us: int) -> None:
        self.commit_late_us, self.wall.offset_us = late_us, -late_us


def _margin(stack: Stack) -> Settings:
    return msgspec.structs.replace(stack.settings, inbox_settle_ms=_MARGIN_MS)


async def _position(clients: AwsClients, stack: Stack, e: QueuedEvent) -> str:
    key = {"account_id": {"S": e.account_id}, "event_id": {"S": e.event_id}}
    item = await clients.dynamodb.get_item(TableName=stack.settings.events_table, Key=key, ConsistentRead=True)
    return str(item["Item"]["inbox_pos"]["S"])


def _late_writer(clients: AwsClients, stack: Stack) -> tuple[EventWriter, _Storage]:
    storage = _Storage(clients.dynamodb)
    writer = EventWriter(
        cast(LeanDynamoDB, storage), _margin(stack), clock_us=storage.wall, monotonic_us=storage.monotonic
    )
    return writer, storage


async def test_a_late_commit_whose_answer_was_lost_is_restamped_when_it_comes_back(
    data_stack: Stack, clients: AwsClients
) -> None:
    """F1: the commit lands after the writer gave up; the redelivery finds it stored, at a
    position a cursor may have passed meanwhile, and moves it past every such cursor."""
    account = new_account_id()
    settings = _margin(data_stack)
    late, neighbour = event(account, b'{"n": 1}'), event(account, b'{"n": 2}')
    writer, storage = _late_writer(clients, data_stack)
    storage.commit_late(2 * _MARGIN_MS * 1000)
    storage.lost_answer = True
    assert (await writer.write([late]))[late.event_id].outcome is Outcome.UNAVAILABLE
    before = await _position(clients, data_stack, late)
    # A neighbour stored promptly after the late stamp; a consumer's cursor passes it.
    prompt = EventWriter(clients.dynamodb, settings)
    assert (await prompt.write([neighbour]))[neighbour.event_id].outcome is Outcome.STORED
    inbox = InboxStore(clients.dynamodb, settings, clock_us=lambda: time.time_ns() // 1000 + 2 * _MARGIN_MS * 1000)
    page = await inbox.page_from(account, None, False, 1, await _position(clients, data_stack, neighbour))
    assert page.events == []  # the late event sits behind that cursor: a forward pager would skip it

    assert (await prompt.write([late]))[late.event_id].outcome is Outcome.ALREADY_STORED  # SQS again
    after = await _position(clients, data_stack, late)
    assert after > before
    assert after > await _position(clients, data_stack, neighbour)
    page = await inbox.page_from(account, None, False, 10, await _position(clients, data_stack, neighbour))
    assert [e.event_id for e in page.events] == [late.event_id]
    # Another redelivery right away finds a fresh position: left alone.
    assert (await prompt.write([late]))[late.event_id].outcome is Outcome.ALREADY_STORED
    assert await _position(clients, data_stack, late) == after
    # An acknowledged event is out of the inbox: a redelivery gives it no position.
    await Acknowledger(clients.dynamodb, data_stack.settings).ack(account, [neighbour.event_id])
    old = {"account_id": {"S": account}, "event_id": {"S": neighbour.event_id}}
    writer_late = EventWriter(clients.dynamodb, settings, clock_us=lambda: time.time_ns() // 1000 + 60_000_000)
    assert (await writer_late.write([neighbour]))[neighbour.event_id].outcome is Outcome.ALREADY_STORED
    item = (await clients.dynamodb.get_item(TableName=settings.events_table, Key=old, ConsistentRead=True))["Item"]
    assert "inbox_pk" not in item
    assert item["delivered"]["BOOL"] is True


@pytest.mark.parametrize("fault", ["throttled", "late_again"])
async def test_an_event_whose_restamp_fails_is_not_settled(data_stack: Stack, clients: AwsClients, fault: str) -> None:
    """F2: the move after a late commit fails: the message must come back, not be deleted;
    when it does, the stored event is moved."""
    account = new_account_id()
    e = event(account)
    writer, storage = _late_writer(clients, data_stack)
    storage.commit_late(2 * _MARGIN_MS * 1000)
    if fault == "throttled":
        storage.update_fails = True
    else:
        storage.update_late_us = 2 * _MARGIN_MS * 1000
    outcome = (await writer.write([e]))[e.event_id].outcome
    assert outcome is (Outcome.UNAVAILABLE if fault == "throttled" else Outcome.RETRY)
    stuck = await _position(clients, data_stack, e)
    storage.commit_late(0)
    storage.update_late_us = 0
    storage.wall.offset_us = _MARGIN_MS * 1000  # it comes back a visibility timeout later
    storage.update_fails = False
    assert (await writer.write([e]))[e.event_id].outcome is Outcome.ALREADY_STORED  # the message came back
    assert await _position(clients, data_stack, e) > stuck
    assert await InboxStore(clients.dynamodb, data_stack.settings).count(account, None) == 1
