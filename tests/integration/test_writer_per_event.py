"""The writer decides per event: one event it cannot store goes to the DLQ alone, with its
reason, and every other event of its message (other accounts' too) is stored and deleted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from inbox_api.store import InboxStore
from shared.aws.clients import open_clients
from shared.contract.dead_letter import FAILURE_REASON_ATTRIBUTE, SOURCE_MESSAGE_ATTRIBUTE
from shared.contract.envelope import QueuedEvent, decode_message, encode_message
from shared.keys.admin import new_account_id
from shared.local import processes
from tests.conftest import Stack, private_stack, queue_counts, run_triggers, start_service, wait_until
from tests.helpers import queued_event

# An item over DynamoDB's 400 KB: the edge refuses such a payload (256 KiB); a message put
# on the queue directly can still carry one.
OVERSIZED = b'{"pad": "' + b"x" * 420_000 + b'"}'


def queued(account: str, payload: bytes) -> QueuedEvent:
    return queued_event(account, "per.event", payload)


def poison_events(account: str) -> list[QueuedEvent]:
    """Events DynamoDB refuses with a ValidationException: an empty key, an item too large."""
    empty_key = msgspec.structs.replace(queued(account, b'{"k": 1}'), account_id="")
    return [empty_key, queued(account, OVERSIZED)]


def send(stack: Stack, queue: str, *bodies: str) -> None:
    async def put() -> None:
        async with open_clients(stack.settings) as clients:
            url = (await clients.sqs.admin.get_queue_url(QueueName=queue))["QueueUrl"]
            for body in bodies:
                await clients.sqs.admin.send_message(QueueUrl=url, MessageBody=body)

    asyncio.run(put())


def dead_letters(stack: Stack) -> list[dict[str, Any]]:
    """Every message in the DLQ, left in place (held briefly, then visible again)."""

    async def read() -> list[dict[str, Any]]:
        async with open_clients(stack.settings) as clients:
            url = (await clients.sqs.admin.get_queue_url(QueueName=stack.settings.dead_letter_queue))["QueueUrl"]
            found: dict[str, dict[str, Any]] = {}
            while True:
                response = await clients.sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    VisibilityTimeout=30,
                    MessageAttributeNames=["All"],
                )
                messages = response.get("Messages", [])
                if not messages:
                    break
                found.update({m["MessageId"]: dict(m) for m in messages})
            entries: Any = [
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(found.values())
            ]
            for start in range(0, len(entries), 10):
                await clients.sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries[start : start + 10])
            return list(found.values())

    return asyncio.run(read())


def stored(stack: Stack, account: str, ids: list[str]) -> tuple[int, list[bytes]]:
    """The account's exact undelivered count, and the payloads of ``ids`` as read back."""

    async def read() -> tuple[int, list[bytes]]:
        async with open_clients(stack.settings) as clients:
            store = InboxStore(clients.dynamodb, stack.settings)
            count = await store.count(account, None)
            events = [await store.get(account, event_id) for event_id in ids] if count == len(ids) else []
            return count, [msgspec.json.encode(e.payload) for e in events]

    return asyncio.run(read())


def test_one_poison_event_goes_to_the_dlq_alone_and_its_neighbours_are_stored(stack: Stack) -> None:
    own = private_stack(stack)
    mine, other = new_account_id(), new_account_id()
    poison = poison_events(mine)
    good_mine = [queued(mine, b'{"i": %d}' % i) for i in range(3)]
    good_other = [queued(other, b'{"j": %d}' % j) for j in range(3)]
    # The edge packs events of many accounts into one message: each poison sits among them.
    bodies = [
        encode_message([good_other[0], bad, good_mine[0], good_other[1]])
        if n == 0
        else encode_message([bad, good_mine[n]])
        for n, bad in enumerate(poison)
    ]
    bodies.append(encode_message([good_mine[2], good_other[2]]))
    send(own, own.settings.events_queue, *bodies)
    writer = start_service(own, "writer")
    try:
        expected_mine = good_mine
        assert wait_until(lambda: stored(own, other, [e.event_id for e in good_other])[0] == 3, timeout_s=20)
        assert wait_until(lambda: stored(own, mine, [e.event_id for e in expected_mine])[0] == len(expected_mine))
        assert wait_until(lambda: queue_counts(own, own.settings.events_queue) == (0, 0), timeout_s=20)
        assert wait_until(lambda: len(dead_letters(own)) == len(poison), timeout_s=20)
        time.sleep(1)  # room for a wrong extra dead letter or a redelivery to show
        # Every good event is in the inbox and reads back as sent; the counts are exact.
        assert stored(own, other, [e.event_id for e in good_other]) == (3, [bytes(e.payload) for e in good_other])
        count_mine, payloads_mine = stored(own, mine, [e.event_id for e in expected_mine])
        assert (count_mine, payloads_mine) == (len(expected_mine), [bytes(e.payload) for e in expected_mine])
        assert queue_counts(own, own.settings.events_queue) == (0, 0)

        letters = dead_letters(own)
        assert sorted(e.event_id for m in letters for e in decode_message(m["Body"]).events) == sorted(
            e.event_id for e in poison
        )  # each alone, in the normal envelope
        assert all(len(decode_message(m["Body"]).events) == 1 for m in letters)
        reasons = sorted(m["MessageAttributes"][FAILURE_REASON_ATTRIBUTE]["StringValue"] for m in letters)
        assert all(r.startswith("refused by storage: ValidationException") for r in reasons)
        assert all(SOURCE_MESSAGE_ATTRIBUTE in m["MessageAttributes"] for m in letters)

        # Replayed, each fails again alone: back in the DLQ, and nothing else moved.
        replay = run_triggers(own, "dlq", "replay", "--json", check=False)
        assert replay.returncode == 0, replay.stderr[-2000:]
        assert f'"replayed":{len(poison)}' in replay.stdout
        assert wait_until(lambda: queue_counts(own, own.settings.events_queue) == (0, 0), timeout_s=20)
        assert wait_until(lambda: len(dead_letters(own)) == len(poison), timeout_s=20)
        again = dead_letters(own)
        assert sorted(e.event_id for m in again for e in decode_message(m["Body"]).events) == sorted(
            e.event_id for e in poison
        )
        assert stored(own, other, [e.event_id for e in good_other])[0] == 3
        assert stored(own, mine, [e.event_id for e in expected_mine])[0] == len(expected_mine)
    finally:
        processes.stop([writer.process])
