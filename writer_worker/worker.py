"""The long-running writer: long-poll SQS, process, delete only what is stored.

Storage outages cost time, not receives: when a batch meets an outage (DynamoDB unreachable,
throttling, 5xx), the worker keeps that batch hidden (heartbeat), closes its storage gate so
that no receiver takes more messages, probes storage with one cheap call after each pause of
the ``STORAGE_PROBE`` policy (shared/retry.py), and once it answers writes the held messages
again. A message's receive count then counts its own failures, not the outage's length.

Shutdown (SIGTERM/SIGINT): stop receiving, let in-flight batches finish within
``writer_shutdown_grace_s``, make what is still unfinished (or held) visible again at once,
and log one summary line.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from types_aiobotocore_sqs import SQSClient

from shared.aws import AWS_REQUESTS
from shared.retry import STORAGE_PROBE, BackoffPolicy
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


async def _always_up() -> bool:
    return True


class StorageGate:
    """Open while storage answers; closed, receivers wait and one task probes it.

    The backoff level is kept across probes and resets only when a write succeeds, so storage
    that answers the probe but still refuses writes (throttling on one partition) is tried
    less and less often rather than in a tight loop.
    """

    def __init__(self, probe: Callable[[], Awaitable[bool]], policy: BackoffPolicy, stopping: asyncio.Event) -> None:
        self._probe = probe
        self._policy = policy
        self._stopping = stopping
        self._open = asyncio.Event()
        self._open.set()
        self._level = 0
        self._prober: asyncio.Task[None] | None = None
        self.outages = 0

    def close(self, reason: str) -> None:
        """A write met an outage: stop receiving until the probe says storage answers."""
        if self._open.is_set():
            self._open.clear()
            self.outages += 1
            log.warning("storage_unavailable", reason=reason, backoff_level=self._level)
            self._prober = asyncio.create_task(self._probe_until_up(), name="storage-probe")

    def succeeded(self) -> None:
        self._level = 0

    async def wait_open(self) -> bool:
        """True at once while open; closed, wait until storage answers (True) or shutdown (False)."""
        if self._open.is_set():
            return True
        opened = asyncio.ensure_future(self._open.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({opened, stopping}, return_when=asyncio.FIRST_COMPLETED)
        opened.cancel()
        stopping.cancel()
        return self._open.is_set() and not self._stopping.is_set()

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)

    async def _probe_until_up(self) -> None:
        started = time.monotonic()
        probes = 0
        while not self._stopping.is_set():
            await self._policy.pause(self._level)
            self._level += 1
            probes += 1
            if await self._probe():
                break
        log.info("storage_available", waited_s=round(time.monotonic() - started, 1), probes=probes)
        self._open.set()


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
        probe: Callable[[], Awaitable[bool]] = _always_up,
        probe_policy: BackoffPolicy = STORAGE_PROBE,
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
        self._gate = StorageGate(probe, probe_policy, self._stopping)
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
        await self._gate.aclose()
        released = await self._release_in_flight()
        log.info(
            "writer_stopped",
            uptime_s=round(time.monotonic() - started, 1),
            unfinished_batches=len(unfinished),
            released_messages=released,
            storage_outages=self._gate.outages,
            messages=dict(self.totals),
            aws_requests=dict(AWS_REQUESTS),
        )

    async def _receive_loop(self) -> None:
        while not self._stopping.is_set() and await self._gate.wait_open():
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
        held = list(handles.values())  # what the heartbeat keeps hidden; shrinks as messages settle
        heartbeat = asyncio.create_task(self._keep_hidden(held))
        try:
            pending = [
                Received(
                    message_id=m["MessageId"],
                    body=m["Body"],
                    receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                )
                for m in messages
            ]
            # Messages that met a storage outage stay here, hidden, until storage answers;
            # on shutdown they stay in _in_flight and run() gives them back.
            while pending and await self._gate.wait_open():
                results = await self._processor.process(pending)
                waiting = {r.message_id for r in results if r.disposition is Disposition.WAIT}
                settled = [r for r in results if r.disposition is not Disposition.WAIT]
                await self._settle(pending, settled, handles)
                for result in settled:
                    held.remove(handles[result.message_id])
                    self._in_flight.pop(handles[result.message_id], None)
                if not waiting:
                    self._gate.succeeded()
                    break
                self.totals["held_for_storage"] += len(waiting)
                self._gate.close(next(r.reason for r in results if r.disposition is Disposition.WAIT))
                pending = [m for m in pending if m.message_id in waiting]
        except Exception:
            for handle in held:  # not settled: they come back after their visibility timeout
                self._in_flight.pop(handle, None)
            raise
        finally:
            heartbeat.cancel()

    async def _keep_hidden(self, handles: list[str]) -> None:
        """Renew the visibility timeout of a batch for as long as it is being processed."""
        while True:
            await asyncio.sleep(self._visibility_s * HEARTBEAT_FRACTION)
            await self._change_visibility(list(handles), self._visibility_s)
            self.totals["visibility_extended"] += 1

    async def _settle(self, received: list[Received], results: list[MessageResult], handles: dict[str, str]) -> None:
        by_id = {m.message_id: m for m in received}
        done = []
        for result in results:
            self.totals[result.disposition.value] += 1
            message = by_id[result.message_id]
            if result.disposition is Disposition.DONE:
                # Rejected events go to the DLQ alone first; if that fails the message stays,
                # comes back, and its stored events are recognised as already stored.
                if await self._dead_letters.send_rejected(message, result):
                    done.append(result.message_id)
            elif result.disposition is Disposition.POISON:
                if await self._dead_letters.send(message, result):
                    done.append(result.message_id)
            elif result.disposition is Disposition.RETRY:
                await self._retry_later(handles[result.message_id], message.receive_count)
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
