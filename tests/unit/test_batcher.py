"""The SQS micro-batcher: many callers share requests; a failed entry fails only its events."""

from __future__ import annotations

import asyncio
import gc
import itertools
import uuid
from typing import Any

import msgspec
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_api.batcher import OWNER_SHARE, SQS_ACCOUNTING_ROOM, SQS_MAX_REQUEST_BYTES, Overloaded, SqsBatcher
from shared.contract.envelope import MESSAGE_FRAME_BYTES, QueuedEvent, QueueMessage, decode_message, encode_event, frame


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


class ContentRefusingSqs:
    """Refuses what real SQS refuses for its content: an entry holding a marker (per entry,
    SenderFault), or, with ``whole_call``, the whole SendMessageBatch (InvalidMessageContents)."""

    def __init__(self, marker: str, *, whole_call: bool) -> None:
        self.marker = marker
        self.whole_call = whole_call
        self.stored: list[Any] = []
        self.calls = 0

    async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        await asyncio.sleep(0)
        self.calls += 1
        bad = [e for e in Entries if self.marker in e["MessageBody"]]
        if bad and self.whole_call:
            error = {"Error": {"Code": "InvalidMessageContents", "Message": "Invalid characters found."}}
            raise ClientError(error, "SendMessageBatch")  # type: ignore[arg-type]
        self.stored += [ev for e in Entries if e not in bad for ev in msgspec.json.decode(e["MessageBody"])["events"]]
        failed = [{"Id": e["Id"], "Code": "InvalidMessageContents", "SenderFault": True} for e in bad]
        return {"Successful": [], "Failed": failed}


@pytest.mark.parametrize("whole_call", [False, True], ids=["entry-refused", "call-refused"])
async def test_a_body_sqs_refuses_fails_only_its_own_submission(whole_call: bool) -> None:
    """Events of many callers share a message and a call: SQS refusing one body must cost
    only the submission that holds it (found by sending again, split)."""
    sqs = ContentRefusingSqs("poison", whole_call=whole_call)
    batcher = SqsBatcher(sqs, "url", linger_s=0.01)  # type: ignore[arg-type]
    await batcher.start()
    others = [batcher.submit([b'{"n":%d}' % i]) for i in range(30)]
    bad = batcher.submit([b'{"n":"poison"}', b'{"n":"mine"}'])
    big = [batcher.submit([b'{"pad":"%s","i":%d}' % (b"x" * 300_000, i)]) for i in range(6)]  # several messages
    results = await asyncio.gather(*others, bad, *big)
    await batcher.close()
    assert results[:30] == [[True]] * 30
    assert results[30] == [False, False]
    assert results[31:] == [[True]] * 6
    stored = [e["n"] for e in sqs.stored if "n" in e]
    assert sorted(stored) == list(range(30))  # each once; the refused submission's events not at all
    assert sorted(e["i"] for e in sqs.stored if "i" in e) == list(range(6))


