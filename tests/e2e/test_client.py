"""The Python client (both forms) against the real services, and its retries through a flaky proxy."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.client.scripted_server import Answer, Drop, scripted_server, url_of
from tests.conftest import ApiKey, Service, wait_until
from triggers_client import (
    AsyncTriggersClient,
    NewEvent,
    NotFound,
    RetryPolicy,
    TriggersClient,
    ValidationFailed,
)

pytestmark = pytest.mark.usefixtures("writer")
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
FAST = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05)
PAYLOADS: list[dict[str, Any]] = [{"n": 0, "nested": {"list": [1, 2.5, "x", None, True]}, "text": "é \u2603"}] + [
    {"n": n} for n in range(1, 6)
]


def test_the_sync_client_round_trip(ingest: Service, inbox: Service, api_key: ApiKey) -> None:
    with TriggersClient(api_key.key, ingest_url=ingest.url, inbox_url=inbox.url) as client:
        health = client.status()
        assert (health.ingest.status, health.inbox.status) == ("ok", "ok")

        first = client.send("client.sync", PAYLOADS[0])
        batch = client.send_batch(
            [NewEvent("client.sync", PAYLOADS[1])] + [{"event_type": "client.sync", "payload": p} for p in PAYLOADS[2:]]
        )
        assert all(item.accepted for item in batch.results)
        sent = [first.event_id] + [item.event_id for item in batch.results if item.event_id]
        assert wait_until(lambda: client.inbox_page(limit=1).total_undelivered == 6)

        # Typed iteration follows the cursors, two per page: every event once, in order, as sent.
        pages = list(client.iter_pages(limit=2))
        assert [len(p.events) for p in pages] == [2, 2, 2]
        events = list(client.iter_events(limit=2))
        assert [e.event_id for e in events] == sorted(sent)
        assert {e.event_id: e.payload for e in events} == dict(zip(sent, PAYLOADS, strict=True))
        assert {e.event_type for e in events} == {"client.sync"}
        assert events[0].received_at.tzinfo is not None

        client.ack(sent[0])
        client.ack(sent[0])  # acknowledging again is fine (204)
        result = client.ack_many([*sent[1:3], UNKNOWN_ID])
        assert (result.acknowledged, result.not_found) == (sent[1:3], [UNKNOWN_ID])
        acked = client.get(sent[0])
        assert acked.delivered
        assert acked.delivered_at is not None
        assert acked.payload == PAYLOADS[0]
        assert client.inbox_page().total_undelivered == 3
        assert [e.event_id for e in client.iter_events()] == sorted(sent[3:])
        with pytest.raises(NotFound) as caught:
            client.get(UNKNOWN_ID)
        assert caught.value.correlation_id


async def test_the_async_client_round_trip(ingest: Service, inbox: Service, api_key: ApiKey) -> None:
    async with AsyncTriggersClient(api_key.key, ingest_url=ingest.url, inbox_url=inbox.url) as client:
        health = await client.status()
        assert (health.ingest.status, health.inbox.status) == ("ok", "ok")

        first = await client.send("client.async", PAYLOADS[0], idempotency_key="async-first")
        again = await client.send("client.async", PAYLOADS[0], idempotency_key="async-first")
        batch = await client.send_batch([{"event_type": "client.async", "payload": p} for p in PAYLOADS[1:]])
        sent = [first.event_id] + [item.event_id for item in batch.results if item.event_id]
        assert len(sent) == 6
        for _ in range(150):  # the writer is asynchronous
            if (await client.inbox_page(limit=1)).total_undelivered == 6:
                break
            await asyncio.sleep(0.1)
        events = [e async for e in client.iter_events(limit=4)]
        assert [e.event_id for e in events] == sorted(sent)
        assert {e.event_id: e.payload for e in events} == dict(zip(sent, PAYLOADS, strict=True))
        # The duplicate (same key) is one event: its answer names it or reads back as it.
        assert (await client.get(again.event_id)).event_id == first.event_id

        await client.ack(sent[0])
        result = await client.ack_many([*sent[1:3], UNKNOWN_ID])
        assert (result.acknowledged, result.not_found) == (sent[1:3], [UNKNOWN_ID])
        assert (await client.get(sent[0])).delivered
        assert [p.total_undelivered async for p in client.iter_pages()] == [3]
        with pytest.raises(ValidationFailed) as refused:
            await client.send("", {})
        assert refused.value.status == 400
        assert refused.value.details


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(Drop(forward=True), id="answer-lost-after-the-service-took-it"),
        pytest.param(Answer(503, b"", {"Retry-After": "0"}), id="503-before-the-service"),
        pytest.param(Drop(), id="dropped-before-the-service"),
    ],
)
def test_a_retried_send_is_stored_once(
    ingest: Service, inbox: Service, api_key: ApiKey, failure: Answer | Drop
) -> None:
    with (
        scripted_server(failure, failure, upstream=ingest.url) as proxy,
        TriggersClient(api_key.key, ingest_url=url_of(proxy), inbox_url=inbox.url, retry=FAST) as client,
        TriggersClient(api_key.key, ingest_url=ingest.url, inbox_url=inbox.url) as direct,
    ):
        accepted = client.send("client.flaky", {"order_id": 42})
        # Another caller's send at the same moment, not through the proxy, is unaffected.
        bystander = direct.send("client.bystander", {"order_id": 43})
        assert len(proxy.seen) == 3
        assert len({s.headers["idempotency-key"] for s in proxy.seen}) == 1
        # Each attempt the service took got an id of its own in its 202 (the edge writes
        # nothing), lost answers included; each id answers 404 until the writer has passed
        # over that copy, then reads back (docs/api.md, "Event ids of duplicates"). Once all
        # do, no copy is left to be stored: the inbox below is final, not merely "so far".
        copies = [json.loads(answer.body)["event_id"] for answer in proxy.forwarded if answer.status == 202]
        assert len(copies) == (3 if failure == Drop(forward=True) else 1)
        assert accepted.event_id in copies
        assert wait_until(lambda: all(_reads_back(client, i) for i in [*copies, bystander.event_id]))
        events = list(client.iter_events())
        assert [(e.event_type, e.payload) for e in events] == [
            ("client.flaky", {"order_id": 42}),
            ("client.bystander", {"order_id": 43}),
        ]
        assert client.inbox_page().total_undelivered == 2
        # Every copy's id, the answered one included, names the one stored event.
        assert {client.get(i).event_id for i in copies} == {events[0].event_id}
        assert events[1].event_id == bystander.event_id


def _reads_back(client: TriggersClient, event_id: str) -> bool:
    try:
        client.get(event_id)
    except NotFound:
        return False
    return True
