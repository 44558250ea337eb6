"""The writer's decisions against the real servers (moto's SQS and DynamoDB): a misconfigured
or missing table holds events instead of dead-lettering them, one throttled account is
deferred alone through the real queue while the others are stored, and the Lambda writer
hides messages for longer per receive during an outage and rides one out while time remains."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from inbox_api.store import InboxStore
from shared.aws.clients import open_clients
from shared.contract.envelope import QueuedEvent, encode_message
from shared.keys.admin import new_account_id
from shared.settings import settings_from_env
from tests.conftest import BROKEN_DYNAMODB, Stack, private_stack, queue_counts
from tests.faults import FaultyLink
from tests.helpers import queued_event
from writer_worker.lambda_handler import LambdaWriter
from writer_worker.processor import BatchProcessor
from writer_worker.store import EventWriter, Outcome
from writer_worker.worker import QueueUrls, Worker


def queued(account: str, n: int) -> QueuedEvent:
    return queued_event(account, "decide", {"n": n})


async def counts(stack: Stack, *accounts: str) -> list[int]:
    async with open_clients(stack.settings) as clients:
        store = InboxStore(clients.dynamodb, stack.settings)
        return [await store.count(a, None) for a in accounts]


def test_a_misconfigured_or_missing_table_holds_every_event_and_dead_letters_none(stack: Stack) -> None:
    own = private_stack(stack)
    account = new_account_id()
    events = [queued(account, n) for n in range(30)]

    async def run() -> None:
        async with open_clients(own.settings) as clients:
            wrong_schema = EventWriter(clients.dynamodb, own.settings)
            wrong_schema._counters_table = own.settings.events_table  # counters keyed like events
            with capture_logs() as logs:
                results = await wrong_schema.write(events)
            assert Counter(r.outcome for r in results.values()) == {Outcome.UNAVAILABLE: 30}
            assert "storage_refuses_known_good_writes" in [e["event"] for e in logs]
            assert not await wrong_schema.probe()

            missing = EventWriter(clients.dynamodb, own.settings)
            missing._events_table = f"{own.settings.resource_prefix}-no-such-table"
            results = await missing.write(events)
            assert Counter(r.outcome for r in results.values()) == {Outcome.UNAVAILABLE: 30}
            assert not await missing.probe()

            fixed = EventWriter(clients.dynamodb, own.settings)
            assert await fixed.probe()
            results = await fixed.write(events)
            assert Counter(r.outcome for r in results.values()) == {Outcome.STORED: 30}

    asyncio.run(run())
    assert asyncio.run(counts(own, account)) == [30]  # nothing was half-written before


class HotAccountDynamo:
    """The real DynamoDB client, but one account's counter items answer ThrottlingError
    (per item, in the cancellation reasons) for as long as ``hot`` is set."""

    def __init__(self, client: Any, account: str) -> None:
        self._client = client
        self._account = account
        self.hot = True
        self.throttled_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> Any:
        hot = [
            "Update" in op and op["Update"]["Key"]["counter_id"]["S"].startswith(self._account) for op in TransactItems
        ]
        if self.hot and any(hot):
            self.throttled_calls += 1
            reasons = [{"Code": "ThrottlingError" if h else "None"} for h in hot]
            error: Any = {
                "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
                "CancellationReasons": reasons,
            }
            raise ClientError(error, "TransactWriteItems")
        return await self._client.transact_write_items(TransactItems=TransactItems)


def test_one_throttled_account_is_deferred_through_the_queue_and_the_others_are_stored(stack: Stack) -> None:
    own = private_stack(stack)
    hot_account = new_account_id()
    cold_accounts = [new_account_id() for _ in range(4)]
    hot = [queued(hot_account, n) for n in range(4)]
    cold = [[queued(a, n) for n in range(3)] for a in cold_accounts]

    async def run() -> tuple[int, list[str]]:
        async with open_clients(own.settings) as clients:
            urls = QueueUrls(
                events=(await clients.sqs.admin.get_queue_url(QueueName=own.settings.events_queue))["QueueUrl"],
                dead_letters=(await clients.sqs.admin.get_queue_url(QueueName=own.settings.dead_letter_queue))[
                    "QueueUrl"
                ],
            )
            for i in range(4):  # each message: one account's cold events beside one hot event
                body = encode_message([*cold[i], hot[i]])
                await clients.sqs.admin.send_message(QueueUrl=urls.events, MessageBody=body)
            dynamo = HotAccountDynamo(clients.dynamodb, hot_account)
            writer = EventWriter(dynamo, own.settings)  # type: ignore[arg-type]
            worker = Worker(
                clients.sqs,
                urls,
                BatchProcessor(writer),
                receivers=2,
                wait_time_s=1,
                shutdown_grace_s=5,
                visibility_timeout_s=30,
                probe=writer.probe,
            )
            with capture_logs() as logs:
                task = asyncio.create_task(worker.run())
                store = InboxStore(clients.dynamodb, own.settings)
                for _ in range(300):  # the cold events, while the hot account still throttles
                    if [await store.count(a, None) for a in cold_accounts] == [3] * 4:
                        break
                    await asyncio.sleep(0.05)
                cold_while_hot = sum([await store.count(a, None) for a in cold_accounts])
                dynamo.hot = False  # the hot partition calms down: the deferred events land
                for _ in range(300):
                    if await store.count(hot_account, None) == 4:
                        break
                    await asyncio.sleep(0.05)
                worker.stop()
                await task
            return cold_while_hot, [e["event"] for e in logs]

    cold_while_hot, events = asyncio.run(run())
    assert cold_while_hot == 12  # every cold event stored while the hot account throttled
    assert asyncio.run(counts(own, *cold_accounts, hot_account)) == [3, 3, 3, 3, 4]  # each once
    assert "deferred" in events
    assert "storage_unavailable" not in events  # one hot account never closes the gate
    assert queue_counts(own, own.settings.events_queue) == (0, 0)
    assert queue_counts(own, own.settings.dead_letter_queue) == (0, 0)


def lambda_records(stack: Stack, bodies: list[str], visibility_s: int) -> list[dict[str, Any]]:
    """Send ``bodies`` to the events queue and receive them as Lambda's mapping would."""

    async def run() -> list[dict[str, Any]]:
        async with open_clients(stack.settings) as clients:
            url = (await clients.sqs.admin.get_queue_url(QueueName=stack.settings.events_queue))["QueueUrl"]
            for body in bodies:
                await clients.sqs.admin.send_message(QueueUrl=url, MessageBody=body)
            received: list[Any] = []
            while len(received) < len(bodies):
                response = await clients.sqs.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=1,
                    VisibilityTimeout=visibility_s,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                )
                received += response.get("Messages", [])
            return [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": dict(m.get("Attributes", {})),
                    "messageAttributes": {},
                }
                for m in received
            ]

    return asyncio.run(run())


