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
import enum
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from shared.aws.clients import AWS_REQUESTS
from shared.aws.sqs import SQS_BATCH_ENTRIES, LeanSqs
from shared.retry import STORAGE_PROBE, BackoffPolicy
from writer_worker.dead_letters import SetApart, change_visibility
from writer_worker.processor import DEFERRALS_ATTRIBUTE, BatchProcessor, Disposition, MessageResult, Received

if TYPE_CHECKING:
    from types_aiobotocore_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef

log = structlog.get_logger()

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


class _State(enum.Enum):
    OPEN = "open"  # every receiver and held batch writes
    CLOSED = "closed"  # storage is unavailable: one task probes it, everyone else waits
    HALF_OPEN = "half_open"  # the probe answered: one held batch writes, as the real test


class StorageGate:
    """Open while storage takes writes; closed, receivers wait and one task probes it.

    A probe that answers does not reopen the gate for everyone: it lets one batch through
    (half-open; a held batch first, which is what the outage stopped), and that batch's
    writes decide: stored, the gate opens; unavailable again, it closes and probing goes on.

    The backoff level is kept across probes and resets only when a write succeeds, so storage
    that answers the probe but still refuses writes is tried less and less often rather than
    in a tight loop.
    """

    def __init__(self, probe: Callable[[], Awaitable[bool]], policy: BackoffPolicy, stopping: asyncio.Event) -> None:
        self._probe = probe
        self._policy = policy
        self._stopping = stopping
        self._state = _State.OPEN
        self._changed = asyncio.Event()  # set, and replaced, at every change of state
        self._trial: asyncio.Task[Any] | None = None  # half-open: the task let through as the test
        self._held_waiting = 0  # held batches waiting at the gate (they go first when half-open)
        self._level = 0
        self._closed_at = 0.0
        self._probes = 0
        self._prober: asyncio.Task[None] | None = None
        self.outages = 0

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    def close(self, reason: str) -> None:
        """A write met a service-wide failure: stop writing until storage answers again."""
        if self._state is _State.CLOSED:
            return
        if self._state is _State.OPEN:
            self.outages += 1
            self._closed_at = time.monotonic()
            self._probes = 0
            log.warning("storage_unavailable", reason=reason, backoff_level=self._level)
        else:
            log.warning("storage_trial_failed", reason=reason, backoff_level=self._level)
        self._set(_State.CLOSED)
        self._start_prober()

    def succeeded(self) -> None:
        """A batch was written (not one of its events unavailable): storage takes writes."""
        self._level = 0
        if self._state is not _State.OPEN:
            waited_s = round(time.monotonic() - self._closed_at, 1)
            log.info("storage_available", waited_s=waited_s, probes=self._probes)
            self._set(_State.OPEN)

    def abandoned(self) -> None:
        """The batch let through as the test ended without a verdict: let another one try."""
        if self._state is _State.HALF_OPEN and self._trial is asyncio.current_task():
            self._trial = None
            self._notify()

    async def wait_open(self, *, held: bool = False) -> bool:
        """Wait until this caller may write: True; False only on shutdown.

        Open: at once. Half-open: the first caller takes the one trial, held batches
        (``held``) before receivers. A gate that closes again before a waiter runs is
        simply waited on again: closing is never read as stopping.
        """
        if held:
            self._held_waiting += 1
        try:
            while not self._stopping.is_set():
                if self._state is _State.OPEN:
                    return True
                if self._state is _State.HALF_OPEN and self._trial is None and (held or not self._held_waiting):
                    self._trial = asyncio.current_task()
                    return True
                await _first(self._changed.wait(), self._stopping.wait())
            return False
        finally:
            if held:
                self._held_waiting -= 1

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)

    def _set(self, state: _State) -> None:
        self._state = state
        self._trial = None
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _start_prober(self) -> None:
        if self._prober is not None and not self._prober.done():
            return
        self._prober = asyncio.create_task(self._probe_until_up(), name="storage-probe")
        self._prober.add_done_callback(self._prober_ended)

    def _prober_ended(self, task: asyncio.Task[None]) -> None:
        # The prober is the only way out of CLOSED: if it ever dies, start it again.
        if task.cancelled() or task.exception() is None:
            return
        log.error("storage_probe_crashed", error=type(task.exception()).__name__)
        if self._state is _State.CLOSED and not self._stopping.is_set():
            self._start_prober()

    async def _probe_until_up(self) -> None:
        while not self._stopping.is_set():
            await _first(self._policy.pause(self._level), self._stopping.wait())
            if self._stopping.is_set():
                return  # shutdown, not storage answering: the gate stays as it is
            self._level += 1
            self._probes += 1
            if await self._probe_once():
                break
        if self._stopping.is_set():
            return
        log.info("storage_answering", probes=self._probes, backoff_level=self._level)
        self._set(_State.HALF_OPEN)

    async def _probe_once(self) -> bool:
        try:
            return await self._probe()
        except Exception as exc:  # noqa: BLE001 - whatever the probe raises, storage is not known to be up
            log.warning("storage_probe_failed", error=type(exc).__name__)
            return False


