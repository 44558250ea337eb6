"""Named consumers through the Python client (both forms) against the real services.

A consumer created through the client gets the matching events the writer stores from then on,
in an inbox of its own: acknowledging there leaves the default consumer's inbox untouched. The
/consumers calls answer typed models, and their refusals are the client's error classes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tests.conftest import ApiKey, Service, wait_until
from triggers_client import AsyncTriggersClient, Conflict, NotFound, TriggersClient

pytestmark = pytest.mark.usefixtures("writer")


def test_a_consumer_gets_its_events_and_acknowledges_them_apart(
    ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    with TriggersClient(api_key.key, ingest_url=ingest.url, inbox_url=inbox.url) as client:
        made = client.create_consumer("billing", ["invoice.*"])
        assert (made.name, made.event_types, made.total_undelivered) == ("billing", ["invoice.*"], 0)
        assert made.created_at is not None
        assert made.backfill is not None
        assert made.start_time is not None
        assert made.start_time <= datetime.now(UTC)
        assert [c.name for c in client.consumers()] == ["default", "billing"]

        invoice = client.send("invoice.paid", {"n": 1}).event_id
        order = client.send("order.created", {"n": 2}).event_id
        assert wait_until(lambda: client.inbox_page(consumer="billing").total_undelivered == 1)
        assert wait_until(lambda: client.inbox_page().total_undelivered == 2)
        assert [e.event_id for e in client.iter_events(consumer="billing")] == [invoice]
        with pytest.raises(NotFound):
            client.get(order, consumer="billing")  # not one of its events

        client.ack(invoice, consumer="billing")
        assert client.get(invoice, consumer="billing").delivered
        assert not client.get(invoice).delivered  # the default consumer's copy is its own
        assert client.consumer("billing").total_undelivered == 0
        assert {e.event_id for e in client.iter_events()} == {invoice, order}
        acked = client.ack_many([invoice, order])
        assert sorted(acked.acknowledged) == sorted([invoice, order])
        assert client.consumer("default").total_undelivered == 0


async def test_the_consumer_calls_answer_and_refuse_as_documented(inbox: Service, api_key: ApiKey) -> None:
    async with AsyncTriggersClient(api_key.key, inbox_url=inbox.url) as client:
        made = await client.create_consumer("zap-1", ["order.*", "order.*"], start="earliest")
        assert (made.event_types, made.start, made.start_time) == (["order.*"], "earliest", None)
        start = datetime(2026, 1, 31, 12, tzinfo=UTC)
        timed = await client.create_consumer("zap-2", start=start)
        assert timed.start_time == start

        with pytest.raises(Conflict) as taken:
            await client.create_consumer("zap-1")
        assert taken.value.error_code == "CONSUMER_EXISTS"
        for change in (client.delete_consumer("default"), client.update_consumer("default", None)):
            with pytest.raises(Conflict) as refused:
                await change
            assert refused.value.error_code == "DEFAULT_CONSUMER"

        updated = await client.update_consumer("zap-1", ["invoice.paid"])
        assert updated.event_types == ["invoice.paid"]
        assert (await client.consumer("zap-1")).event_types == ["invoice.paid"]
        default = await client.consumer("default")
        assert (default.event_types, default.created_at, default.backfill) == (None, None, None)

        await client.delete_consumer("zap-1")
        for gone in (client.consumer("zap-1"), client.inbox_page(consumer="zap-1"), client.delete_consumer("zap-1")):
            with pytest.raises(NotFound):
                await gone
        assert [c.name for c in await client.consumers()] == ["default", "zap-2"]


def test_another_accounts_consumer_is_not_found(
    inbox: Service, key_factory: Callable[..., ApiKey], api_key: ApiKey
) -> None:
    other = key_factory()
    with (
        TriggersClient(api_key.key, inbox_url=inbox.url) as mine,
        TriggersClient(other.key, inbox_url=inbox.url) as theirs,
    ):
        mine.create_consumer("private")
        with pytest.raises(NotFound):
            theirs.consumer("private")
        with pytest.raises(NotFound):
            theirs.inbox_page(consumer="private")
        assert [c.name for c in theirs.consumers()] == ["default"]


async def test_the_async_client_pages_a_consumer(ingest: Service, inbox: Service, api_key: ApiKey) -> None:
    async with AsyncTriggersClient(api_key.key, ingest_url=ingest.url, inbox_url=inbox.url) as client:
        await client.create_consumer("pager", ["page.*"])
        await client.send("other.test", {})  # the default consumer's, not the pager's
        sent = [(await client.send("page.test", {"n": n})).event_id for n in range(5)]
        for _ in range(150):  # the writer is asynchronous
            if (await client.inbox_page(consumer="pager", limit=1)).total_undelivered == len(sent):
                break
            await asyncio.sleep(0.1)
        pages = [len(p.events) async for p in client.iter_pages(consumer="pager", limit=2)]
        assert pages == [2, 2, 1]
        # In the order they were stored (docs/api.md, "Paging"), which need not be their ids'.
        seen = [e.event_id async for e in client.iter_events(consumer="pager", limit=2)]
        assert sorted(seen) == sorted(sent)
