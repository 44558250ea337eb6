"""Sending to the dead-letter queue, with the reason: a whole message whose envelope cannot be
decoded, or one event alone that can never be stored (in the normal envelope, so that
``triggers dlq replay`` can send it back)."""

from __future__ import annotations

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from types_aiobotocore_sqs import SQSClient

from shared.envelope import encode_message
from shared.metrics import WRITER_DEAD_LETTERS
from writer_worker.processor import MessageResult, Received, Rejected

log = structlog.get_logger()

FAILURE_REASON_ATTRIBUTE = "failure_reason"
SOURCE_MESSAGE_ATTRIBUTE = "source_message_id"
MAX_REASON_CHARS = 1000


class DeadLetters:
    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    async def send(self, message: Received, result: MessageResult) -> bool:
        """Dead-letter ``message`` whole; False if that failed (then it must stay where it is)."""
        return await self._send(message.body, result.reason, message.message_id, events=None)

    async def send_rejected(self, message: Received, result: MessageResult) -> bool:
        """Dead-letter each rejected event of ``message`` alone; False if any send failed."""
        sent = [await self._send_event(message, rejected) for rejected in result.rejected]
        return all(sent)

    async def _send_event(self, message: Received, rejected: Rejected) -> bool:
        body = encode_message([rejected.event])
        return await self._send(body, rejected.reason, message.message_id, events=1)

    async def _send(self, body: str, reason: str, source_id: str, *, events: int | None) -> bool:
        try:
            await self._sqs.send_message(
                QueueUrl=self._queue_url,
                MessageBody=body,
                MessageAttributes={
                    FAILURE_REASON_ATTRIBUTE: {"DataType": "String", "StringValue": reason[:MAX_REASON_CHARS]},
                    SOURCE_MESSAGE_ATTRIBUTE: {"DataType": "String", "StringValue": source_id},
                },
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("dead_letter_failed", message_id=source_id, error=type(exc).__name__)
            return False
        # The reason names the failure (an exception type and DynamoDB's or msgspec's message,
        # which carry positions and field paths), never the payload.
        log.warning("dead_lettered", message_id=source_id, events=events, reason=reason[:200])
        WRITER_DEAD_LETTERS.inc()
        return True
