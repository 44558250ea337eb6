"""``Received`` read off both wire shapes the writer gets: an SQS ReceiveMessage answer (the
worker) and a Lambda SQS event record (the Lambda handler), including the deferral count
that ``Deferrals`` writes on the messages it sends back."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from shared.contract.envelope import QueuedEvent
from writer_worker.dead_letters import Deferrals
from writer_worker.processor import DEFERRALS_ATTRIBUTE, Received


def test_an_sqs_message_with_every_field() -> None:
    message = {
        "MessageId": "m1",
        "ReceiptHandle": "h1",
        "Body": '{"events": []}',
        "Attributes": {"ApproximateReceiveCount": "3", "SentTimestamp": "1"},
        "MessageAttributes": {DEFERRALS_ATTRIBUTE: {"DataType": "Number", "StringValue": "2"}},
    }
    assert Received.from_sqs(message) == Received("m1", '{"events": []}', receive_count=3, deferrals=2)


def test_a_lambda_record_with_every_field() -> None:
    record = {
        "messageId": "m1",
        "receiptHandle": "h1",
        "body": '{"events": []}',
        "attributes": {"ApproximateReceiveCount": "4", "SentTimestamp": "1"},
        "messageAttributes": {DEFERRALS_ATTRIBUTE: {"dataType": "Number", "stringValue": "5"}},
        "eventSource": "aws:sqs",
    }
    assert Received.from_lambda_record(record) == Received("m1", '{"events": []}', receive_count=4, deferrals=5)


def test_an_sqs_message_without_attributes_is_a_first_receive_never_deferred() -> None:
    assert Received.from_sqs({"MessageId": "m1", "Body": "b"}) == Received("m1", "b", receive_count=1, deferrals=0)


def test_a_lambda_record_without_attributes_is_a_first_receive_never_deferred() -> None:
    assert Received.from_lambda_record({"messageId": "m1", "body": "b"}) == Received("m1", "b", 1, 0)


@pytest.mark.parametrize("value", [{}, {"StringValue": ""}, {"StringValue": "-1"}, {"stringValue": "x"}])
def test_a_deferral_count_that_is_not_a_count_reads_as_none(value: dict[str, str]) -> None:
    message = {"MessageId": "m1", "Body": "b", "MessageAttributes": {DEFERRALS_ATTRIBUTE: value}}
    record = {"messageId": "m1", "body": "b", "messageAttributes": {DEFERRALS_ATTRIBUTE: value}}
    assert Received.from_sqs(message).deferrals == 0
    assert Received.from_lambda_record(record).deferrals == 0


class _CapturingSqs:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    async def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.entries += Entries
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}


async def test_the_deferral_count_deferrals_writes_is_read_back_one_higher() -> None:
    sqs = _CapturingSqs()
    event = QueuedEvent(event_id="e1", account_id="a", event_type="t", payload=msgspec.Raw(b"{}"), received_at_us=1)
    assert await Deferrals(sqs, "events-url").send(Received("m1", "b", deferrals=1), (event,))  # type: ignore[arg-type]
    (entry,) = sqs.entries
    # As SQS hands it back: the attributes asked for, by name, as they were sent.
    again = Received.from_sqs(
        {"MessageId": "m2", "Body": entry["MessageBody"], "MessageAttributes": entry["MessageAttributes"]}
    )
    assert again.deferrals == 2
