"""The writer as an AWS Lambda function behind an SQS event-source mapping.

It shares the processing core with the long-running worker (``BatchProcessor``) and reports
partial batch failures: only messages that must come back are listed in
``batchItemFailures`` (the mapping needs ``FunctionResponseTypes: [ReportBatchItemFailures]``);
Lambda deletes the rest. A poison message is sent to the dead-letter queue with its reason
and then reported as handled, exactly as the worker does.

Clients are opened on the first invocation and kept for the life of the execution
environment (not at import time), on one event loop that outlives invocations.

Handler: ``writer_worker.lambda_handler.handler``
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from shared.aws import open_clients
from shared.logging import configure_logging
from shared.settings import Settings, get_settings
from writer_worker.dead_letters import DeadLetters
from writer_worker.processor import BatchProcessor, Disposition, Received
from writer_worker.store import EventWriter


@dataclass
class _Resources:
    processor: BatchProcessor
    dead_letters: DeadLetters
    stack: contextlib.AsyncExitStack


class LambdaWriter:
    """One per execution environment: a loop, clients and a processor, opened lazily."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._runner = asyncio.Runner()
        self._resources: _Resources | None = None

    def handle(self, event: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
        return self._runner.run(self._handle(event))

    def close(self) -> None:
        if self._resources is not None:
            self._runner.run(self._resources.stack.aclose())
            self._resources = None
        self._runner.close()

    async def _open(self) -> _Resources:
        if self._resources is None:
            stack = contextlib.AsyncExitStack()
            clients = await stack.enter_async_context(open_clients(self._settings, pool_size=16))
            dlq_url = (await clients.sqs.get_queue_url(QueueName=self._settings.dead_letter_queue))["QueueUrl"]
            self._resources = _Resources(
                processor=BatchProcessor(EventWriter(clients.dynamodb, self._settings)),
                dead_letters=DeadLetters(clients.sqs, dlq_url),
                stack=stack,
            )
        return self._resources

    async def _handle(self, event: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
        resources = await self._open()
        received = [
            Received(
                message_id=record["messageId"],
                body=record["body"],
                receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", "1")),
            )
            for record in event.get("Records", [])
        ]
        by_id = {m.message_id: m for m in received}
        failures = []
        for result in await resources.processor.process(received):
            if result.disposition is Disposition.DONE:
                continue
            if result.disposition is Disposition.POISON and await resources.dead_letters.send(
                by_id[result.message_id], result
            ):
                continue
            failures.append({"itemIdentifier": result.message_id})
        return {"batchItemFailures": failures}


_writer: LambdaWriter | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """Lambda entry point."""
    del context  # unused: time limits are the mapping's batch window and the function timeout
    global _writer  # noqa: PLW0603 - one writer per execution environment, made on first use
    if _writer is None:
        settings = get_settings()
        configure_logging(settings.log_level, json=settings.log_json)
        _writer = LambdaWriter(settings)
    return _writer.handle(event)
