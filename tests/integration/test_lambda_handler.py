"""The Lambda variant of the writer, fed realistic SQS event-source records."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from inbox_api.store import InboxStore
from shared.aws.clients import open_clients
from shared.contract.envelope import QueuedEvent, decode_message, encode_message
from shared.contract.ids import new_event_id
from shared.keys.admin import new_account_id
from shared.settings import settings_from_env
from tests.conftest import BROKEN_DYNAMODB, Stack, private_stack
from writer_worker.lambda_handler import LambdaWriter

ARN = "arn:aws:sqs:us-east-1:123456789012:triggers-events"


def record(body: str, receive_count: int = 1) -> dict[str, Any]:
    """One record as the SQS event-source mapping delivers it."""
    now_ms = str(int(time.time() * 1000))
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "AQEB" + uuid.uuid4().hex,
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": str(receive_count),
            "SentTimestamp": now_ms,
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": now_ms,
        },
        "messageAttributes": {},
        "md5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324 - SQS's checksum
        "eventSource": "aws:sqs",
        "eventSourceARN": ARN,
        "awsRegion": "us-east-1",
    }


def message(account: str, n: int) -> str:
    now_us = time.time_ns() // 1000
    event = QueuedEvent(
        event_id=new_event_id(now_us // 1000),
        account_id=account,
        event_type="lambda",
        payload=msgspec.Raw(msgspec.json.encode({"n": n})),
        received_at_us=now_us,
    )
    return encode_message([event])


def count(stack: Stack, account: str) -> int:
    async def read() -> int:
        async with open_clients(stack.settings) as clients:
            return await InboxStore(clients.dynamodb, stack.settings).count(account, None)

    return asyncio.run(read())


def dead_letters(stack: Stack) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with open_clients(stack.settings) as clients:
            url = (await clients.sqs.admin.get_queue_url(QueueName=stack.settings.dead_letter_queue))["QueueUrl"]
            response = await clients.sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
            )
            return list(response.get("Messages", []))  # type: ignore[arg-type]

    return asyncio.run(read())


@pytest.fixture
def own(stack: Stack) -> Stack:
    return private_stack(stack)


@pytest.fixture
def lambda_writer(own: Stack) -> Iterator[LambdaWriter]:
    writer = LambdaWriter(own.settings)
    yield writer
    writer.close()


def test_a_batch_is_stored_and_reports_no_failures(own: Stack, lambda_writer: LambdaWriter) -> None:
    account = new_account_id()
    records = [record(message(account, n)) for n in range(3)]
    assert lambda_writer.handle({"Records": records}) == {"batchItemFailures": []}
    assert count(own, account) == 3
    # The same records again (Lambda retries a batch): stored once, still no failure.
    assert lambda_writer.handle({"Records": records}) == {"batchItemFailures": []}
    assert count(own, account) == 3


def test_a_poison_record_is_dead_lettered_and_its_neighbours_stored(own: Stack, lambda_writer: LambdaWriter) -> None:
    account = new_account_id()
    poison = record('{"not": "an envelope"}')
    answer = lambda_writer.handle({"Records": [record(message(account, 1)), poison, record(message(account, 2))]})
    assert answer == {"batchItemFailures": []}  # handled: it is in the DLQ now
    assert count(own, account) == 2
    (dead,) = dead_letters(own)
    assert dead["Body"] == poison["body"]
    assert "undecodable" in dead["MessageAttributes"]["failure_reason"]["StringValue"]


def test_records_that_cannot_be_stored_now_are_reported_as_failures(own: Stack) -> None:
    broken = settings_from_env({**own.env, **BROKEN_DYNAMODB})
    writer = LambdaWriter(broken)
    try:
        account = new_account_id()
        records = [record(message(account, n), receive_count=2) for n in range(2)]
        answer = writer.handle({"Records": records})
    finally:
        writer.close()
    assert answer == {"batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records]}


def test_one_event_storage_refuses_is_dead_lettered_alone_and_the_rest_stored(
    own: Stack, lambda_writer: LambdaWriter
) -> None:
    mine, other = new_account_id(), new_account_id()
    now_us = time.time_ns() // 1000
    refused = QueuedEvent(  # an empty key: DynamoDB answers ValidationException for the whole call
        event_id=new_event_id(now_us // 1000),
        account_id="",
        event_type="lambda",
        payload=msgspec.Raw(b'{"bad": 1}'),
        received_at_us=now_us,
    )
    good = [decode_message(message(account, n)).events[0] for n, account in enumerate([mine, other, mine])]
    shared_message = record(encode_message([good[0], refused, good[1], good[2]]))
    assert lambda_writer.handle({"Records": [shared_message]}) == {"batchItemFailures": []}
    assert count(own, mine) == 2
    assert count(own, other) == 1
    (dead,) = dead_letters(own)
    assert [e.event_id for e in decode_message(dead["Body"]).events] == [refused.event_id]
    reason = dead["MessageAttributes"]["failure_reason"]["StringValue"]
    assert reason.startswith("refused by storage: ValidationException")
    assert dead["MessageAttributes"]["source_message_id"]["StringValue"] == shared_message["messageId"]