async def test_invalid_utf8_in_one_event_fails_only_its_submission_and_nothing_escapes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The edge refuses invalid UTF-8, but if some ever reached the batcher, building the SQS
    entries must not crash the send (an unretrieved task exception that logged the bodies)."""
    sqs = FakeSqs()
    batcher = SqsBatcher(sqs, "url", linger_s=0.01)  # type: ignore[arg-type]
    await batcher.start()
    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    secret = b"acct-secret-payload"
    others = [batcher.submit([b'{"n":%d}' % i]) for i in range(20)]
    bad = batcher.submit([b'{"s":"' + secret + b'\xff"}'])
    results = await asyncio.gather(*others, bad)
    await batcher.close()
    assert results == [[True]] * 20 + [[False]]
    assert sorted(e["n"] for c in sqs.calls for e in events_in(c)) == list(range(20))
    assert unretrieved == []
    assert secret.decode() not in capsys.readouterr().out


async def test_a_crash_inside_a_send_answers_its_callers_not_stored() -> None:
    class BrokenSqs:
        async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
            return {"Failed": [{"Id": "0"}]}  # malformed: no Code, a KeyError inside the send

    unretrieved: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: unretrieved.append(context))
    batcher = SqsBatcher(BrokenSqs(), "url", linger_s=0.001)  # type: ignore[arg-type]
    await batcher.start()
    assert await asyncio.wait_for(batcher.submit([b"{}"]), 2) == [False]
    assert await asyncio.wait_for(batcher.submit([b"{}"]), 2) == [False]  # still answering, nothing leaked
    await batcher.close()
    gc.collect()  # a task whose exception nobody retrieved reports it when collected
    assert unretrieved == []


async def test_held_bytes_are_bounded_and_released_when_answered() -> None:
    sqs = FakeSqs()
    batcher = SqsBatcher(sqs, "url", linger_s=0.05, max_waiting_bytes=1000)  # type: ignore[arg-type]
    await batcher.start()
    waiting = asyncio.ensure_future(batcher.submit([b"x" * 600]))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        batcher.submit([b"y" * 500])  # 1,100 bytes would be held
    assert await batcher.submit([b"z" * 400]) == [True]  # 1,000: within the bound
    assert await waiting == [True]
    assert await batcher.submit([b"w" * 900]) == [True]  # all answered: the bytes were given back
    await batcher.close()


async def test_one_account_holds_at_most_its_share_and_others_still_pass() -> None:
    """Before: the byte bound was shared by every account, so about 13 in-flight 5 MiB
    batches of one account made every other caller 503."""
    sqs = HangingSqs()
    batcher = SqsBatcher(sqs, "url", linger_s=0.001, max_waiting_bytes=4000, send_timeout_s=0.2)  # type: ignore[arg-type]
    await batcher.start()
    share = int(4000 * OWNER_SHARE)
    held = [batcher.submit([b"a" * (share // 2)], owner="big"), batcher.submit([b"a" * (share // 2)], owner="big")]
    with pytest.raises(Overloaded):
        batcher.submit([b"a"], owner="big")  # one byte more than its share
    others = [batcher.submit([b"b" * (share // 2)], owner=f"other-{i}") for i in range(3)]
    assert [await f for f in held] == [[False], [False]]  # the stuck SQS answers "not stored"
    assert [await f for f in others] == [[False]] * 3  # ... but each was taken, not refused
    assert await asyncio.wait_for(batcher.submit([b"a" * share], owner="big"), 1) == [False]  # its share was given back
    await batcher.close()


async def test_an_account_share_bounds_events_too() -> None:
    sqs = FakeSqs()
    batcher = SqsBatcher(sqs, "url", linger_s=0.05, max_waiting_events=8)  # type: ignore[arg-type]
    await batcher.start()
    first = batcher.submit([b"{}"] * 2, owner="big")
    with pytest.raises(Overloaded):
        batcher.submit([b"{}"], owner="big")
    second = batcher.submit([b"{}"] * 2, owner="small")
    assert await first == [True] * 2
    assert await second == [True] * 2
    assert await batcher.submit([b"{}"] * 2, owner="big") == [True] * 2
    await batcher.close()


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.lists(st.integers(0, 3000), min_size=1, max_size=4), min_size=1, max_size=30),
    spare=st.integers(0, 12_000),
    edge=st.none() | st.tuples(st.integers(1, 8), st.integers(0, 2)),
)
def test_packed_messages_are_the_contract_frame_within_budget_each_event_once_in_order(
    sizes: list[list[int]], spare: int, edge: tuple[int, int] | None
) -> None:
    """Whatever the events' sizes: every message body is byte for byte the QueueMessage msgspec
    writes (the contract's one format: a new envelope version or field changes what the edge
    sends), fits the queue's budget, and the events go out once each, in arrival order, in as
    few messages as fit (a message ends only where the next event would not fit)."""
    order = itertools.count()
    events = [[_sized_event(next(order), pad) for pad in pads] for pads in sizes]
    encoded = [[encode_event(e) for e in batch] for batch in events]
    budget = max(len(e) for batch in encoded for e in batch) + MESSAGE_FRAME_BYTES + spare
    if edge is not None:  # a budget at, or a byte or two below, where the first events end
        first, short = edge
        budget = max(budget - spare, len(frame([e for batch in encoded for e in batch][:first])) - short)
    sqs = FakeSqs()

    async def run() -> list[list[bool]]:
        batcher = SqsBatcher(sqs, "url", linger_s=0.01, max_message_bytes=budget + SQS_ACCOUNTING_ROOM)  # type: ignore[arg-type]
        await batcher.start()
        futures = [batcher.submit(batch) for batch in encoded]  # all in one linger: one packing
        results = [await f for f in futures]
        await batcher.close()
        return results

    assert asyncio.run(run()) == [[True] * len(batch) for batch in encoded]
    bodies = [entry["MessageBody"].encode() for call in sqs.calls for entry in call]
    messages = sorted((decode_message(body).events for body in bodies), key=lambda m: _order(m[0]))
    assert sorted(bodies, key=lambda b: _order(decode_message(b).events[0])) == [
        msgspec.json.encode(QueueMessage(events=m)) for m in messages
    ]
    assert all(len(body) <= budget for body in bodies)
    sent = [e for m in messages for e in m]
    assert sent == [e for batch in events for e in batch]  # each once, in order, read back as sent
    for this, following in itertools.pairwise(messages):  # greedy: the next event did not fit
        assert len(msgspec.json.encode(QueueMessage(events=this))) + 1 + len(encode_event(following[0])) > budget


def _sized_event(n: int, pad: int) -> QueuedEvent:
    return QueuedEvent(
        event_id=f"01ARZ3NDEKTSV4RRFFQ6{n:06d}",
        account_id="acc",
        event_type="t",
        payload=msgspec.Raw(msgspec.json.encode({"pad": "x" * pad})),
        received_at_us=n,
        idempotency_key=uuid.uuid4().hex,
    )


def _order(event: QueuedEvent) -> int:
    return event.received_at_us  # the n-th event submitted
