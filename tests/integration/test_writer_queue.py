"""The running writer against the real queue: redelivery, poison messages, the DLQ."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from inbox_api.store import InboxStore
from shared.aws.clients import open_clients
from shared.contract.dead_letter import FAILURE_REASON_ATTRIBUTE
from shared.contract.envelope import QueuedEvent, encode_message
from shared.keys.admin import new_account_id
from tests.conftest import Stack
from tests.helpers import queued_event

pytestmark = pytest.mark.usefixtures("writer")
DEADLINE_S = 20.0


def queued(account: str, marker: str) -> QueuedEvent:
    return queued_event(account, "queue.test", {"marker": marker})


async def wait_count(stack: Stack, account: str, expected: int) -> int:
    async with open_clients(stack.settings) as clients:
        store = InboxStore(clients.dynamodb, stack.settings)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            count = await store.count(account, None)
            if count == expected or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.1)  # another process writes: there is no event to wait on


async def test_the_same_message_sent_twice_is_stored_once(stack: Stack) -> None:
    account = new_account_id()
    body = encode_message([queued(account, "twice")])
    async with open_clients(stack.settings) as clients:
        url = (await clients.sqs.admin.get_queue_url(QueueName=stack.settings.events_queue))["QueueUrl"]
        await clients.sqs.admin.send_message(QueueUrl=url, MessageBody=body)
        await clients.sqs.admin.send_message(QueueUrl=url, MessageBody=body)
    assert await wait_count(stack, account, 1) == 1
    await asyncio.sleep(1.0)  # room for the second copy to be (wrongly) counted
    assert await wait_count(stack, account, 1) == 1


async def test_a_poison_message_goes_to_the_dlq_with_its_reason_and_others_pass(stack: Stack) -> None:
    account = new_account_id()
    marker = uuid.uuid4().hex
    async with open_clients(stack.settings) as clients:
        url = (await clients.sqs.admin.get_queue_url(QueueName=stack.settings.events_queue))["QueueUrl"]
        dlq = (await clients.sqs.admin.get_queue_url(QueueName=stack.settings.dead_letter_queue))["QueueUrl"]
        await clients.sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": "poison", "MessageBody": f'{{"events": "{marker}"}}'},
                {"Id": "good", "MessageBody": encode_message([queued(account, marker)])},
            ],
        )
        assert await wait_count(stack, account, 1) == 1

        found = None
        deadline = time.monotonic() + DEADLINE_S
        while found is None and time.monotonic() < deadline:
            response = await clients.sqs.receive_message(
                QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
            )
            for message in response.get("Messages", []):
                if marker in message["Body"]:
                    found = message
                    await clients.sqs.admin.delete_message(QueueUrl=dlq, ReceiptHandle=message["ReceiptHandle"])
    assert found is not None, "the poison message never reached the dead-letter queue"
    reason = found["MessageAttributes"][FAILURE_REASON_ATTRIBUTE]["StringValue"]
    assert "undecodable" in reason
    assert "events" in reason
