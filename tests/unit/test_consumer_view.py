"""The writer's view of an account's consumers, on a fake table and a fake clock: kept for at
most consumer_view_s from when its read was sent, one read for concurrent callers, every
page read, bounded memory, failures never kept."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import msgspec
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from shared.aws.dynamodb import LeanDynamoDB
from shared.settings import Settings
from shared.storage.consumers import Consumer, Status, consumer_item
from tests.helpers import ManualClock
from writer_worker.consumer_view import ConsumerViews, ViewUnavailable

VIEW_S = 2.0


def consumer(account: str, name: str, status: Status = Status.ACTIVE) -> Consumer:
    return Consumer(account, name, "g1", ("a.*",), 0, 1, status=status)


class FakeTable:
    """Query of the consumers table, ``page`` items per answer; the clock moves ``read_s`` during
    each read; ``gate`` holds every read until set; ``fail`` fails the next read."""

    def __init__(self, clock: ManualClock, page: int = 100) -> None:
        self.clock = clock
        self.page = page
        self.items: dict[str, list[dict[str, Any]]] = {}
        self.queries = 0
        self.read_s = 0.0
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    def put(self, *consumers: Consumer) -> None:
        for c in consumers:
            self.items.setdefault(c.account_id, []).append(consumer_item(c))

    async def query(self, **params: Any) -> dict[str, Any]:
        assert params["ConsistentRead"] is True
        self.queries += 1
        if self.gate is not None:
            await self.gate.wait()
        self.clock.now += self.read_s
        if self.fail is not None:
            failure, self.fail = self.fail, None
            raise failure
        items = self.items.get(params["ExpressionAttributeValues"][":a"]["S"], [])
        start = int(params.get("ExclusiveStartKey", {}).get("i", 0))
        answer: dict[str, Any] = {"Items": items[start : start + self.page]}
        if start + self.page < len(items):
            answer["LastEvaluatedKey"] = {"i": start + self.page}
        return answer


def views(table: FakeTable, **kwargs: Any) -> ConsumerViews:
    settings = msgspec.structs.replace(Settings(), consumer_view_s=VIEW_S)
    return ConsumerViews(cast(LeanDynamoDB, table), settings, clock=table.clock, **kwargs)


async def test_a_view_is_kept_for_view_s_from_when_its_read_was_sent() -> None:
    clock = ManualClock(100.0)
    table = FakeTable(clock)
    table.read_s = 0.5  # the answer comes half a second after the read was sent
    table.put(consumer("acc", "audit"))
    view = views(table)
    assert [c.name for c in await view.active("acc")] == ["audit"]
    table.put(consumer("acc", "billing"))
    clock.now = 100.0 + VIEW_S - 0.01  # 1.49 s after the answer, 1.99 s after sending
    assert [c.name for c in await view.active("acc")] == ["audit"]
    assert table.queries == 1
    clock.now = 100.0 + VIEW_S  # from the send, not the answer: 1.5 s after the answer
    assert sorted(c.name for c in await view.active("acc")) == ["audit", "billing"]
    assert table.queries == 2


async def test_a_view_has_active_consumers_only_and_every_page() -> None:
    clock = ManualClock()
    table = FakeTable(clock, page=2)
    table.put(*(consumer("acc", f"c{n}") for n in range(5)), consumer("acc", "gone", Status.DELETING))
    table.items["acc"].append({"account_id": {"S": "acc"}, "name": {"S": "#account"}, "n": {"N": "6"}})
    names = [c.name for c in await views(table).active("acc")]
    assert names == [f"c{n}" for n in range(5)]
    assert table.queries == 4  # 7 items, 2 a page


async def test_concurrent_callers_for_one_account_share_one_read() -> None:
    clock = ManualClock()
    table = FakeTable(clock)
    table.put(consumer("acc", "audit"))
    table.gate = asyncio.Event()
    view = views(table)
    callers = [asyncio.ensure_future(view.active("acc")) for _ in range(10)]
    other = asyncio.ensure_future(view.active("other"))
    await asyncio.sleep(0)
    table.gate.set()
    answers = await asyncio.gather(*callers)
    assert all([c.name for c in a] == ["audit"] for a in answers)
    assert await other == ()
    assert table.queries == 2  # one per account


async def test_a_failed_read_is_not_kept_and_names_an_outage() -> None:
    clock = ManualClock()
    table = FakeTable(clock)
    table.put(consumer("acc", "audit"))
    view = views(table)
    table.fail = EndpointConnectionError(endpoint_url="dynamodb")
    with pytest.raises(ViewUnavailable) as outage:
        await view.active("acc")
    assert outage.value.outage
    denied = {"Error": {"Code": "ValidationException", "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": 400}}
    table.fail = ClientError(cast(Any, denied), "Query")
    with pytest.raises(ViewUnavailable) as refused:
        await view.active("acc")
    assert not refused.value.outage
    assert [c.name for c in await view.active("acc")] == ["audit"]  # read again: nothing failed was kept
    assert table.queries == 3


async def test_a_read_slower_than_view_s_is_not_used() -> None:
    clock = ManualClock()
    table = FakeTable(clock)
    table.read_s = VIEW_S
    with pytest.raises(ViewUnavailable):
        await views(table).active("acc")


async def test_memory_is_bounded_least_recently_used_first() -> None:
    clock = ManualClock()
    table = FakeTable(clock)
    view = views(table, remembered=2)
    for account in ("a", "b", "a", "c"):  # "b" is the least recently used when "c" comes
        await view.active(account)
    assert table.queries == 3
    await view.active("a")
    assert table.queries == 3
    await view.active("b")
    assert table.queries == 4
