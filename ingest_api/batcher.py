"""The durable enqueue path: a shared micro-batcher in front of SQS.

Requests hand their encoded events to the batcher and wait. Within ``linger_s`` the batcher
packs the events of many requests into SQS messages (several events a message) and sends
them with SendMessageBatch (10 messages a call). A request is told "stored" only when every
message holding one of its events was acknowledged by SQS; a failed entry fails only the
events it carried, and a message SQS refuses for what it holds is split and sent again
per submission, so that only the submission whose event caused it fails, never its
neighbours. The events and bytes held (submitted and not yet answered) are bounded: past
either bound, callers are refused at once (503) instead of queueing without limit, so
memory stays bounded however large the events. One owner (an account) may hold at most
``OWNER_SHARE`` of either bound, so that one account's big batches make only that account
wait, not every other. Each SQS call has a deadline
(``send_timeout_s``): one timer per call rather than one per request, so a stuck SQS
answers its callers "not stored" within about twice that time (waiting for a free send
slot, then the send itself).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from shared.aws.sqs import SQS_BATCH_ENTRIES, LeanSqs
from shared.contract.envelope import MESSAGE_FRAME_BYTES, frame
from shared.observability.metrics import SQS_SEND_EVENTS, SQS_SEND_SECONDS

log = structlog.get_logger()

SQS_MAX_REQUEST_BYTES = 1024 * 1024  # limit of one message and of one SendMessageBatch call
# Room left for SQS's own accounting of attributes and entry ids.
SQS_ACCOUNTING_ROOM = 16 * 1024
# The most of the held events or bytes one owner may hold: a quarter of either bound.
OWNER_SHARE = 0.25


class Overloaded(Exception):
    """Too many events already wait for SQS: refuse now rather than queue without bound."""


# Errors of a whole SendMessageBatch that one entry's body can cause: worth finding that entry.
_CONTENT_ERRORS = ("InvalidMessageContents", "BatchRequestTooLong", "MessageTooLong", "InvalidParameterValue")


@dataclass(eq=False, slots=True)
class _Submission:
    events: list[bytes]
    future: asyncio.Future[list[bool]]
    stored: list[bool] = field(default_factory=list)
    unsent: int = 0  # placements of its events in messages not yet answered by SQS
    size: int = 0  # bytes of its events, counted against the batcher's byte bound
    owner: str | None = None  # whose share of the bounds it counts against


@dataclass(slots=True)
class _Message:
    body: bytes  # the framed events (shared.contract.envelope.frame)
    owners: list[tuple[_Submission, int]]  # (submission, index of its event)


class SqsBatcher:
    def __init__(
        self,
        sqs: LeanSqs,
        queue_url: str,
        *,
        linger_s: float = 0.002,
        max_waiting_events: int = 20_000,
        max_waiting_bytes: int = 64 * 1024 * 1024,
        max_concurrent_sends: int = 32,
        send_timeout_s: float = 5.0,
        max_message_bytes: int = SQS_MAX_REQUEST_BYTES,
    ) -> None:
        """``max_message_bytes``: the queue's MaximumMessageSize (read at startup: queues
        made before SQS raised its default keep 256 KiB); a call is bounded by it as well."""
        self._sqs = sqs
        self._queue_url = queue_url
        self._linger_s = linger_s
        self._send_timeout_s = send_timeout_s
        self._max_waiting = max_waiting_events
        self._max_waiting_bytes = max_waiting_bytes
        self._owner_max_events = max(1, int(max_waiting_events * OWNER_SHARE))
        self._owner_max_bytes = max(1, int(max_waiting_bytes * OWNER_SHARE))
        self._budget = min(max_message_bytes, SQS_MAX_REQUEST_BYTES) - SQS_ACCOUNTING_ROOM
        self._waiting: list[_Submission] = []
        # Held: submitted and not yet answered (waiting, being packed, or in a send).
        self._held_events = 0
        self._held_bytes = 0
        self._held_by_owner: dict[str | None, tuple[int, int]] = {}  # owner -> (events, bytes) held
        self._wakeup = asyncio.Event()
        self._sends = asyncio.Semaphore(max_concurrent_sends)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="sqs-batcher")

    @property
    def max_event_bytes(self) -> int:
        """The largest encoded event one message can carry."""
        return self._budget - MESSAGE_FRAME_BYTES

    def submit(self, events: list[bytes], owner: str | None = None) -> asyncio.Future[list[bool]]:
        """Enqueue encoded events; the future tells, per event, whether SQS acknowledged it.

        Refused at once (``Overloaded``) past the batcher's bounds or past ``owner``'s share
        of them (no owner: the bounds alone). Cancelling the future (a caller's timeout) does not unsend anything: the
        events go out with their batch, and the answer is simply no longer awaited.
        """
        size = sum(len(e) for e in events)
        owner_events, owner_bytes = self._held_by_owner.get(owner, (0, 0)) if owner is not None else (0, 0)
        if (
            self._closing
            or self._held_events + len(events) > self._max_waiting
            or self._held_bytes + size > self._max_waiting_bytes
            or (owner is not None and owner_events + len(events) > self._owner_max_events)
            or (owner is not None and owner_bytes + size > self._owner_max_bytes)
        ):
            raise Overloaded
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Submission(events, future, [False] * len(events), size=size, owner=owner))
        self._held_events += len(events)
        self._held_bytes += size
        if owner is not None:
            self._held_by_owner[owner] = (owner_events + len(events), owner_bytes + size)
        if not self._wakeup.is_set():
            self._wakeup.set()
        return future

    async def close(self) -> None:
        """Stop taking new events and flush every one already accepted for sending."""
        self._closing = True
        self._closed.set()
        self._wakeup.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._closing:
                # Let concurrent requests join the batch; close() cuts the wait short.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), self._linger_s)
            self._wakeup.clear()
            batch, self._waiting = self._waiting, []
            if batch:
                for call in _plan_calls(_pack(batch, self._budget), self._budget):
                    await self._sends.acquire()
                    task = asyncio.create_task(self._send(call))
                    self._in_flight.add(task)
                    task.add_done_callback(self._in_flight.discard)
            if self._closing and not self._waiting:
                return

    async def _send(self, messages: list[_Message]) -> None:
        try:
            await self._deliver(messages)
        except Exception as exc:  # noqa: BLE001 - a bug here must not hang callers, nor go unretrieved
            # The type only: an exception's text may quote a body.
            log.error("sqs_send_crashed", error=type(exc).__name__)
        finally:
            self._sends.release()
            for submission in _settle(messages):
                self._release(submission)

    def _release(self, submission: _Submission) -> None:
        self._held_events -= len(submission.events)
        self._held_bytes -= submission.size
        if submission.owner is None:
            return
        events, size = self._held_by_owner.pop(submission.owner)
        if events > len(submission.events):  # the owner holds more: keep its remainder
            self._held_by_owner[submission.owner] = (events - len(submission.events), size - submission.size)

    async def _deliver(self, messages: list[_Message]) -> None:
        """Send ``messages``; when SQS refuses one for what it holds, find the submission
        that caused it, so that its neighbours' events are stored all the same."""
        suspects = await self._attempt(messages)
        if len(suspects) > 1:  # the whole call was refused: one body may be the cause
            alone = await asyncio.gather(*(self._attempt([m]) for m in suspects))
            suspects = [m for refused in alone for m in refused]
        parts = [part for m in suspects for part in _by_submission(m) if part is not m]
        if parts:  # each submission's events alone: what SQS refuses now is that submission's own
            await asyncio.gather(*(self._attempt([part]) for part in parts))

    async def _attempt(self, messages: list[_Message]) -> list[_Message]:
        """One SendMessageBatch; marks what SQS took. Returns the messages refused for what
        they hold (SenderFault, or a content error of the whole call), which a smaller send
        can isolate; SQS's own trouble (throttling, 5xx, timeouts) only fails them."""
        refused: list[_Message] = []
        sendable: list[_Message] = []
        entries: list[dict[str, str]] = []
        for message in messages:
            try:
                body = message.body.decode()
            except UnicodeDecodeError:  # the edge refuses invalid UTF-8; never let it sink a call
                refused.append(message)
                continue
            entries.append({"Id": str(len(sendable)), "MessageBody": body})
            sendable.append(message)
        if not entries:
            return refused
        try:
            SQS_SEND_EVENTS.observe(sum(len(m.owners) for m in sendable))
            with SQS_SEND_SECONDS.time():
                async with asyncio.timeout(self._send_timeout_s):
                    response = await self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)  # type: ignore[arg-type]
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "ClientError"))
            log.warning("sqs_send_failed", error=code, messages=len(sendable))
            return refused + (sendable if code.endswith(_CONTENT_ERRORS) else [])
        except (BotoCoreError, TimeoutError) as exc:
            log.warning("sqs_send_failed", error=type(exc).__name__, messages=len(sendable))
            return refused
        failed = {f["Id"]: f for f in response.get("Failed", [])}
        if failed:
            log.warning("sqs_entries_failed", count=len(failed), codes=sorted({f["Code"] for f in failed.values()}))
        for i, message in enumerate(sendable):
            entry = failed.get(str(i))
            if entry is None:
                for submission, index in message.owners:
                    submission.stored[index] = True
            elif entry.get("SenderFault"):
                refused.append(message)
        return refused


