"""Sending messages the writer sets apart: to the dead-letter queue with the reason (a whole
message whose envelope cannot be decoded, or the events of a message that can never be
stored, each alone in the normal envelope so that ``triggers dlq replay`` can send it back),
and back to the events queue, with a delay, for events whose account was throttled.

Every send is one SendMessageBatch (entries that fail are sent again a few times, policy
``SQS_RESEND``): a message is deleted only once everything it sets apart was sent, and a
failure part way leaves as few copies behind as it can (a copy is harmless: the store is
exactly-once, and replay recognises stored events).
"""

from __future__ import annotations

import math
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from types_aiobotocore_sqs import SQSClient

from shared.contract.envelope import QueuedEvent, encode_message
from shared.observability.metrics import WRITER_DEAD_LETTERS
from shared.retry import SQS_RESEND, THROTTLE_DEFER, retry_pending
from writer_worker.processor import MessageResult, Received

log = structlog.get_logger()

FAILURE_REASON_ATTRIBUTE = "failure_reason"
SOURCE_MESSAGE_ATTRIBUTE = "source_message_id"
# On a message of deferred events: how many times they were throttled and sent again.
DEFERRALS_ATTRIBUTE = "deferrals"
MAX_REASON_CHARS = 1000
SQS_BATCH = 10  # entries per SendMessageBatch
SQS_BATCH_BYTES = 256 * 1024  # bodies per SendMessageBatch (SQS's lowest documented limit)
SQS_MAX_DELAY_S = 900


def _string(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def deferrals_of(attributes: dict[str, Any]) -> int:
    """The deferral count of a received message, from its attributes (SQS's or Lambda's spelling)."""
    value = attributes.get(DEFERRALS_ATTRIBUTE, {})
    raw = value.get("StringValue", value.get("stringValue", "0"))
    return int(raw) if str(raw).isdigit() else 0


async def send_batch(sqs: SQSClient, queue_url: str, entries: list[dict[str, Any]]) -> bool:
    """Send ``entries`` with SendMessageBatch, again for those that failed; True if all went."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in entries:
        body_size = len(entry["MessageBody"].encode())
        if chunks[-1] and (len(chunks[-1]) == SQS_BATCH or size + body_size > SQS_BATCH_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += body_size
    ok = True
    for chunk in chunks:
        if chunk:
            ok = not await retry_pending(SQS_RESEND, chunk, lambda pending: _send_chunk(sqs, queue_url, pending)) and ok
    return ok


async def _send_chunk(sqs: SQSClient, queue_url: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One SendMessageBatch; the entries that were not sent."""
    try:
        response = await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
    except (BotoCoreError, ClientError) as exc:
        log.warning("send_failed", error=type(exc).__name__, messages=len(entries))
        return entries
    failed = {f["Id"] for f in response.get("Failed", [])}
    if failed:
        log.warning("send_partly_failed", codes=sorted({f.get("Code", "") for f in response["Failed"]}))
    return [e for e in entries if e["Id"] in failed]


class DeadLetters:
    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    async def send(self, message: Received, result: MessageResult) -> bool:
        """Dead-letter ``message`` whole; False if that failed (then it must stay where it is)."""
        entry = self._entry("0", message.body, result.reason, message.message_id)
        return await self._send([entry], message.message_id, events=None)

    async def send_rejected(self, message: Received, result: MessageResult) -> bool:
        """Dead-letter each rejected event of ``message`` alone, in one batch; False if any failed."""
        if not result.rejected:
            return True
        entries = [
            self._entry(str(i), encode_message([r.event]), r.reason, message.message_id)
            for i, r in enumerate(result.rejected)
        ]
        return await self._send(entries, message.message_id, events=1)

    @staticmethod
    def _entry(entry_id: str, body: str, reason: str, source_id: str) -> dict[str, Any]:
        return {
            "Id": entry_id,
            "MessageBody": body,
            "MessageAttributes": {
                FAILURE_REASON_ATTRIBUTE: _string(reason[:MAX_REASON_CHARS]),
                SOURCE_MESSAGE_ATTRIBUTE: _string(source_id),
            },
        }

    async def _send(self, entries: list[dict[str, Any]], source_id: str, *, events: int | None) -> bool:
        if not await send_batch(self._sqs, self._queue_url, entries):
            log.warning("dead_letter_failed", message_id=source_id)
            return False
        for entry in entries:
            # The reason names the failure (an exception type and DynamoDB's or msgspec's
            # message, which carry positions and field paths), never the payload.
            reason = entry["MessageAttributes"][FAILURE_REASON_ATTRIBUTE]["StringValue"]
            log.warning("dead_lettered", message_id=source_id, events=events, reason=reason[:200])
            WRITER_DEAD_LETTERS.inc()
        return True


class Deferrals:
    """Throttled events go back to the events queue alone, later (``THROTTLE_DEFER``)."""

    def __init__(self, sqs: SQSClient, events_url: str) -> None:
        self._sqs = sqs
        self._events_url = events_url

    async def send(self, message: Received, events: tuple[QueuedEvent, ...]) -> bool:
        """Send ``events`` of ``message`` again as one message of their own; False if that failed."""
        if not events:
            return True
        deferrals = message.deferrals + 1
        delay_s = min(SQS_MAX_DELAY_S, max(1, math.ceil(THROTTLE_DEFER.delay_s(message.deferrals))))
        entry = {
            "Id": "0",
            "MessageBody": encode_message(list(events)),
            "DelaySeconds": delay_s,
            "MessageAttributes": {
                DEFERRALS_ATTRIBUTE: {"DataType": "Number", "StringValue": str(deferrals)},
                SOURCE_MESSAGE_ATTRIBUTE: _string(message.message_id),
            },
        }
        sent = await send_batch(self._sqs, self._events_url, [entry])
        log.info("deferred", message_id=message.message_id, events=len(events), delay_s=delay_s, deferrals=deferrals)
        return sent
