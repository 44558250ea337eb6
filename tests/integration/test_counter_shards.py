"""Undelivered counts live in one item collection per counter (against moto)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from inbox_api.acks import Acknowledger
from inbox_api.store import InboxStore
from shared.aws.clients import AwsClients, open_clients
from shared.contract.envelope import QueuedEvent
from shared.contract.ids import new_event_id
from shared.keys.admin import new_account_id
from shared.ops.migrate import MIGRATED_SHARD, migrate_counters
from shared.storage.counters import counter_key
from shared.storage.layout import counter_id
from tests.conftest import Stack, run_triggers
from writer_worker.store import EventWriter


@pytest.fixture
async def clients(data_stack: Stack) -> AsyncIterator[AwsClients]:
    async with open_clients(data_stack.settings) as opened:
        yield opened


_nonces = itertools.count()


def _event(account: str, event_type: str) -> QueuedEvent:
    now_us = time.time_ns() // 1000
    return QueuedEvent(
        event_id=new_event_id(now_us // 1000),
        account_id=account,
        event_type=event_type,
        payload=msgspec.Raw(msgspec.json.encode({"at": now_us, "nonce": next(_nonces)})),  # no two alike
        received_at_us=now_us,
    )


async def _shards(clients: AwsClients, data_stack: Stack, counter: str) -> dict[int, int]:
    answer = await clients.dynamodb.query(
        TableName=data_stack.settings.counters_table,
        KeyConditionExpression="counter_id = :c",
        ExpressionAttributeValues={":c": {"S": counter}},
        ConsistentRead=True,
    )
    return {int(i["shard_index"]["N"]): int(i["n"]["N"]) for i in answer["Items"]}


async def test_a_quiet_account_keeps_one_shard_per_counter(data_stack: Stack, clients: AwsClients) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    account = new_account_id()
    events = [_event(account, "a" if n % 3 else "b") for n in range(9)]
    for start in range(0, 9, 3):
        await writer.write(events[start : start + 3])
    await Acknowledger(clients.dynamodb, data_stack.settings).ack(account, [events[0].event_id])

    assert await _shards(clients, data_stack, counter_id(account)) == {0: 8}
    assert await _shards(clients, data_stack, counter_id(account, "b")) == {0: 2}
    assert await inbox.count(account, None) == 8


async def test_a_count_sums_every_shard_the_counter_has(data_stack: Stack, clients: AwsClients) -> None:
    writer = EventWriter(clients.dynamodb, data_stack.settings)
    inbox = InboxStore(clients.dynamodb, data_stack.settings)
    account, neighbour = new_account_id(), new_account_id()
    await writer.write([_event(account, "a"), _event(neighbour, "a")])
    for shard, n in ((3, 5), (7, -2), (MIGRATED_SHARD, 10)):  # as contended writers and a migration leave them
        item: Any = {**counter_key(counter_id(account), shard), "n": {"N": str(n)}}
        await clients.dynamodb.put_item(TableName=data_stack.settings.counters_table, Item=item)

    assert await inbox.count(account, None) == 1 + 5 - 2 + 10
    assert await inbox.count(account, "a") == 1
    assert await inbox.count(neighbour, None) == 1


async def test_migrating_the_legacy_counters_carries_each_count_over_once(
    data_stack: Stack, clients: AwsClients
) -> None:
    settings = data_stack.settings
    tables = (await clients.dynamodb.admin.list_tables())["TableNames"]
    if settings.legacy_counters_table not in tables:
        await clients.dynamodb.admin.create_table(
            TableName=settings.legacy_counters_table,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "counter_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "counter_id", "AttributeType": "S"}],
        )
    account = new_account_id()
    legacy = {f"{account}|0": 4, f"{account}|5": 3, f"{account}|2|t:a|b": 6, f"{account}|6|t:a|b": 1}
    for legacy_id, n in legacy.items():
        item: Any = {"counter_id": {"S": legacy_id}, "n": {"N": str(n)}}
        await clients.dynamodb.put_item(TableName=settings.legacy_counters_table, Item=item)
    writer, inbox = EventWriter(clients.dynamodb, settings), InboxStore(clients.dynamodb, settings)
    await writer.write([_event(account, "a|b")])  # the new version already runs beside the old table

    for _ in range(2):  # idempotent: the second run sets the same sums
        assert "counters carried over" in run_triggers(data_stack, "migrate-counters").stdout
        assert await inbox.count(account, None) == 4 + 3 + 1
        assert await inbox.count(account, "a|b") == 6 + 1 + 1


async def test_migrating_without_a_legacy_table_carries_nothing(data_stack: Stack, clients: AwsClients) -> None:
    fresh = msgspec.structs.replace(data_stack.settings, resource_prefix=f"n{new_account_id()[4:]}")
    assert await migrate_counters(fresh, clients) == 0
