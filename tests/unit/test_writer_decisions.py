"""The writer's decisions, on small fakes (pure logic; the real-server tests are in
tests/integration/test_writer_decisions.py): one throttled account never holds back the
others, service-wide failures alone close the gate, and the gate always finds its way open."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from shared.contract.envelope import QueuedEvent, decode_message, encode_message
from shared.ops.dlq import CLOCK_MARGIN_S, DeadLetter, _made_during
from shared.retry import BackoffPolicy
from shared.settings import Settings
from shared.storage.counters import ShardChooser
from shared.storage.layout import TRANSACTION_MAX_ITEMS
from shared.storage.transactions import Cancellation, Role, TxItem
from tests.helpers import fake_worker, queued_event
from writer_worker.processor import DEFERRALS_ATTRIBUTE, BatchProcessor, Disposition, MessageResult, Received
from writer_worker.store import EventWriter, Outcome, _Claimed, _groups, unavailable
from writer_worker.worker import StorageGate, Worker

FAST = BackoffPolicy("test", base_s=0.005, cap_s=0.01)


def queued(account: str, n: int, event_type: str = "t.x") -> QueuedEvent:
    return queued_event(account, event_type, {"n": n})


def error(code: str, status: int = 400, **extra: Any) -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}, **extra}
    return ClientError(response, "op")


def _account(op: dict[str, Any]) -> str:
    body = next(iter(op.values()))
    key = body.get("Item") or body.get("Key")
    if "account_id" in key:
        return str(key["account_id"]["S"])
    return str((key.get("dedup_id") or key["counter_id"])["S"]).split("|")[0]


class FakeDynamo:
    """TransactWriteItems: conditions on absent keys, per-item throttling, whole-call failures."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls = 0
        self.throttle: Callable[[dict[str, Any]], bool] = lambda op: False  # this item: ThrottlingError
        self.invalid: Callable[[dict[str, Any]], bool] = lambda op: False  # the whole call: ValidationException
        self.fail: ClientError | None = None  # every call

    async def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        if any(self.invalid(op) for op in TransactItems):
            raise error("ValidationException")
        reasons, failed = [], False
        for op in TransactItems:
            body = next(iter(op.values()))
            key = str(body.get("Item", body.get("Key")))
            exists = (body["TableName"], key) in self.items
            condition = body.get("ConditionExpression", "")
            if self.throttle(op):
                reasons.append({"Code": "ThrottlingError"})
                failed = True
            elif ("attribute_exists" in condition and not exists) or ("attribute_not_exists" in condition and exists):
                reasons.append({"Code": "ConditionalCheckFailed"})
                failed = True
            else:
                reasons.append({"Code": "None"})
        if failed:
            raise error("TransactionCanceledException", CancellationReasons=reasons)
        for op in TransactItems:
            body = next(iter(op.values()))
            self.items[(body["TableName"], str(body.get("Item", body.get("Key"))))] = op
        return {}

    async def update_item(self, **_: Any) -> dict[str, Any]:
        return {}

    def stored(self, account: str) -> int:
        return sum(1 for (table, _), op in self.items.items() if table.endswith("events") and _account(op) == account)


def settings() -> Settings:
    return Settings(inbox_settle_ms=0)


def hot_counter(op: dict[str, Any]) -> bool:
    return "Update" in op and op["Update"]["Key"]["counter_id"]["S"].startswith("hot")


# 1: shared fate


async def test_a_throttled_account_is_set_aside_and_the_others_in_its_transaction_are_stored() -> None:
    ddb = FakeDynamo()
    ddb.throttle = hot_counter
    cold = [queued(f"cold{i}", i) for i in range(6)]
    hot = [queued("hot", 10), queued("hot", 11)]
    writer = EventWriter(ddb, settings())  # type: ignore[arg-type]
    results = await writer.write([cold[0], hot[0], *cold[1:4], hot[1], *cold[4:]])
    assert {e.event_id: results[e.event_id].outcome for e in cold} == {e.event_id: Outcome.STORED for e in cold}
    assert [results[e.event_id].outcome for e in hot] == [Outcome.THROTTLED] * 2
    assert [ddb.stored(f"cold{i}") for i in range(6)] == [1] * 6
    assert ddb.stored("hot") == 0
    assert writer._shards.shard(["hot"]) in range(settings().counter_shards)  # spread from now on
    assert writer._shards._contended.keys() == {"hot"}  # and only the hot account


