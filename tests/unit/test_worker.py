"""The long-running worker's lifecycle: heartbeats for slow batches, bounded graceful shutdown,
and storage outages that cost time rather than receives."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from shared.retry import BackoffPolicy
from tests.helpers import fake_worker
from writer_worker.processor import Disposition, MessageResult, Received


class FakeSqs:
    """Hands out one batch, then long-polls forever; records visibility changes and deletes."""

    def __init__(self, count: int) -> None:
        self.batch = [
            {
                "MessageId": f"m{i}",
                "ReceiptHandle": f"h{i}",
                "Body": "{}",
                "Attributes": {"ApproximateReceiveCount": "1"},
            }
            for i in range(count)
        ]
        self.visibility: list[list[tuple[str, int]]] = []
        self.deleted: list[str] = []

    async def receive_message(self, **_: Any) -> dict[str, Any]:
        if self.batch:
            batch, self.batch = self.batch, []
            return {"Messages": batch}
        await asyncio.sleep(3600)
        return {}

    async def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.visibility.append([(e["ReceiptHandle"], e["VisibilityTimeout"]) for e in Entries])
        return {"Successful": [], "Failed": []}

    async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.deleted += [e["ReceiptHandle"] for e in Entries]
        return {"Successful": [], "Failed": []}


class SlowProcessor:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def process(self, messages: list[Received]) -> list[MessageResult]:
        await asyncio.sleep(self.seconds)
        return [MessageResult(m.message_id, Disposition.DONE) for m in messages]


async def test_a_slow_batch_keeps_its_messages_hidden_until_it_is_stored() -> None:
    sqs = FakeSqs(3)
    running = fake_worker(sqs, SlowProcessor(1.2), grace_s=5, visibility_s=1)
    task = asyncio.create_task(running.run())
    await asyncio.sleep(1.5)
    running.stop()
    await task
    assert len(sqs.visibility) >= 2  # renewed every third of the timeout while it ran
    assert all(entries == [("h0", 1), ("h1", 1), ("h2", 1)] for entries in sqs.visibility)
    assert sorted(sqs.deleted) == ["h0", "h1", "h2"]


async def test_shutdown_waits_within_its_bound_then_gives_messages_back() -> None:
    sqs = FakeSqs(2)
    running = fake_worker(sqs, SlowProcessor(60), grace_s=0.3, visibility_s=30)
    task = asyncio.create_task(running.run())
    await asyncio.sleep(0.1)
    with capture_logs() as logs:
        running.stop()
        await asyncio.wait_for(task, timeout=5)
    assert sqs.visibility[-1] == [("h0", 0), ("h1", 0)]  # visible again at once
    assert sqs.deleted == []
    (summary,) = [entry for entry in logs if entry["event"] == "writer_stopped"]
    assert summary["unfinished_batches"] == 1
    assert summary["released_messages"] == 2


async def test_shutdown_lets_a_batch_that_finishes_in_time_complete() -> None:
    sqs = FakeSqs(1)
    running = fake_worker(sqs, SlowProcessor(0.3), grace_s=5, visibility_s=30)
    task = asyncio.create_task(running.run())
    await asyncio.sleep(0.1)
    running.stop()
    await asyncio.wait_for(task, timeout=5)
    assert sqs.deleted == ["h0"]


class OutageProcessor:
    """Storage is down for the first ``outage`` attempts: those messages must wait, not fail."""

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.attempts = 0

    async def process(self, messages: list[Received]) -> list[MessageResult]:
        self.attempts += 1
        disposition = Disposition.WAIT if self.attempts <= self.outage else Disposition.DONE
        return [MessageResult(m.message_id, disposition, "EndpointConnectionError") for m in messages]


class CountingSqs(FakeSqs):
    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.receives = 0
        self.single_visibility: list[int] = []

    async def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.receives += 1
        return await super().receive_message(**kwargs)

    async def change_message_visibility(self, **kwargs: Any) -> dict[str, Any]:
        self.single_visibility.append(kwargs["VisibilityTimeout"])
        return {}


class Probe:
    def __init__(self, fails: int) -> None:
        self.fails = fails
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.fails


FAST_PROBE = BackoffPolicy("test", base_s=0.01, cap_s=0.02)


async def test_a_storage_outage_holds_the_batch_and_stops_receiving_until_storage_answers() -> None:
    sqs, probe = CountingSqs(2), Probe(fails=3)
    running = fake_worker(
        sqs, OutageProcessor(outage=2), grace_s=5, visibility_s=1, receivers=2, probe=probe, probe_policy=FAST_PROBE
    )
    task = asyncio.create_task(running.run())
    for _ in range(200):
        if sqs.deleted:
            break
        await asyncio.sleep(0.01)
    running.stop()
    await asyncio.wait_for(task, timeout=5)
    assert sorted(sqs.deleted) == ["h0", "h1"]  # stored once storage answered, then deleted
    assert sqs.single_visibility == []  # never handed back to spend another receive
    assert probe.calls == 5  # failed three times, then answered; the second outage probed once
    # One receive per receiver before the outage, one more for the loop that then took nothing.
    assert sqs.receives <= 4


async def test_shutdown_during_an_outage_gives_the_held_messages_back() -> None:
    sqs = CountingSqs(3)
    running = fake_worker(
        sqs,
        OutageProcessor(outage=1_000),
        grace_s=5,
        visibility_s=30,
        probe=Probe(fails=1_000_000),
        probe_policy=FAST_PROBE,
    )
    task = asyncio.create_task(running.run())
    await asyncio.sleep(0.2)
    running.stop()
    await asyncio.wait_for(task, timeout=5)
    assert sqs.deleted == []
    assert sqs.visibility[-1] == [("h0", 0), ("h1", 0), ("h2", 0)]  # visible again at once
    assert sqs.receives == 1
