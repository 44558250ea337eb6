"""The SQS micro-batcher: many callers share requests; a failed entry fails only its events."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from botocore.exceptions import EndpointConnectionError

from ingest_api.batcher import SQS_MAX_REQUEST_BYTES, Overloaded, SqsBatcher


class FakeSqs:
    """Records SendMessageBatch calls; fails entries whose body contains a marker."""

    def __init__(self, fail_marker: bytes | None = None, error: Exception | None = None) -> None:
        self.calls: list[list[dict[str, str]]] = []
        self.fail_marker = fail_marker
        self.error = error

    async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        await asyncio.sleep(0)
        self.calls.append(Entries)
        if self.error is not None:
            raise self.error
        failed = [
            {"Id": e["Id"], "Code": "InternalError", "SenderFault": False}
            for e in Entries
            if self.fail_marker and self.fail_marker.decode() in e["MessageBody"]
        ]
        return {"Successful": [], "Failed": failed}


def events_in(call: list[dict[str, str]]) -> list[Any]:
    return [e for entry in call for e in msgspec.json.decode(entry["MessageBody"])["events"]]


async def test_concurrent_callers_share_one_request() -> None:
    sqs = FakeSqs()
    batcher = SqsBatcher(sqs, "url", linger_s=0.01)  # type: ignore[arg-type]
    await batcher.start()
    results = await asyncio.gather(*(batcher.submit([b'{"n":%d}' % i]) for i in range(50)))
    await batcher.close()
    assert results == [[True]] * 50
    assert len(sqs.calls) == 1
    assert len(sqs.calls[0]) == 1  # 50 small events fit in one message
    assert sorted(e["n"] for e in events_in(sqs.calls[0])) == list(range(50))


async def test_a_failed_entry_fails_only_the_events_it_carried() -> None:
    sqs = FakeSqs(fail_marker=b"poison")
    batcher = SqsBatcher(sqs, "url", linger_s=0.01)  # type: ignore[arg-type]
    await batcher.start()
    big = b'{"pad":"' + b"x" * 600_000 + b'"}'  # too big for two in one message
    poisoned = big.replace(b"xxxxxx", b"poison", 1)
    ok, bad, mixed = await asyncio.gather(
        batcher.submit([big]), batcher.submit([poisoned]), batcher.submit([big, poisoned])
    )
    await batcher.close()
    assert ok == [True]
    assert bad == [False]
    assert mixed == [True, False]


async def test_sqs_errors_fail_every_waiting_caller() -> None:
    sqs = FakeSqs(error=EndpointConnectionError(endpoint_url="http://x"))
    batcher = SqsBatcher(sqs, "url", linger_s=0.001)  # type: ignore[arg-type]
    await batcher.start()
    assert await batcher.submit([b"{}", b"{}"]) == [False, False]
    await batcher.close()


async def test_requests_respect_sqs_size_and_entry_limits() -> None:
    sqs = FakeSqs()
    batcher = SqsBatcher(sqs, "url", linger_s=0.01)  # type: ignore[arg-type]
    await batcher.start()
    event = b'{"pad":"' + b"x" * 100_000 + b'"}'
    assert await batcher.submit([event] * 40) == [True] * 40
    await batcher.close()
    assert sum(len(events_in(c)) for c in sqs.calls) == 40
    for call in sqs.calls:
        assert len(call) <= 10
        assert sum(len(e["MessageBody"].encode()) for e in call) <= SQS_MAX_REQUEST_BYTES


async def test_too_many_waiting_events_are_refused_at_once() -> None:
    sqs = FakeSqs()
    batcher = SqsBatcher(sqs, "url", linger_s=0.05, max_waiting_events=3)  # type: ignore[arg-type]
    await batcher.start()
    waiting = asyncio.ensure_future(batcher.submit([b"{}"] * 3))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await batcher.submit([b"{}"])
    assert await waiting == [True] * 3
    await batcher.close()


async def test_close_flushes_what_was_accepted() -> None:
    sqs = FakeSqs()
    batcher = SqsBatcher(sqs, "url", linger_s=10)  # type: ignore[arg-type]
    await batcher.start()
    pending = asyncio.ensure_future(batcher.submit([b"{}"]))
    await asyncio.sleep(0.01)
    await batcher.close()
    assert await pending == [True]
    with pytest.raises(Overloaded):
        await batcher.submit([b"{}"])


class HangingSqs:
    """An SQS that accepts the connection and never answers."""

    async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_stuck_sqs_call_answers_its_callers_not_stored_at_its_deadline() -> None:
    batcher = SqsBatcher(HangingSqs(), "url", linger_s=0.001, send_timeout_s=0.05)  # type: ignore[arg-type]
    await batcher.start()
    results = await asyncio.wait_for(asyncio.gather(batcher.submit([b"{}"]), batcher.submit([b"{}", b"{}"])), 2)
    assert list(results) == [[False], [False, False]]
    await batcher.close()