def _by_submission(message: _Message) -> list[_Message]:
    """The message cut into one message per submission it carries (each within its budget)."""
    parts: dict[int, list[tuple[_Submission, int]]] = {}
    for submission, index in message.owners:
        parts.setdefault(id(submission), []).append((submission, index))
    if len(parts) == 1:
        return [message]
    return [_envelope(owners) for owners in parts.values()]


def _envelope(owners: list[tuple[_Submission, int]]) -> _Message:
    return _Message(frame([submission.events[index] for submission, index in owners]), owners)


def _pack(batch: list[_Submission], budget: int) -> list[_Message]:
    """Pack events into as few messages as fit, in arrival order."""
    groups: list[list[tuple[_Submission, int]]] = []
    size = budget  # of the framed events of the last group: none yet, so the first starts one
    for submission in batch:
        submission.unsent = len(submission.events)
        for index, event in enumerate(submission.events):
            if size + 1 + len(event) > budget:  # 1: the comma before it
                groups.append([])
                size = MESSAGE_FRAME_BYTES - 1  # no comma before a group's first event
            size += 1 + len(event)
            groups[-1].append((submission, index))
    return [_envelope(owners) for owners in groups]


def _plan_calls(messages: list[_Message], budget: int) -> list[list[_Message]]:
    """Group messages into SendMessageBatch calls: at most 10 entries and ``budget`` bytes a call."""
    calls: list[list[_Message]] = []
    size = 0
    for message in messages:
        if not calls or len(calls[-1]) == SQS_BATCH_ENTRIES or size + len(message.body) > budget:
            calls.append([])
            size = 0
        calls[-1].append(message)
        size += len(message.body)
    return calls


def _settle(messages: list[_Message]) -> list[_Submission]:
    """Answer the submissions whose every message has now been sent (or has failed); returns them."""
    answered = []
    for message in messages:
        for submission, _ in message.owners:
            submission.unsent -= 1
            if submission.unsent == 0:
                answered.append(submission)
                if not submission.future.done():
                    submission.future.set_result(submission.stored)
    return answered
