"""Acknowledging many ids at once: each event once, counts exact (against moto)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import msgspec
import pytest

from inbox_api.acks import Acknowledger, AckOutcome
from inbox_api.store import InboxStore
from shared.aws.clients import AwsClients, open_clients
from shared.contract.envelope import QueuedEvent
from shared.contract.ids import new_event_id
from shared.keys.admin import new_account_id
from tests.conftest import Stack
from tests.integration.test_exactly_once_store import event
from writer_worker.store import EventWriter

_serial = itertools.count()


@pytest.fixture
async def clients(data_stack: Stack) -> AsyncIterator[AwsClients]:
    async with open_clients(data_stack.settings) as opened:
        yield opened


def _distinct(account: str, event_type: str, key: str | None = None) -> QueuedEvent:
    return event(account, msgspec.json.encode({"n": next(_serial)}), event_type=event_type, key=key)


async def test_one_call_settles_new_delivered_duplicate_and_unknown_ids(data_stack: Stack, clients: AwsClients) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    acks = Acknowledger(clients.dynamodb, data_stack.settings)
    account, stranger = new_account_id(), new_account_id()
    early, fresh, original = _distinct(account, "a"), _distinct(account, "b"), _distinct(account, "b", key="k")
    copy = _distinct(account, "b", key="k")  # its id becomes an alias of the original
    theirs = _distinct(stranger, "a")
    await writer.write([early, fresh, original, theirs])
    await writer.write([copy])
    await acks.ack(account, [early.event_id])
    unknown = new_event_id(0)

    ids = [early.event_id, fresh.event_id, copy.event_id, unknown, theirs.event_id]
    outcomes = await acks.ack(account, ids)

    assert outcomes == {
        early.event_id: AckOutcome.ALREADY_DELIVERED,
        fresh.event_id: AckOutcome.ACKNOWLEDGED,
        copy.event_id: AckOutcome.ACKNOWLEDGED,
        unknown: AckOutcome.NOT_FOUND,
        theirs.event_id: AckOutcome.NOT_FOUND,
    }
    assert (await inbox.get(account, original.event_id)).delivered
    assert await acks.ack(account, [original.event_id]) == {original.event_id: AckOutcome.ALREADY_DELIVERED}
    assert [await inbox.count(account, t) for t in (None, "a", "b")] == [0, 0, 0]
    assert await inbox.count(stranger, None) == 1


async def test_more_events_than_one_transaction_holds_are_acknowledged_once(
    data_stack: Stack, clients: AwsClients
) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    acks = Acknowledger(clients.dynamodb, data_stack.settings)
    account = new_account_id()
    events = [_distinct(account, f"type.{n % 7}") for n in range(150)]
    await writer.write(events)
    assert await inbox.count(account, None) == 150

    outcomes = await acks.ack(account, [e.event_id for e in events])

    assert set(outcomes.values()) == {AckOutcome.ACKNOWLEDGED}
    assert len(outcomes) == 150
    assert await inbox.count(account, None) == 0
    assert [await inbox.count(account, f"type.{n}") for n in range(7)] == [0] * 7
    page, _ = await inbox.page(account, None, False, 10, None)
    assert page == []


async def test_overlapping_calls_acknowledge_each_event_exactly_once(data_stack: Stack, clients: AwsClients) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    account = new_account_id()
    events = [_distinct(account, f"t{n % 3}") for n in range(60)]
    await writer.write(events)
    ids = [e.event_id for e in events]
    parts = [ids[:40], ids[20:], ids[::2], ids[1::3]]

    async def ack(part: list[str]) -> dict[str, AckOutcome]:
        async with open_clients(data_stack.settings) as own:  # as separate inbox processes would
            return await Acknowledger(own.dynamodb, data_stack.settings).ack(account, part)

    answers = await asyncio.gather(*(ack(p) for p in parts))

    for event_id in ids:
        said = [a[event_id] for a in answers if event_id in a]
        assert said.count(AckOutcome.ACKNOWLEDGED) == 1, event_id
        assert set(said) <= {AckOutcome.ACKNOWLEDGED, AckOutcome.ALREADY_DELIVERED}
    assert [await inbox.count(account, t) for t in (None, "t0", "t1", "t2")] == [0, 0, 0, 0]
