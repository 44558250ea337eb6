"""Sending a poison message to the dead-letter queue, with the reason it could not be stored."""

from __future__ import annotations

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from types_aiobotocore_sqs import SQSClient

from shared.metrics import WRITER_DEAD_LETTERS
from writer_worker.processor import MessageResult, Received

log = structlog.get_logger()

FAILURE_REASON_ATTRIBUTE = "failure_reason"
SOURCE_MESSAGE_ATTRIBUTE = "source_message_id"
MAX_REASON_CHARS = 1000


class DeadLetters:
    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        self._sqs = sqs
        self._queue_url = queue_url

    async def send(self, message: Received, result: MessageResult) -> bool:
        """Dead-letter ``message``; False if that failed (then it must stay where it is)."""
        try:
            await self._sqs.send_message(
                QueueUrl=self._queue_url,
                MessageBody=message.body,
                MessageAttributes={
                    FAILURE_REASON_ATTRIBUTE: {"DataType": "String", "StringValue": result.reason[:MAX_REASON_CHARS]},
                    SOURCE_MESSAGE_ATTRIBUTE: {"DataType": "String", "StringValue": message.message_id},
                },
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("dead_letter_failed", message_id=message.message_id, error=type(exc).__name__)
            return False
        log.warning("dead_lettered", message_id=message.message_id, reason=result.reason[:200])
        WRITER_DEAD_LETTERS.inc()
        return True
