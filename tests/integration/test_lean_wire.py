"""The typed lean clients against the real servers: every hot operation answers exactly what
aiobotocore (the same client's ``.admin``) answers for the same call, refusals included, and
both paths count their requests the same way. DynamoDB on moto and on DynamoDB Local; SQS on
moto, on a queue of this test's own, followed to its end state (every message deleted)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgspec
import pytest
from botocore.exceptions import ClientError

from shared.aws.clients import AWS_REQUESTS, open_clients
from shared.keys.admin import new_account_id
from tests.conftest import Stack


def _without_metadata(answer: Any) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


class _Items(msgspec.Struct):
    Items: list[dict[str, Any]]
    Count: int


async def test_lean_dynamodb_answers_and_refuses_as_aiobotocore_does(data_stack: Stack) -> None:
    settings = data_stack.settings
    table, account = settings.events_table, new_account_id()
    keys = [{"account_id": {"S": account}, "event_id": {"S": f"e{i}"}} for i in range(3)]
    async with open_clients(settings) as clients:
        lean, boto = clients.dynamodb, clients.dynamodb.admin
        before = AWS_REQUESTS.copy()
        for i, key in enumerate(keys):
            put = await lean.put_item(TableName=table, Item={**key, "n": {"N": str(i)}})
            assert "Attributes" not in put  # ReturnValues NONE: nothing comes back
        read = {"TableName": table, "Key": keys[0], "ConsistentRead": True}
        got = await lean.get_item(**read)  # type: ignore[arg-type]
        assert got == _without_metadata(await boto.get_item(**read))  # type: ignore[arg-type]
        assert got["Item"] == {**keys[0], "n": {"N": "0"}}

        updated = await lean.update_item(
            TableName=table, Key=keys[1], UpdateExpression="SET n = n + :one",
            ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="ALL_NEW",
        )  # fmt: skip
        assert updated["Attributes"] == (await boto.get_item(TableName=table, Key=keys[1], ConsistentRead=True))["Item"]
        assert updated["Attributes"]["n"] == {"N": "2"}

        query: Any = {
            "TableName": table,
            "KeyConditionExpression": "account_id = :a",
            "ExpressionAttributeValues": {":a": {"S": account}},
            "ConsistentRead": True,
        }
        queried = await lean.query(**query)
        assert queried == _without_metadata(await boto.query(**query))
        assert [item["event_id"]["S"] for item in queried["Items"]] == ["e0", "e1", "e2"]
        typed = await lean.query_decoded(msgspec.json.Decoder(_Items), **query)
        assert typed == _Items(Items=queried["Items"], Count=3)

        batch: Any = {"RequestItems": {table: {"Keys": keys, "ConsistentRead": True}}}
        fetched = await lean.batch_get_item(**batch)
        expected = _without_metadata(await boto.batch_get_item(**batch))
        assert sorted(map(str, fetched["Responses"][table])) == sorted(map(str, expected["Responses"][table]))
        assert not fetched.get("UnprocessedKeys")
        assert not expected.get("UnprocessedKeys")

        # A transaction refused for a condition: the same ClientError, reasons item by item,
        # and nothing of it written.
        refused: Any = {
            "TransactItems": [
                {"Put": {"TableName": table, "Item": {**keys[0], "n": {"N": "9"}}}},
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": keys[2],
                        "ConditionExpression": "attribute_not_exists(event_id)",
                    }
                },
            ]
        }
        errors = []
        for call in (lean.transact_write_items, boto.transact_write_items):
            with pytest.raises(ClientError) as raised:
                await call(**refused)
            errors.append(raised.value)
        assert [e.response["Error"]["Code"] for e in errors] == ["TransactionCanceledException"] * 2
        reasons = [[r["Code"] for r in e.response["CancellationReasons"]] for e in errors]
        assert reasons == [["None", "ConditionalCheckFailed"]] * 2
        assert errors[0].operation_name == errors[1].operation_name == "TransactWriteItems"
        assert (await lean.get_item(**read))["Item"]["n"] == {"N": "0"}  # type: ignore[arg-type]

        await lean.transact_write_items(TransactItems=[{"Delete": {"TableName": table, "Key": k}} for k in keys])
        assert (await lean.query(**query))["Count"] == 0  # the end state: this test's items are gone

        counted = AWS_REQUESTS - before
        # Lean and aiobotocore calls alike, one count per request, under one name per operation.
        assert counted["dynamodb.Query"] == 4
        assert counted["dynamodb.GetItem"] == 4
        assert counted["dynamodb.TransactWriteItems"] == 3
        assert counted["dynamodb.PutItem"] == 3


async def test_lean_sqs_sends_receives_hides_and_deletes_on_a_queue_of_its_own(stack: Stack) -> None:
    async with open_clients(stack.settings) as clients:
        lean, boto = clients.sqs, clients.sqs.admin
        url = (await boto.create_queue(QueueName=f"{stack.settings.resource_prefix}-lean-{uuid.uuid4().hex[:8]}"))[
            "QueueUrl"
        ]
        try:
            bodies = [f'{{"n":{i}}}' for i in range(3)]
            sent = await lean.send_message_batch(
                QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
            )
            assert sorted(s["Id"] for s in sent["Successful"]) == ["0", "1", "2"]
            assert not sent.get("Failed")

            first = await _receive_all(lean, url, 3)
            assert sorted(m["Body"] for m in first) == bodies
            # Visible again at once: one by the single call, the others by the batch call.
            await lean.change_message_visibility(
                QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"], VisibilityTimeout=0
            )
            changed = await lean.change_message_visibility_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(first[1:])
                ],
            )
            assert not changed.get("Failed")

            again = await _receive_all(lean, url, 3)
            assert sorted(m["Body"] for m in again) == bodies
            assert {m["Attributes"]["ApproximateReceiveCount"] for m in again} == {"2"}
            deleted = await lean.delete_message_batch(
                QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(again)]
            )
            assert len(deleted["Successful"]) == 3
            assert not deleted.get("Failed")

            attributes = (
                await boto.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )
            )["Attributes"]
            assert attributes == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}
        finally:
            await boto.delete_queue(QueueUrl=url)


async def _receive_all(lean: Any, url: str, count: int) -> list[dict[str, Any]]:
    """Receive until ``count`` messages are in hand (moto may hand them out over several calls)."""
    messages: list[dict[str, Any]] = []
    for _ in range(20):
        answer = await lean.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        messages += answer.get("Messages", [])
        if len(messages) >= count:
            return messages
        await asyncio.sleep(0.05)
    raise AssertionError(f"received {len(messages)} of {count}")
