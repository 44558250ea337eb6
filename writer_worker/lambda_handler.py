"""The writer as an AWS Lambda function behind an SQS event-source mapping.

It shares the processing core with the long-running worker (``BatchProcessor``) and reports
partial batch failures: only messages that must come back are listed in
``batchItemFailures`` (the mapping needs ``FunctionResponseTypes: [ReportBatchItemFailures]``);
Lambda deletes the rest. A message whose envelope cannot be decoded is sent to the
dead-letter queue with its reason and then reported as handled, and an event that can never
be stored goes there alone while the rest of its message is stored, exactly as the worker does.

Storage outages: the function cannot pause its event-source mapping, so it holds the batch
within its own invocation instead: it probes storage (``STORAGE_PROBE``) and writes the held
messages again while more than ``LAMBDA_RESERVE_S`` of its time remains, and only then
reports them as failures, first hiding each for ``OUTAGE_REDELIVERY`` after its receive
count (30 s, 60 s, ... 15 min), so each receive covers more of the outage. A batch stops at
its first unavailable group (the writer tries no more groups once storage as a whole
failed). docs/operations.md says how to size the function timeout and maxReceiveCount for
the outages to ride out.

Events whose account's items were throttled (one hot account, not storage as a whole) go
back to the events queue in a message of their own, with a delay, and their message is
reported as handled: they never make other accounts' events of the same message fail.

Clients are opened on the first invocation and kept for the life of the execution
environment (not at import time), on one event loop that outlives invocations.

Handler: ``writer_worker.lambda_handler.handler``
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.aws.clients import open_clients
from shared.aws.sqs import SQS_MAX_DELAY_S, LeanSqs
from shared.observability.logging import configure_logging
from shared.retry import OUTAGE_REDELIVERY, STORAGE_PROBE
from shared.settings import Settings, get_settings
from writer_worker.consumer_view import ConsumerViews
from writer_worker.dead_letters import SetApart, change_visibility
from writer_worker.processor import BatchProcessor, Disposition, MessageResult, Received
from writer_worker.store import EventWriter

# Time kept free at the end of an invocation for one more write and the answer.
LAMBDA_RESERVE_S = 8.0


@dataclass
class _Resources:
    processor: BatchProcessor
    writer: EventWriter
    set_apart: SetApart
    stack: contextlib.AsyncExitStack
    sqs: LeanSqs
    events_url: str


class LambdaWriter:
    """One per execution environment: a loop, clients and a processor, opened lazily."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._runner = asyncio.Runner()
        self._resources: _Resources | None = None

    def handle(
        self, event: dict[str, Any], remaining_s: Callable[[], float] = lambda: 0.0
    ) -> dict[str, list[dict[str, str]]]:
        """Process one invocation; ``remaining_s`` is the time it has left (none: fail at once)."""
        return self._runner.run(self._handle(event, remaining_s))

    def close(self) -> None:
        if self._resources is not None:
            self._runner.run(self._resources.stack.aclose())
            self._resources = None
        self._runner.close()

    async def _open(self) -> _Resources:
        if self._resources is None:
            stack = contextlib.AsyncExitStack()
            clients = await stack.enter_async_context(open_clients(self._settings, pool_size=16))
            dlq_url = (await clients.sqs.admin.get_queue_url(QueueName=self._settings.dead_letter_queue))["QueueUrl"]
            events_url = (await clients.sqs.admin.get_queue_url(QueueName=self._settings.events_queue))["QueueUrl"]
            writer = EventWriter(
                clients.dynamodb, self._settings, views=ConsumerViews(clients.dynamodb, self._settings)
            )
            self._resources = _Resources(
                processor=BatchProcessor(writer),
                writer=writer,
                set_apart=SetApart(clients.sqs, dead_letters_url=dlq_url, events_url=events_url),
                stack=stack,
                sqs=clients.sqs,
                events_url=events_url,
            )
        return self._resources

    async def _handle(self, event: dict[str, Any], remaining_s: Callable[[], float]) -> dict[str, list[dict[str, str]]]:
        resources = await self._open()
        received = [Received.from_lambda_record(record) for record in event.get("Records", [])]
        handles = {r["messageId"]: r.get("receiptHandle", "") for r in event.get("Records", [])}
        by_id = {m.message_id: m for m in received}
        failures, waiting = [], []
        for result in await self._process_riding_out_outages(resources, received, remaining_s):
            message = by_id[result.message_id]
            if result.disposition in (Disposition.DONE, Disposition.POISON) and await resources.set_apart.send(
                message, result
            ):
                continue
            if result.disposition is Disposition.WAIT:
                waiting.append(message)
            failures.append({"itemIdentifier": result.message_id})
        await _hide_for_outage(resources, waiting, handles)
        return {"batchItemFailures": failures}

    @staticmethod
    async def _process_riding_out_outages(
        resources: _Resources, received: list[Received], remaining_s: Callable[[], float]
    ) -> list[MessageResult]:
        """Process; while storage is unavailable and time remains, probe and write the held again."""
        settled: dict[str, MessageResult] = {}
        pending, level = received, 0
        while pending:
            for result in await resources.processor.process(pending):
                settled[result.message_id] = result
            waiting = {i for i, r in settled.items() if r.disposition is Disposition.WAIT}
            pending = [m for m in pending if m.message_id in waiting]
            while pending:
                pause = STORAGE_PROBE.delay_s(level)
                level += 1
                if remaining_s() - pause < LAMBDA_RESERVE_S:
                    return [settled[m.message_id] for m in received]
                await asyncio.sleep(pause)
                if await resources.writer.probe():
                    break
        return [settled[m.message_id] for m in received]


async def _hide_for_outage(resources: _Resources, waiting: list[Received], handles: dict[str, str]) -> None:
    """Storage was unavailable all invocation long: hide each message for longer per receive.

    A failed record is visible again at once otherwise (at the visibility timeout at most),
    and a long outage would spend every receive in minutes. Best effort: if this fails the
    messages simply come back sooner.
    """
    timeouts = [
        (handles[m.message_id], min(SQS_MAX_DELAY_S, int(OUTAGE_REDELIVERY.ceiling_s(m.receive_count - 1))))
        for m in waiting
        if handles.get(m.message_id)
    ]
    await change_visibility(resources.sqs, resources.events_url, timeouts)


_writer: LambdaWriter | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """Lambda entry point."""
    global _writer  # noqa: PLW0603 - one writer per execution environment, made on first use
    if _writer is None:
        settings = get_settings()
        configure_logging(settings.log_level, json=settings.log_json)
        _writer = LambdaWriter(settings)
    return _writer.handle(event, lambda: float(context.get_remaining_time_in_millis()) / 1000)