def test_lambda_hides_messages_it_reports_as_failed_during_an_outage(stack: Stack) -> None:
    own = private_stack(stack)
    account = new_account_id()
    records = lambda_records(own, [encode_message([queued(account, n)]) for n in range(2)], visibility_s=1)
    writer = LambdaWriter(settings_from_env({**own.env, **BROKEN_DYNAMODB}))
    try:
        answer = writer.handle({"Records": records})
    finally:
        writer.close()
    assert sorted(f["itemIdentifier"] for f in answer["batchItemFailures"]) == sorted(r["messageId"] for r in records)
    time.sleep(1.5)  # past the 1 s the mapping's receive hid them for
    assert queue_counts(own, own.settings.events_queue) == (0, 2)  # still hidden: a receive covers longer
    assert queue_counts(own, own.settings.dead_letter_queue) == (0, 0)
    assert asyncio.run(counts(own, account)) == [0]


def test_lambda_rides_out_an_outage_while_its_time_remains(stack: Stack) -> None:
    own = private_stack(stack)
    account = new_account_id()
    records = lambda_records(own, [encode_message([queued(account, n)]) for n in range(3)], visibility_s=60)
    with FaultyLink(own.settings.dynamodb_endpoint_url or own.settings.aws_endpoint_url or "") as link:
        link.set_mode("down")
        env = {**own.env, "TRIGGERS_DYNAMODB_ENDPOINT_URL": link.url, "TRIGGERS_AWS_MAX_ATTEMPTS": "1"}
        writer = LambdaWriter(settings_from_env(env))
        healed = threading.Timer(2.0, link.set_mode, args=("pass",))
        healed.start()
        deadline = time.monotonic() + 30
        try:
            answer = writer.handle({"Records": records}, lambda: deadline - time.monotonic())
        finally:
            healed.cancel()
            writer.close()
    assert answer == {"batchItemFailures": []}
    assert asyncio.run(counts(own, account)) == [3]