async def _first(*waits: Awaitable[Any]) -> None:
    """Wait until the first of ``waits`` is done, cancel the others; raise what it raised."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


class Worker:
    def __init__(
        self,
        sqs: LeanSqs,
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
        self._set_apart = SetApart(sqs, dead_letters_url=urls.dead_letters, events_url=urls.events)
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
        # wait_open() is False only on shutdown: a receiver ends then, and only then.
        while await self._gate.wait_open():
            messages = await self._receive()
            if not messages:
                self._gate.abandoned()  # had it let this receiver through as the test, another may go
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
                MaxNumberOfMessages=SQS_BATCH_ENTRIES,
                WaitTimeSeconds=self._wait_time_s,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=[DEFERRALS_ATTRIBUTE],
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
            pending = [Received.from_sqs(m) for m in messages]
            # Messages that met a storage outage stay here, hidden, until storage answers;
            # on shutdown they stay in _in_flight and run() gives them back.
            first = True
            while pending and (first or await self._gate.wait_open(held=True)):
                first = False
                try:
                    results = await self._processor.process(pending)
                except Exception:
                    self._gate.abandoned()
                    raise
                waiting = {r.message_id for r in results if r.disposition is Disposition.WAIT}
                if waiting:  # the gate's verdict first: it is about storage, not about settling
                    self._gate.close(next(r.reason for r in results if r.disposition is Disposition.WAIT))
                else:
                    self._gate.succeeded()
                settled = [r for r in results if r.disposition is not Disposition.WAIT]
                await self._settle(pending, settled, handles)
                for result in settled:
                    held.remove(handles[result.message_id])
                    self._in_flight.pop(handles[result.message_id], None)
                self.totals["held_for_storage"] += len(waiting)
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
        done: list[MessageResult] = []
        for result in results:
            message = by_id[result.message_id]
            if result.disposition in (Disposition.DONE, Disposition.POISON):
                # What it sets apart goes first; if that fails the message stays, comes back,
                # and its stored events are recognised as already stored.
                if await self._set_apart.send(message, result):
                    done.append(result)
                else:
                    self.totals["set_apart_failed"] += 1
            elif result.disposition is Disposition.RETRY:
                self.totals[result.disposition.value] += 1
                await self._retry_later(handles[result.message_id], message.receive_count)
        deleted = await self._delete([handles[r.message_id] for r in done])
        for result in done:  # counted once it is really gone from the queue
            if handles[result.message_id] in deleted:
                self.totals[result.disposition.value] += 1
            else:
                self.totals["delete_failed"] += 1

    async def _retry_later(self, handle: str, receive_count: int) -> None:
        delay = min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2 ** max(0, receive_count - 1))
        with contextlib.suppress(BotoCoreError, ClientError):
            await self._sqs.change_message_visibility(
                QueueUrl=self._urls.events, ReceiptHandle=handle, VisibilityTimeout=delay
            )

    async def _delete(self, handles: list[str]) -> set[str]:
        """Delete the messages of ``handles``; the handles whose delete succeeded."""
        deleted: set[str] = set()
        for start in range(0, len(handles), SQS_BATCH_ENTRIES):
            chunk = handles[start : start + SQS_BATCH_ENTRIES]
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)
            ]
            try:
                response = await self._sqs.delete_message_batch(QueueUrl=self._urls.events, Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                # Not deleted means delivered again later, and stored-once makes that harmless.
                log.warning("delete_failed", error=type(exc).__name__, messages=len(chunk))
                continue
            failed = {f["Id"] for f in response.get("Failed", [])}
            if failed:
                log.warning("delete_partly_failed", codes=sorted({f.get("Code", "") for f in response["Failed"]}))
            deleted |= {h for i, h in enumerate(chunk) if str(i) not in failed}
        return deleted

    async def _release_in_flight(self) -> int:
        """Give unfinished messages back to the queue now rather than after their timeout."""
        handles = list(self._in_flight)
        await self._change_visibility(handles, 0)
        return len(handles)

    async def _change_visibility(self, handles: list[str], timeout_s: int) -> None:
        await change_visibility(self._sqs, self._urls.events, [(h, timeout_s) for h in handles])
