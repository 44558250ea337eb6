"""`triggers dlq` and `triggers stats` against moto: inspect, replay, never duplicate."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from inbox_api.store import InboxStore
from shared.aws.clients import open_clients
from shared.contract.envelope import QueuedEvent, decode_message, encode_message
from shared.keys.admin import new_account_id
from shared.local import processes
from tests.conftest import Stack, private_stack, run_triggers, start_service, wait_until
from tests.helpers import queued_event
from writer_worker.store import EventWriter

NONE = {"replayed": 0, "would_replay": 0, "duplicate": 0, "invalid": 0, "skipped": 0, "expired": 0, "later": 0}


def event(account: str, event_type: str, n: int, at_us: int | None = None) -> QueuedEvent:
    return queued_event(account, event_type, {"n": n}, at_us=at_us)


def dead_letter(stack: Stack, *bodies: str) -> None:
    async def send() -> None:
        async with open_clients(stack.settings) as clients:
            url = (await clients.sqs.admin.get_queue_url(QueueName=stack.settings.dead_letter_queue))["QueueUrl"]
            for body in bodies:
                await clients.sqs.admin.send_message(
                    QueueUrl=url,
                    MessageBody=body,
                    MessageAttributes={"failure_reason": {"DataType": "String", "StringValue": "test reason"}},
                )

    asyncio.run(send())


def store(stack: Stack, events: list[QueuedEvent]) -> None:
    async def write() -> None:
        async with open_clients(stack.settings) as clients:
            await EventWriter(clients.dynamodb, stack.settings).write(events)

    asyncio.run(write())


def undelivered(stack: Stack, account: str) -> int:
    async def read() -> int:
        async with open_clients(stack.settings) as clients:
            return await InboxStore(clients.dynamodb, stack.settings).count(account, None)

    return asyncio.run(read())


def cli_json(stack: Stack, *args: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(run_triggers(stack, *args, "--json").stdout)
    return parsed


def test_peek_shows_reasons_and_leaves_messages_in_place(stack: Stack) -> None:
    own = private_stack(stack)
    account = new_account_id()
    dead_letter(own, encode_message([event(account, "a", 1), event(account, "b", 2)]), "garbage")
    assert cli_json(own, "dlq", "count")["visible"] == 2
    peeked = [json.loads(line) for line in run_triggers(own, "dlq", "peek", "--json").stdout.splitlines()]
    assert len(peeked) == 2
    assert {p["reason"] for p in peeked} == {"test reason"}
    assert sorted(p["events"] for p in peeked) == [0, 2]
    assert cli_json(own, "dlq", "count")["visible"] == 2
    human = run_triggers(own, "dlq", "peek").stdout
    assert "reason: test reason" in human


def test_replay_outcomes_dry_run_filters_and_no_duplicates(stack: Stack) -> None:
    own = private_stack(stack)
    account = new_account_id()
    fresh = encode_message([event(account, "order.created", 1)])
    stored_event = event(account, "order.created", 2)
    store(own, [stored_event])
    already = encode_message([stored_event])
    other_type = encode_message([event(account, "order.paid", 3)])
    dead_letter(own, fresh, fresh, already, other_type, "not json at all")

    dry = cli_json(own, "dlq", "replay", "--event-type", "order.created", "--dry-run")
    assert dry["counts"] == {**NONE, "would_replay": 2, "duplicate": 1, "invalid": 1, "skipped": 1}
    assert cli_json(own, "dlq", "count")["visible"] == 5  # a dry run changes nothing

    done = cli_json(own, "dlq", "replay", "--event-type", "order.created")
    assert done["counts"] == {**NONE, "replayed": 2, "duplicate": 1, "invalid": 1, "skipped": 1}
    assert cli_json(own, "dlq", "count")["visible"] == 2  # the invalid and the filtered-out one stay
    stats = cli_json(own, "stats")
    assert stats["queue_visible"] == 2
    assert stats["dlq_visible"] == 2

    writer = start_service(own, "writer")
    try:
        # The same message replayed twice is still one event (plus the one stored before).
        assert wait_until(lambda: undelivered(own, account) == 2, timeout_s=20)
        time.sleep(1)
        assert undelivered(own, account) == 2
        again = cli_json(own, "dlq", "replay", "--event-type", "order.created")
        assert again["counts"]["replayed"] == 0
        everything = cli_json(own, "dlq", "replay")
        assert everything["counts"] == {**NONE, "replayed": 1, "invalid": 1}
        assert wait_until(lambda: undelivered(own, account) == 3, timeout_s=20)
    finally:
        processes.stop([writer.process])


def queued_bodies(stack: Stack, queue: str) -> list[tuple[str, dict[str, Any]]]:
    """Every message of ``queue`` (body, attributes), taken off it."""

    async def drain() -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        async with open_clients(stack.settings) as clients:
            url = (await clients.sqs.admin.get_queue_url(QueueName=queue))["QueueUrl"]
            while True:
                response = await clients.sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
                )
                messages = response.get("Messages", [])
                if not messages:
                    return found
                for message in messages:
                    found.append((message["Body"], dict(message.get("MessageAttributes", {}))))
                    await clients.sqs.admin.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    return asyncio.run(drain())


def expire(stack: Stack, events: list[QueuedEvent]) -> None:
    """What TTL does to acknowledged events past retention: the items go, their claims stay."""

    async def delete() -> None:
        async with open_clients(stack.settings) as clients:
            for e in events:
                key: Any = {"account_id": {"S": e.account_id}, "event_id": {"S": e.event_id}}
                await clients.dynamodb.admin.delete_item(TableName=stack.settings.events_table, Key=key)

    asyncio.run(delete())


def test_replay_never_sends_back_events_older_than_the_retention(stack: Stack) -> None:
    """A missing item of an event past retention may be one stored, acknowledged and expired:
    its dedup claim says so. One whose key was never claimed was never stored, and goes back."""
    own = private_stack(stack)
    account = new_account_id()
    past_us = time.time_ns() // 1000 - (own.settings.event_retention_s + 3600) * 1_000_000
    old_alone, old_beside = event(account, "old", 1, at_us=past_us), event(account, "old", 2, at_us=past_us)
    store(own, [old_alone, old_beside])
    expire(own, [old_alone, old_beside])
    never_stored = event(account, "old", 4, at_us=past_us)
    young = event(account, "young", 3)
    dead_letter(own, encode_message([old_alone]), encode_message([old_beside, young]), encode_message([never_stored]))

    dry = cli_json(own, "dlq", "replay", "--dry-run")
    assert dry["counts"] == {**NONE, "would_replay": 2, "expired": 1}
    done = cli_json(own, "dlq", "replay")
    assert done["counts"] == {**NONE, "replayed": 2, "expired": 1}

    # The young event and the never-stored old one went back; each old stored one is in the
    # DLQ, alone, saying why.
    replayed = queued_bodies(own, own.settings.events_queue)
    assert sorted(e.event_id for body, _ in replayed for e in decode_message(body).events) == sorted(
        [young.event_id, never_stored.event_id]
    )
    left = queued_bodies(own, own.settings.dead_letter_queue)
    assert sorted(e.event_id for body, _ in left for e in decode_message(body).events) == sorted(
        [old_alone.event_id, old_beside.event_id]
    )
    reasons = {attributes["failure_reason"]["StringValue"].split(":")[0] for _, attributes in left}
    assert reasons == {"test reason", "expired"}  # the untouched original, and the one set apart
    # Replay stored nothing (no writer runs): the count is the two stored before, whose items
    # this test removed without their acknowledgement.
    assert undelivered(own, account) == 2