async def test_a_message_shared_with_a_hot_account_is_done_and_defers_only_the_hot_events() -> None:
    ddb = FakeDynamo()
    ddb.throttle = hot_counter
    cold, hot = queued("cold", 1), queued("hot", 2)
    (result,) = await BatchProcessor(EventWriter(ddb, settings())).process(  # type: ignore[arg-type]
        [Received("m1", encode_message([cold, hot]))]
    )
    assert result.disposition is Disposition.DONE
    assert [e.event_id for e in result.deferred] == [hot.event_id]
    assert ddb.stored("cold") == 1


def test_a_throttled_counter_item_spreads_its_own_account_only() -> None:
    chooser = ShardChooser(8)
    items = [TxItem(Role.EVENT_PUT, {}, None, "b"), TxItem(Role.CLAIM, {}, None, "b")]
    items += [TxItem(Role.COUNTER, {}, None, "b"), TxItem(Role.COUNTER, {}, None, "a")]
    codes = ["None", "None", "ThrottlingError", "None"]
    chooser.cancelled([Cancellation(item, code) for item, code in zip(items, codes, strict=True)], ["a", "b"])
    assert set(chooser._contended) == {"b"}


def test_only_service_wide_answers_count_as_unavailable() -> None:
    for code in ("AccessDeniedException", "ExpiredTokenException", "UnrecognizedClientException"):
        assert unavailable(error(code))
    assert unavailable(error("ResourceNotFoundException"))
    assert unavailable(error("ThrottlingException"))  # the call itself throttled
    assert unavailable(error("InternalServerError", 500))
    assert not unavailable(error("ValidationException"))
    assert not unavailable(error("TransactionCanceledException"))


async def test_probe_is_false_for_credentials_permissions_and_missing_tables() -> None:
    ddb = FakeDynamo()
    writer = EventWriter(ddb, settings())  # type: ignore[arg-type]
    assert await writer.probe()
    for code in (
        "AccessDeniedException",
        "ExpiredTokenException",
        "UnrecognizedClientException",
        "ResourceNotFoundException",
    ):
        ddb.fail = error(code)
        assert not await writer.probe(), code


# 5, 7: misconfiguration and outages cost one call, not a dead letter per event


async def test_a_systemic_validation_exception_dead_letters_nothing_and_closes_storage() -> None:
    ddb = FakeDynamo()
    ddb.invalid = lambda op: "Update" in op  # e.g. the counters table has another key schema
    events = [queued(f"a{i % 7}", i) for i in range(300)]
    writer = EventWriter(ddb, settings())  # type: ignore[arg-type]
    with capture_logs() as logs:
        results = await writer.write(events)
    assert Counter(r.outcome for r in results.values()) == {Outcome.UNAVAILABLE: 300}
    assert ddb.calls == 2  # the group, then the control write; no bisecting, no other group
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == ["storage_refuses_known_good_writes"]
    assert not await writer.probe()


async def test_one_bad_event_is_still_found_and_rejected_alone() -> None:
    ddb = FakeDynamo()
    bad = queued("a", 0)
    ddb.invalid = lambda op: "Put" in op and op["Put"]["Item"].get("event_id", {}).get("S") == bad.event_id
    events = [queued("a", i) for i in range(1, 20)]
    results = await EventWriter(ddb, settings()).write([*events[:7], bad, *events[7:]])  # type: ignore[arg-type]
    assert results[bad.event_id].outcome is Outcome.REJECTED
    assert {results[e.event_id].outcome for e in events} == {Outcome.STORED}


