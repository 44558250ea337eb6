"""Sending messages the writer sets apart: to the dead-letter queue with the reason (a whole
message whose envelope cannot be decoded, or the events of a message that can never be
stored, each alone in the normal envelope so that ``triggers dlq replay`` can send it back),
and back to the events queue, with a delay, for events whose account was throttled
(``SetApart``, the one place the worker and the Lambda handler do this); and changing the
visibility of messages the writer keeps (``change_visibility``).

Every send is one SendMessageBatch (entries that fail are sent again a few times, policy
``SQS_RESEND``): a message is deleted only once everything it sets apart was sent, and a
failure part way leaves as few copies behind as it can (a copy is harmless: the store is
exactly-once, and replay recognises stored events). The dead letter's attributes are the
contract's (shared/contract/dead_letter.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from shared.aws.sqs import SQS_BATCH_ENTRIES, SQS_MAX_DELAY_S, LeanSqs
from shared.contract.dead_letter import SOURCE_MESSAGE_ATTRIBUTE, dead_letter_attributes, reason_of, string_attribute
from shared.contract.envelope import QueuedEvent, encode_message
from shared.observability.metrics import WRITER_DEAD_LETTERS
from shared.retry import SQS_RESEND, THROTTLE_DEFER, retry_pending
from writer_worker.processor import DEFERRALS_ATTRIBUTE, Disposition, MessageResult, Received

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import ChangeMessageVisibilityBatchRequestEntryTypeDef

log = structlog.get_logger()

SQS_BATCH_BYTES = 256 * 1024  # bodies per SendMessageBatch (SQS's lowest documented limit)


async def send_batch(sqs: LeanSqs, queue_url: str, entries: list[dict[str, Any]]) -> bool:
    """Send ``entries`` with SendMessageBatch, again for those that failed; True if all went."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in entries:
        body_size = len(entry["MessageBody"].encode())
        if chunks[-1] and (len(chunks[-1]) == SQS_BATCH_ENTRIES or size + body_size > SQS_BATCH_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += body_size
    ok = True
    for chunk in chunks:
        if chunk:
            ok = not await retry_pending(SQS_RESEND, chunk, lambda pending: _send_chunk(sqs, queue_url, pending)) and ok
    return ok


async def _send_chunk(sqs: LeanSqs, queue_url: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
    def __init__(self, sqs: LeanSqs, queue_url: str) -> None:
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
            "MessageAttributes": dead_letter_attributes(reason, source_id),
        }

    async def _send(self, entries: list[dict[str, Any]], source_id: str, *, events: int | None) -> bool:
        if not await send_batch(self._sqs, self._queue_url, entries):
            log.warning("dead_letter_failed", message_id=source_id)
            return False
        for entry in entries:
            # The reason names the failure (an exception type and DynamoDB's or msgspec's
            # message, which carry positions and field paths), never the payload.
            reason = reason_of(entry["MessageAttributes"])
            log.warning("dead_lettered", message_id=source_id, events=events, reason=reason[:200])
            WRITER_DEAD_LETTERS.inc()
        return True


class Deferrals:
    """Throttled events go back to the events queue alone, later (``THROTTLE_DEFER``)."""

    def __init__(self, sqs: LeanSqs, events_url: str) -> None:
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
                SOURCE_MESSAGE_ATTRIBUTE: string_attribute(message.message_id),
            },
        }
        sent = await send_batch(self._sqs, self._events_url, [entry])
        log.info("deferred", message_id=message.message_id, events=len(events), delay_s=delay_s, deferrals=deferrals)
        return sent


class SetApart:
    """What a processed message must send elsewhere before it is deleted (worker and Lambda)."""

    def __init__(self, sqs: LeanSqs, *, dead_letters_url: str, events_url: str) -> None:
        self.dead_letters = DeadLetters(sqs, dead_letters_url)
        self.deferrals = Deferrals(sqs, events_url)

    async def send(self, message: Received, result: MessageResult) -> bool:
        """True if ``message`` may be deleted now: POISON, it went to the DLQ whole; DONE, its
        rejected events went there alone, then its throttled ones back to the events queue."""
        if result.disposition is Disposition.POISON:
            return await self.dead_letters.send(message, result)
        if result.disposition is Disposition.DONE:
            return await self.dead_letters.send_rejected(message, result) and await self.deferrals.send(
                message, result.deferred
            )
        return False  # RETRY, WAIT: it stays on the queue


async def change_visibility(sqs: LeanSqs, queue_url: str, timeouts: Sequence[tuple[str, int]]) -> None:
    """Set the visibility timeout of each (receipt handle, seconds), a batch call per
    ``SQS_BATCH_ENTRIES``. Best effort: a failure is logged by error code and count, and
    those messages come back sooner (or later) than asked, which the store makes harmless."""
    for start in range(0, len(timeouts), SQS_BATCH_ENTRIES):
        chunk = timeouts[start : start + SQS_BATCH_ENTRIES]
        entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": t} for i, (h, t) in enumerate(chunk)
        ]
        try:
            response = await sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
        except (BotoCoreError, ClientError) as exc:
            log.warning("visibility_change_failed", error=type(exc).__name__, messages=len(chunk))
            continue
        if response.get("Failed"):  # e.g. a receipt handle that expired: that message may reappear
            codes = sorted({f.get("Code", "") for f in response["Failed"]})
            log.warning("visibility_change_partly_failed", codes=codes, messages=len(response["Failed"]))
