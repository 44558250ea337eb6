"""The long-running writer: long-poll SQS, process, delete only what is stored.

Shutdown (SIGTERM/SIGINT): stop receiving, let in-flight batches finish within
``writer_shutdown_grace_s``, make what is still unfinished visible again at once, and log
one summary line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from types_aiobotocore_sqs import SQSClient

from shared.aws import AWS_REQUESTS
from writer_worker.dead_letters import DeadLetters
from writer_worker.processor import BatchProcessor, Disposition, MessageResult, Received

log = structlog.get_logger()

SQS_BATCH = 10  # ReceiveMessage / DeleteMessageBatch limit
# A message that failed for now comes back after 2**receive_count seconds, capped, instead
# of waiting out the whole visibility timeout.
RETRY_BASE_DELAY_S = 1
RETRY_MAX_DELAY_S = 60
# After a receive error (endpoint down), a receiver pauses this long before polling again.
RECEIVE_ERROR_PAUSE_S = 1.0
# A batch that is still being written keeps its messages hidden: every third of the
# visibility timeout, their timeout is renewed, so they never reappear mid-write.
HEARTBEAT_FRACTION = 1 / 3


@dataclass(frozen=True, slots=True)
class QueueUrls:
    events: str
    dead_letters: str


class Worker:
    def __init__(
        self,
        sqs: SQSClient,
        urls: QueueUrls,
        processor: BatchProcessor,
        *,
        receivers: int,
        wait_time_s: int,
        shutdown_grace_s: float,
        visibility_timeout_s: int,
    ) -> None:
        self._sqs = sqs
        self._urls = urls
        self._processor = processor
        self._dead_letters = DeadLetters(sqs, urls.dead_letters)
        self._visibility_s = visibility_timeout_s
        self._receivers = receivers
        self._wait_time_s = wait_time_s
        self._grace_s = shutdown_grace_s
        self._stopping = asyncio.Event()
        self._in_flight: dict[str, str] = {}  # receipt handle -> message id
        self.totals: Counter[str] = Counter()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        started = time.monotonic()
        loops = [asyncio.create_task(self._receive_loop(), name=f"receiver-{i}") for i in range(self._receivers)]
        log.info("writer_started", receivers=self._receivers, queue=self._urls.events)
        await self._stopping.wait()
        _, unfinished = await asyncio.wait(loops, timeout=self._grace_s)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        released = await self._release_in_flight()
        log.info(
            "writer_stopped",
            uptime_s=round(time.monotonic() - started, 1),
            unfinished_batches=len(unfinished),
            released_messages=released,
            messages=dict(self.totals),
            aws_requests=dict(AWS_REQUESTS),
        )

    async def _receive_loop(self) -> None:
        while not self._stopping.is_set():
            messages = await self._receive()
            if not messages:
                continue
            try:
                await self._handle(messages)
            except Exception:
                # Its messages were not deleted: they come back after the visibility timeout.
                log.exception("batch_failed", messages=len(messages))

    async def _receive(self) -> list[dict[str, Any]]:
        """One long poll, abandoned as soon as shutdown starts."""
        receive = asyncio.ensure_future(
            self._sqs.receive_message(
                QueueUrl=self._urls.events,
                MaxNumberOfMessages=SQS_BATCH,
                WaitTimeSeconds=self._wait_time_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        )
        stopping = asyncio.ensure_future(self._stopping.wait())
        done, _ = await asyncio.wait({receive, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if receive not in done:
            receive.cancel()
            return []
        try:
            return list(receive.result().get("Messages", []))  # type: ignore[arg-type]
        except (BotoCoreError, ClientError) as exc:
            log.warning("receive_failed", error=type(exc).__name__)
            await asyncio.sleep(RECEIVE_ERROR_PAUSE_S)
            return []

    async def _handle(self, messages: list[dict[str, Any]]) -> None:
        handles = {m["MessageId"]: m["ReceiptHandle"] for m in messages}
        self._in_flight.update({h: i for i, h in handles.items()})
        cancelled = False
        try:
            received = [
                Received(
                    message_id=m["MessageId"],
                    body=m["Body"],
                    receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                )
                for m in messages
            ]
            heartbeat = asyncio.create_task(self._keep_hidden(list(handles.values())))
            try:
                results = await self._processor.process(received)
            finally:
                heartbeat.cancel()
            await self._settle(received, results, handles)
        except asyncio.CancelledError:
            cancelled = True  # shutdown ran out of time: run() gives these messages back
            raise
        finally:
            if not cancelled:
                for handle in handles.values():
                    self._in_flight.pop(handle, None)

    async def _keep_hidden(self, handles: list[str]) -> None:
        """Renew the visibility timeout of a batch for as long as it is being processed."""
        while True:
            await asyncio.sleep(self._visibility_s * HEARTBEAT_FRACTION)
            await self._change_visibility(handles, self._visibility_s)
            self.totals["visibility_extended"] += 1

    async def _settle(self, received: list[Received], results: list[MessageResult], handles: dict[str, str]) -> None:
        by_id = {m.message_id: m for m in received}
        done = [r.message_id for r in results if r.disposition is Disposition.DONE]
        for result in results:
            self.totals[result.disposition.value] += 1
            if result.disposition is Disposition.POISON and await self._dead_letters.send(
                by_id[result.message_id], result
            ):
                done.append(result.message_id)
            elif result.disposition is Disposition.RETRY:
                await self._retry_later(handles[result.message_id], by_id[result.message_id].receive_count)
        await self._delete([handles[i] for i in done])

    async def _retry_later(self, handle: str, receive_count: int) -> None:
        delay = min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2 ** max(0, receive_count - 1))
        with contextlib.suppress(BotoCoreError, ClientError):
            await self._sqs.change_message_visibility(
                QueueUrl=self._urls.events, ReceiptHandle=handle, VisibilityTimeout=delay
            )

    async def _delete(self, handles: list[str]) -> None:
        for start in range(0, len(handles), SQS_BATCH):
            chunk = handles[start : start + SQS_BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)]
            try:
                response = await self._sqs.delete_message_batch(QueueUrl=self._urls.events, Entries=entries)  # type: ignore[arg-type]
            except (BotoCoreError, ClientError) as exc:
                # Not deleted means delivered again later, and stored-once makes that harmless.
                log.warning("delete_failed", error=type(exc).__name__, messages=len(chunk))
                continue
            if response.get("Failed"):
                log.warning("delete_partly_failed", failed=len(response["Failed"]))

    async def _release_in_flight(self) -> int:
        """Give unfinished messages back to the queue now rather than after their timeout."""
        handles = list(self._in_flight)
        await self._change_visibility(handles, 0)
        return len(handles)

    async def _change_visibility(self, handles: list[str], timeout_s: int) -> None:
        for start in range(0, len(handles), SQS_BATCH):
            chunk = handles[start : start + SQS_BATCH]
            entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": timeout_s} for i, h in enumerate(chunk)]
            try:
                await self._sqs.change_message_visibility_batch(QueueUrl=self._urls.events, Entries=entries)  # type: ignore[arg-type]
            except (BotoCoreError, ClientError) as exc:
                log.warning("visibility_change_failed", error=type(exc).__name__, messages=len(chunk))