async def test_an_outage_costs_one_call_per_batch_not_one_per_group() -> None:
    ddb = FakeDynamo()
    ddb.fail = error("InternalServerError", 500)
    events = [queued(f"a{i % 10}", i) for i in range(980)]
    results = await EventWriter(ddb, settings()).write(events)  # type: ignore[arg-type]
    assert Counter(r.outcome for r in results.values()) == {Outcome.UNAVAILABLE: 980}
    assert ddb.calls == 1


# 14


def test_a_group_never_holds_more_items_than_a_transaction_takes_even_for_an_empty_type() -> None:
    writer = EventWriter(FakeDynamo(), settings())  # type: ignore[arg-type]
    events = [queued(f"acct{i % 2}", i, event_type="") for i in range(200)]
    claims = [_Claimed(e, f"{e.account_id}|{e.event_id}") for e in events]
    groups = list(_groups(claims))
    assert sum(len(g) for g in groups) == 200
    assert max(len(writer._transaction(g, 0)) for g in groups) <= TRANSACTION_MAX_ITEMS


# 2, 3, 4, 12: the gate


async def test_a_gate_closed_again_before_a_waiter_runs_is_waited_on_not_read_as_stopping() -> None:
    stopping = asyncio.Event()
    answer = asyncio.Event()
    probe_calls = 0

    async def probe() -> bool:
        nonlocal probe_calls
        probe_calls += 1
        if probe_calls > 1:
            await answer.wait()
        return True

    gate = StorageGate(probe, FAST, stopping)
    gate.close("down")
    waiter = asyncio.create_task(gate.wait_open())
    assert await gate.wait_open(held=True)  # the probe answered: a held batch goes first, as the test
    gate.close("throttled")  # and fails: closed again before the other waiter ran
    await asyncio.sleep(0.05)
    assert not waiter.done()  # still waiting, not told "stop"
    answer.set()
    assert await asyncio.wait_for(waiter, timeout=5)  # the next answer lets it through
    assert probe_calls == 2
    stopping.set()
    await gate.aclose()


async def test_half_open_lets_one_batch_test_storage_before_everyone_writes() -> None:
    stopping = asyncio.Event()
    gate = StorageGate(lambda: asyncio.sleep(0, True), FAST, stopping)
    gate.close("down")
    waiters = [asyncio.create_task(gate.wait_open(held=True)) for _ in range(3)]
    receiver = asyncio.create_task(gate.wait_open())
    await asyncio.sleep(0.05)
    assert sum(w.done() for w in waiters) == 1  # one trial, the others still wait
    assert not receiver.done()
    gate.succeeded()
    await asyncio.sleep(0)
    assert all([await w for w in waiters])
    assert await receiver
    stopping.set()


async def test_a_probe_that_raises_is_still_down_and_the_gate_opens_once_storage_answers() -> None:
    calls = 0

    async def probe() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("not an AWS error")
        return True

    class Flaky(BackoffPolicy):
        paused = 0

        async def pause(self, attempt: int) -> None:
            Flaky.paused += 1
            if Flaky.paused == 2:
                raise RuntimeError("the prober itself fails")
            await asyncio.sleep(0.001)

    stopping = asyncio.Event()
    gate = StorageGate(probe, Flaky("flaky", 0.001, 0.001), stopping)
    with capture_logs() as logs:
        gate.close("down")
        assert await asyncio.wait_for(gate.wait_open(held=True), timeout=5)
    events = [entry["event"] for entry in logs]
    assert "storage_probe_failed" in events
    assert "storage_probe_crashed" in events
    stopping.set()
    await gate.aclose()


async def test_a_prober_stopped_by_shutdown_neither_opens_the_gate_nor_says_storage_answers() -> None:
    stopping = asyncio.Event()
    gate = StorageGate(lambda: asyncio.sleep(0, True), BackoffPolicy("slow", 5, 5), stopping)
    with capture_logs() as logs:
        gate.close("down")
        await asyncio.sleep(0.01)
        stopping.set()
        assert not await gate.wait_open()
        await gate.aclose()
    assert not gate.is_open
    assert [e["event"] for e in logs if e["event"].startswith("storage_")] == ["storage_unavailable"]


