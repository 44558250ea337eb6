"""A busy account's inbox spread over several index partitions (against moto)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import msgspec
import pytest

from inbox_api.store import InboxStore
from shared.aws.clients import AwsClients, open_clients
from shared.contract.envelope import QueuedEvent
from shared.keys.admin import new_account_id
from shared.settings import Settings
from tests.conftest import Stack
from tests.helpers import sweep
from tests.integration.test_exactly_once_store import event
from writer_worker.store import EventWriter

_serial = itertools.count()


@pytest.fixture
async def clients(data_stack: Stack) -> AsyncIterator[AwsClients]:
    async with open_clients(data_stack.settings) as opened:
        yield opened


def _events(account: str, count: int) -> list[QueuedEvent]:
    return [event(account, msgspec.json.encode({"n": next(_serial)}), event_type=f"t{n % 2}") for n in range(count)]


def _sharded(data_stack: Stack, shards: int) -> Settings:
    return msgspec.structs.replace(data_stack.settings, inbox_shards=shards)


async def test_a_sharded_inbox_spreads_events_and_pages_them_in_order(data_stack: Stack, clients: AwsClients) -> None:
    settings = _sharded(data_stack, 4)
    account = new_account_id()
    events = _events(account, 40)
    await EventWriter(clients.dynamodb, settings).write(events)
    store = InboxStore(clients.dynamodb, settings)
    ids = sorted(e.event_id for e in events)

    partitions = set()
    for e in events:
        item = await clients.dynamodb.get_item(
            TableName=settings.events_table, Key={"account_id": {"S": account}, "event_id": {"S": e.event_id}}
        )
        partitions.add(item["Item"]["inbox_pk"]["S"])
    assert len(partitions) == 4

    assert await sweep(store, account, limit=7) == ids
    assert await sweep(store, account, descending=True, limit=7) == ids[::-1]
    assert await sweep(store, account, "t1", limit=7) == sorted(e.event_id for e in events[1::2])
    first, has_more = await store.page(account, None, False, 40, None)
    assert [e.event_id for e in first] == ids
    assert not has_more


async def test_raising_the_shard_count_keeps_the_events_already_stored(data_stack: Stack, clients: AwsClients) -> None:
    account = new_account_id()
    before, after = _events(account, 10), _events(account, 10)
    await EventWriter(clients.dynamodb, data_stack.settings).write(before)
    await EventWriter(clients.dynamodb, _sharded(data_stack, 3)).write(after)

    store = InboxStore(clients.dynamodb, _sharded(data_stack, 3))

    # In position order: each write's events together (one transaction), by id within it.
    in_order = sorted(e.event_id for e in before) + sorted(e.event_id for e in after)
    assert await sweep(store, account, limit=7) == in_order
    page, _ = await store.page(account, "t0", True, 3, None)
    t0 = {e.event_id for e in before + after if e.event_type == "t0"}
    assert [e.event_id for e in page] == [i for i in in_order if i in t0][::-1][:3]
