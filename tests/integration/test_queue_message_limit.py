"""The edge sizes its messages from the queue's own MaximumMessageSize: a queue made before
SQS raised its default to 1 MiB keeps 256 KiB, and `triggers init` raises it."""

from __future__ import annotations

import asyncio

import httpx
import msgspec

from ingest_api.batcher import SQS_ACCOUNTING_ROOM
from shared.aws.clients import open_clients
from shared.contract.envelope import decode_message
from shared.local import processes
from tests.conftest import Stack, init_resources, make_key, private_stack, start_service

OLD_DEFAULT = 256 * 1024


async def _set_limit(stack: Stack, size: int) -> None:
    async with open_clients(stack.settings) as clients:
        url = (await clients.sqs.admin.get_queue_url(QueueName=stack.settings.events_queue))["QueueUrl"]
        await clients.sqs.admin.set_queue_attributes(QueueUrl=url, Attributes={"MaximumMessageSize": str(size)})


async def _limit_and_payloads(stack: Stack) -> tuple[int, list[bytes]]:
    async with open_clients(stack.settings) as clients:
        url = (await clients.sqs.admin.get_queue_url(QueueName=stack.settings.events_queue))["QueueUrl"]
        attributes = await clients.sqs.admin.get_queue_attributes(QueueUrl=url, AttributeNames=["MaximumMessageSize"])
        payloads = []
        while True:
            received = await clients.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            if not received.get("Messages"):
                break
            for message in received["Messages"]:
                payloads += [bytes(e.payload) for e in decode_message(message["Body"]).events]
    return int(attributes["Attributes"]["MaximumMessageSize"]), payloads


def _event(size: int, mark: bytes) -> bytes:
    return b'{"event_type": "big", "payload": {"m": "%s", "s": "%s"}}' % (mark, b"x" * (size - 20))


def test_a_queue_of_256_kib_gets_413_for_what_cannot_fit_and_takes_the_rest(stack: Stack) -> None:
    own = private_stack(stack)
    asyncio.run(_set_limit(own, OLD_DEFAULT))
    ingest = start_service(own, "ingest")
    try:
        key = make_key(own)
        headers = {**key.headers, "Content-Type": "application/json"}
        fits = OLD_DEFAULT - SQS_ACCOUNTING_ROOM - 10 * 1024  # well within one message
        too_big = OLD_DEFAULT - 100  # within the 256 KiB payload limit, not within a 256 KiB message
        with httpx.Client(timeout=30) as http:
            refused = http.post(f"{ingest.url}/events", content=_event(too_big, b"refused"), headers=headers)
            assert refused.status_code == 413, refused.text  # before: 503, the queue refused the message
            assert [d["field"] for d in refused.json()["details"]] == ["$.payload"]
            taken = http.post(f"{ingest.url}/events", content=_event(fits, b"single"), headers=headers)
            assert taken.status_code == 202, taken.text
            batch = b'{"events": [%s]}' % b",".join(_event(fits, b"batch-%d" % i) for i in range(3))
            batched = http.post(f"{ingest.url}/events/batch", content=batch, headers=headers)
            assert batched.status_code == 202, batched.text
    finally:
        processes.stop([ingest.process])
    log = (own.logs / f"ingest-{ingest.url.rsplit(':', 1)[1]}.log").read_text()
    assert log.count("queue_message_limit_below_1_mib") == 1  # one warning line, at startup
    limit, payloads = asyncio.run(_limit_and_payloads(own))
    assert limit == OLD_DEFAULT
    marks = sorted(msgspec.json.decode(p)["m"] for p in payloads)
    assert marks == ["batch-0", "batch-1", "batch-2", "single"]  # each in the queue once; the 413 one not at all
    init_resources(own.settings)  # `triggers init` raises an existing queue's limit
    assert asyncio.run(_limit_and_payloads(own))[0] == 1024 * 1024