# The worker with a fake queue


class FakeSqs:
    def __init__(self, bodies: list[str]) -> None:
        self.batch = [
            {"MessageId": f"m{i}", "ReceiptHandle": f"h{i}", "Body": b, "Attributes": {"ApproximateReceiveCount": "1"}}
            for i, b in enumerate(bodies)
        ]
        self.receives = 0
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.send_calls = 0
        self.fail_entries: set[str] = set()  # entry ids that fail once
        self.delete_fails = False
        self.deleted: list[str] = []
        self.visibility_failed = False
        self.per_receive = 10

    async def receive_message(self, **_: Any) -> dict[str, Any]:
        self.receives += 1
        if self.batch:
            batch, self.batch = self.batch[: self.per_receive], self.batch[self.per_receive :]
            return {"Messages": batch}
        await asyncio.sleep(3600)
        return {}

    async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.send_calls += 1
        failed = [{"Id": e["Id"], "Code": "InternalError"} for e in Entries if e["Id"] in self.fail_entries]
        self.fail_entries -= {f["Id"] for f in failed}
        self.sent += [(QueueUrl, e) for e in Entries if e["Id"] not in {f["Id"] for f in failed}]
        return {"Successful": [], "Failed": failed}

    async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if self.delete_fails:
            return {"Successful": [], "Failed": [{"Id": e["Id"], "Code": "ReceiptHandleIsInvalid"} for e in Entries]}
        self.deleted += [e["ReceiptHandle"] for e in Entries]
        return {"Successful": [], "Failed": []}

    async def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        if self.visibility_failed:
            return {"Failed": [{"Id": e["Id"], "Code": "ReceiptHandleIsInvalid", "Message": "x"} for e in Entries]}
        return {"Successful": [], "Failed": []}

    async def change_message_visibility(self, **_: Any) -> dict[str, Any]:
        return {}


async def run_worker(sqs: FakeSqs, processor: Any, until: Callable[[], bool], **kwargs: Any) -> Worker:
    worker = fake_worker(sqs, processor, probe_policy=FAST, **kwargs)
    task = asyncio.create_task(worker.run())
    for _ in range(300):
        if until():
            break
        await asyncio.sleep(0.01)
    worker.stop()
    await asyncio.wait_for(task, timeout=5)
    return worker


