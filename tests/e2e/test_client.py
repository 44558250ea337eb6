"""The shipped Python client against the real services."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import ApiKey, Service
from triggers_client import ApiError, TriggersClient

pytestmark = pytest.mark.usefixtures("writer")


async def test_a_producer_and_a_consumer_round_trip(ingest: Service, inbox: Service, api_key: ApiKey) -> None:
    async with TriggersClient(api_key.key, ingest_url=ingest.url, inbox_url=inbox.url) as client:
        first = await client.send("client.test", {"n": 0})
        batch = await client.send_batch([{"event_type": "client.test", "payload": {"n": n}} for n in range(1, 6)])
        sent = [first.event_id] + [r.event_id for r in batch.results if r.event_id]
        assert len(sent) == 6

        async def undelivered() -> int:
            return (await client.inbox_page(limit=1)).total_undelivered

        for _ in range(150):  # the writer is asynchronous: wait until all six are stored
            if await undelivered() == 6:
                break
            await asyncio.sleep(0.1)
        seen = [event.event_id async for event in client.events(limit=2)]
        assert seen == sorted(sent)

        await client.ack(sent[0])
        result = await client.ack_many([*sent[1:3], "01ARZ3NDEKTSV4RRFFQ69G5FAV"])
        assert result.acknowledged == sent[1:3]
        assert result.not_found == ["01ARZ3NDEKTSV4RRFFQ69G5FAV"]
        assert (await client.get(sent[0])).delivered is True
        assert (await client.inbox_page()).total_undelivered == 3
        with pytest.raises(ApiError) as caught:
            await client.get("01ARZ3NDEKTSV4RRFFQ69G5FAV")
        assert caught.value.status == 404
