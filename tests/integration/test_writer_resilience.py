"""The writer through outages, kills and concurrency: every event stored exactly once."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from typing import Any

import httpx

from inbox_api.store import InboxStore
from shared.aws.clients import open_clients
from shared.local import processes
from tests.conftest import (
    BROKEN_DYNAMODB,
    ApiKey,
    Service,
    Stack,
    make_key,
    private_stack,
    queue_counts,
    start_service,
    wait_until,
)
from tests.helpers import sweep


def inbox_ids(stack: Stack, account_id: str) -> tuple[int, list[str]]:
    """The exact undelivered count and every undelivered event id, paged from the index."""

    async def read() -> tuple[int, list[str]]:
        async with open_clients(stack.settings) as clients:
            store = InboxStore(clients.dynamodb, stack.settings)
            ids = await sweep(store, account_id)
            return await store.count(account_id, None), ids

    return asyncio.run(read())


def send_batches(ingest: Service, key: ApiKey, events: list[dict[str, Any]]) -> list[str]:
    ids = []
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(events), 100):
            response = client.post(
                f"{ingest.url}/events/batch", json={"events": events[start : start + 100]}, headers=key.headers
            )
            assert response.status_code == 202, response.text
            ids += [r["event_id"] for r in response.json()["results"]]
    return ids


def test_dynamodb_down_deletes_nothing_dead_letters_nothing_and_events_are_stored_once_it_returns(
    stack: Stack,
) -> None:
    # Two receives before the DLQ: a writer that kept receiving through the outage (retry
    # delays 1 s, then 2 s) would have dead-lettered the events within about 4 s.
    own = private_stack(stack, queue_visibility_timeout_s="5", queue_max_receive_count="2")
    key = make_key(own)
    ingest = start_service(own, "ingest")
    broken = start_service(own, "writer", BROKEN_DYNAMODB)
    try:
        ids = send_batches(ingest, key, [{"event_type": "outage", "payload": {"i": i}} for i in range(20)])
        time.sleep(7)  # the broken writer meets the outage, holds the batch and probes
        visible, in_flight = queue_counts(own, own.settings.events_queue)
        assert visible + in_flight >= 1  # nothing was deleted
        assert queue_counts(own, own.settings.dead_letter_queue) == (0, 0)
        assert inbox_ids(own, key.account_id) == (0, [])
        processes.stop([broken.process])  # it gives the held messages back as it stops

        healed = start_service(own, "writer")
        try:
            assert wait_until(lambda: inbox_ids(own, key.account_id)[0] == 20, timeout_s=30)
            count, stored = inbox_ids(own, key.account_id)
            assert count == 20
            assert sorted(stored) == sorted(ids)
            assert wait_until(lambda: queue_counts(own, own.settings.events_queue) == (0, 0), timeout_s=20)
            assert queue_counts(own, own.settings.dead_letter_queue) == (0, 0)
        finally:
            processes.stop([healed.process])
    finally:
        processes.stop([ingest.process, broken.process])


def test_writers_killed_mid_batch_lose_nothing_and_double_nothing(stack: Stack) -> None:
    own = private_stack(stack, queue_visibility_timeout_s="3", writer_receivers="4")
    key = make_key(own)
    ingest = start_service(own, "ingest")
    writer = start_service(own, "writer")
    kills = 0
    try:
        events = [{"event_type": "kill", "payload": {"i": i}} for i in range(2000)]
        ids: list[str] = []
        for start in range(0, len(events), 500):
            ids += send_batches(ingest, key, events[start : start + 500])
            time.sleep(0.5)
            writer.process.send_signal(signal.SIGKILL)
            writer.process.wait()
            kills += 1
            writer = start_service(own, "writer")
        assert kills == 4
        assert len(set(ids)) == 2000
        assert wait_until(lambda: inbox_ids(own, key.account_id)[0] == 2000, timeout_s=90)
        assert wait_until(lambda: queue_counts(own, own.settings.events_queue) == (0, 0), timeout_s=30)
        count, stored = inbox_ids(own, key.account_id)
        assert count == 2000
        assert len(stored) == 2000
        assert set(stored) == set(ids)
    finally:
        processes.stop([ingest.process, writer.process])


def test_two_writers_on_one_queue_store_a_mixed_stream_exactly(stack: Stack) -> None:
    own = private_stack(stack)
    key = make_key(own)
    ingest = start_service(own, "ingest")
    writers = [start_service(own, "writer"), start_service(own, "writer")]
    try:
        unique = [{"event_type": "mix", "payload": {"i": i}, "idempotency_key": f"k{i}"} for i in range(150)]
        copies = [{"event_type": "mix", "payload": {"copy": i}, "idempotency_key": f"k{i}"} for i in range(0, 150, 2)]
        same_payload = [{"event_type": "mix", "payload": {"i": i}} for i in range(50)] * 2
        ids = send_batches(ingest, key, unique + copies + same_payload)
        expected = 150 + 50
        assert wait_until(lambda: inbox_ids(own, key.account_id)[0] == expected, timeout_s=60)
        assert wait_until(lambda: queue_counts(own, own.settings.events_queue) == (0, 0), timeout_s=30)
        count, stored = inbox_ids(own, key.account_id)
        assert count == expected
        assert len(stored) == expected
        assert set(stored) <= set(ids)
        # SQS does not keep order, so any copy may win; each group must be stored exactly once.
        groups = [f"k{i}" for i in range(150)] + [f"k{i}" for i in range(0, 150, 2)] + [f"p{i}" for i in range(50)] * 2
        group_of = dict(zip(ids, groups, strict=True))
        stored_groups = Counter(group_of[event_id] for event_id in stored)
        assert set(stored_groups) == set(groups)
        assert set(stored_groups.values()) == {1}
    finally:
        processes.stop([ingest.process, *(w.process for w in writers)])