async def test_the_worker_stores_cold_accounts_defers_the_hot_one_and_never_closes_the_gate() -> None:
    ddb = FakeDynamo()
    ddb.throttle = hot_counter
    hot = [queued("hot", i) for i in range(3)]
    bodies = [encode_message([queued(f"cold{i}", i), *([hot[i // 3]] if i % 3 == 0 else [])]) for i in range(9)]
    sqs = FakeSqs(bodies)
    with capture_logs() as logs:
        worker = await run_worker(sqs, BatchProcessor(EventWriter(ddb, settings())), lambda: len(sqs.deleted) == 9)  # type: ignore[arg-type]
    assert [ddb.stored(f"cold{i}") for i in range(9)] == [1] * 9
    assert sorted(sqs.deleted) == sorted(f"h{i}" for i in range(9))
    deferred = [e for url, e in sqs.sent if url == "events"]
    assert sorted(ev.event_id for e in deferred for ev in decode_message(e["MessageBody"]).events) == sorted(
        e.event_id for e in hot
    )  # each hot event back on the events queue, in a message of its own, later
    assert all(
        e["DelaySeconds"] >= 1 and e["MessageAttributes"][DEFERRALS_ATTRIBUTE]["StringValue"] == "1" for e in deferred
    )
    assert not any(entry["event"] == "storage_unavailable" for entry in logs)
    assert worker.totals["done"] == 9


async def test_rejected_events_go_in_one_batch_and_done_counts_only_deleted_messages() -> None:
    ddb = FakeDynamo()
    bad = [queued("a", 100), queued("a", 101)]
    bad_ids = {e.event_id for e in bad}
    ddb.invalid = lambda op: "Put" in op and op["Put"]["Item"].get("event_id", {}).get("S") in bad_ids
    good = [queued("a", i) for i in range(3)]
    sqs = FakeSqs([encode_message([good[0], bad[0], good[1], bad[1], good[2]])])
    sqs.fail_entries = {"1"}  # the second dead letter's entry fails once, and is sent again
    sqs.delete_fails = True
    worker = await run_worker(sqs, BatchProcessor(EventWriter(ddb, settings())), lambda: sqs.send_calls >= 2)  # type: ignore[arg-type]
    letters = [ev.event_id for _, e in sqs.sent for ev in decode_message(e["MessageBody"]).events]
    assert sorted(letters) == sorted(bad_ids)  # each once: no repeat of the one that went
    assert sqs.send_calls == 2  # one batch, then its failed entry alone
    assert worker.totals["done"] == 0  # the delete failed: not done
    assert worker.totals["delete_failed"] == 1


async def test_failed_visibility_changes_are_logged_by_code() -> None:
    class Slow:
        async def process(self, messages: list[Received]) -> list[MessageResult]:
            await asyncio.sleep(0.5)
            return [MessageResult(m.message_id, Disposition.DONE) for m in messages]

    sqs = FakeSqs(["{}"])
    sqs.visibility_failed = True
    with capture_logs() as logs:
        await run_worker(sqs, Slow(), lambda: bool(sqs.deleted), visibility_s=0.3)
    (line, *_) = [entry for entry in logs if entry["event"] == "visibility_change_partly_failed"]
    assert line["codes"] == ["ReceiptHandleIsInvalid"]


async def test_while_the_probe_answers_but_writes_fail_only_one_batch_tests_storage_per_probe() -> None:
    class Down:
        def __init__(self) -> None:
            self.calls = 0
            self.down = True

        async def process(self, messages: list[Received]) -> list[MessageResult]:
            self.calls += 1
            disposition = Disposition.WAIT if self.down else Disposition.DONE
            return [MessageResult(m.message_id, disposition, "InternalServerError") for m in messages]

    probes = 0

    async def probe() -> bool:
        nonlocal probes
        probes += 1
        return True  # the probe's table answers; the writes do not

    sqs = FakeSqs([f"{{{i}}}" for i in range(3)])
    sqs.per_receive = 1  # three receivers, three held batches
    processor = Down()
    worker = fake_worker(sqs, processor, receivers=3, probe=probe, probe_policy=FAST)
    task = asyncio.create_task(worker.run())
    for _ in range(1000):  # bounded: a fake's counter, polled
        if probes >= 6:
            break
        await asyncio.sleep(0.005)
    calls_while_down, probes_then, receives_then = processor.calls, probes, sqs.receives
    processor.down = False
    for _ in range(1000):
        if len(sqs.deleted) == 3:
            break
        await asyncio.sleep(0.005)
    worker.stop()
    await asyncio.wait_for(task, timeout=5)
    assert len(sqs.deleted) == 3
    # The three batches failed once; then each answered probe let exactly one batch through.
    assert calls_while_down <= 3 + probes_then
    assert receives_then == 3  # one per receiver: none took more messages while writes failed


def test_dead_letters_made_during_a_replay_are_left_for_later_with_a_clock_margin() -> None:
    event = queued("a", 1)
    message = decode_message(encode_message([event]))

    def letter(sent_at_s: float) -> DeadLetter:
        return DeadLetter("id", "h", "", "r", sent_at_s, message)

    started = 1000.0
    assert not _made_during(letter(started + CLOCK_MARGIN_S / 2), started, set())  # sent before, clocks differ
    assert _made_during(letter(started + CLOCK_MARGIN_S + 1), started, set())
    assert _made_during(letter(started - 5), started, {event.event_id})  # this run sent it back
