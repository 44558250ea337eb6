"""The processing core shared by the long-running worker and the Lambda handler.

A batch is handled message by message, and a message event by event: each message gets its
own disposition, so one bad message never fails or retries its neighbours, and one event
that can never be stored is set apart (``MessageResult.rejected``, dead-lettered alone by
the caller) while every other event of its message is stored.

``Received`` is the one place a message is read off the wire, in either of the shapes the
writer receives it: an SQS ReceiveMessage answer (the worker) or an SQS event record of
AWS Lambda (the Lambda handler).
"""

from __future__ import annotations

import enum
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from shared.contract.envelope import QueuedEvent, decode_message
from shared.observability.metrics import WRITER_BATCH_MESSAGES, WRITER_EVENTS, WRITER_LAG_SECONDS
from shared.web.decoding import UNDECODABLE
from writer_worker.store import EventResult, EventWriter, Outcome

log = structlog.get_logger()

# On a message of deferred events: how many times they were throttled and sent again
# (written by dead_letters.Deferrals, read back by Received).
DEFERRALS_ATTRIBUTE = "deferrals"


class Disposition(enum.StrEnum):
    DONE = "done"  # every event is stored, rejected alone (``rejected``) or deferred alone (``deferred``): delete it
    RETRY = "retry"  # something about its events failed for now: let it come back later
    WAIT = "wait"  # storage is unavailable (outage, throttling): hold it until storage answers
    POISON = "poison"  # its envelope cannot be decoded: dead-letter it whole, with the reason


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    body: str
    receive_count: int = 1
    deferrals: int = 0  # how often its events were throttled and sent again (DEFERRALS_ATTRIBUTE)

    @classmethod
    def from_sqs(cls, message: Mapping[str, Any]) -> Received:
        """A message of an SQS ReceiveMessage answer (MessageId, Body, Attributes, MessageAttributes)."""
        return cls._read(message, _SQS_NAMES)

    @classmethod
    def from_lambda_record(cls, record: Mapping[str, Any]) -> Received:
        """A record of a Lambda SQS event (messageId, body, attributes, messageAttributes)."""
        return cls._read(record, _LAMBDA_NAMES)

    @classmethod
    def _read(cls, message: Mapping[str, Any], names: tuple[str, str, str, str]) -> Received:
        message_id, body, attributes, message_attributes = names
        return cls(
            message_id=message[message_id],
            body=message[body],
            receive_count=int(message.get(attributes, {}).get("ApproximateReceiveCount", "1")),
            deferrals=deferrals_of(message.get(message_attributes, {})),
        )


# The same four fields, spelt by SQS's API and by Lambda's SQS event.
_SQS_NAMES = ("MessageId", "Body", "Attributes", "MessageAttributes")
_LAMBDA_NAMES = ("messageId", "body", "attributes", "messageAttributes")


def deferrals_of(attributes: Mapping[str, Any]) -> int:
    """The deferral count of a received message, from its attributes (SQS's or Lambda's spelling)."""
    value = attributes.get(DEFERRALS_ATTRIBUTE, {})
    raw = value.get("StringValue", value.get("stringValue", "0"))
    return int(raw) if str(raw).isdigit() else 0


@dataclass(frozen=True, slots=True)
class Rejected:
    """One event that can never be stored as it is, and why."""

    event: QueuedEvent
    reason: str


@dataclass(frozen=True, slots=True)
class MessageResult:
    message_id: str
    disposition: Disposition
    reason: str = ""
    rejected: tuple[Rejected, ...] = ()  # with DONE: to dead-letter, each alone, before deleting
    # With DONE: events whose account's items were throttled. They go back to the events
    # queue in a message of their own, with a delay, before this one is deleted: one hot
    # account never holds back, or fails, the other accounts' events it shared a message with.
    deferred: tuple[QueuedEvent, ...] = ()


class BatchProcessor:
    def __init__(self, writer: EventWriter) -> None:
        self._writer = writer

    async def process(self, messages: list[Received]) -> list[MessageResult]:
        started = time.perf_counter()
        decoded: dict[str, list[QueuedEvent]] = {}
        poisoned: dict[str, str] = {}
        for message in messages:
            try:
                decoded[message.message_id] = decode_message(message.body).events
            except (msgspec.DecodeError, *UNDECODABLE) as exc:
                poisoned[message.message_id] = f"undecodable message: {exc}"
        events = [e for batch in decoded.values() for e in batch]
        results = await self._writer.write(events) if events else {}
        outcome = [self._dispose(m.message_id, decoded, poisoned, results) for m in messages]
        _log_batch(messages, events, results, outcome, time.perf_counter() - started)
        _measure(messages, events, results)
        return outcome

    @staticmethod
    def _dispose(
        message_id: str,
        decoded: dict[str, list[QueuedEvent]],
        poisoned: dict[str, str],
        results: dict[str, EventResult],
    ) -> MessageResult:
        if message_id in poisoned:
            return MessageResult(message_id, Disposition.POISON, poisoned[message_id])
        events = decoded[message_id]
        outcomes = [results[e.event_id] for e in events]
        waiting = [r.reason for r in outcomes if r.outcome is Outcome.UNAVAILABLE]
        if waiting:
            return MessageResult(message_id, Disposition.WAIT, waiting[0])
        retry = [r.reason for r in outcomes if r.outcome is Outcome.RETRY]
        if retry:
            return MessageResult(message_id, Disposition.RETRY, retry[0])
        rejected = tuple(
            Rejected(e, r.reason) for e, r in zip(events, outcomes, strict=True) if r.outcome is Outcome.REJECTED
        )
        deferred = tuple(e for e, r in zip(events, outcomes, strict=True) if r.outcome is Outcome.THROTTLED)
        return MessageResult(message_id, Disposition.DONE, rejected=rejected, deferred=deferred)


_EVENTS_BY_OUTCOME = {outcome: WRITER_EVENTS.labels(outcome.value) for outcome in Outcome}


def _measure(messages: list[Received], events: list[QueuedEvent], results: dict[str, EventResult]) -> None:
    WRITER_BATCH_MESSAGES.observe(len(messages))
    for outcome, count in Counter(r.outcome for r in results.values()).items():
        _EVENTS_BY_OUTCOME[outcome].inc(count)
    now_us = time.time_ns() // 1000
    for event in events:
        result = results.get(event.event_id)
        if result is not None and result.outcome is Outcome.STORED:
            WRITER_LAG_SECONDS.observe((now_us - event.received_at_us) / 1_000_000)


def _log_batch(
    messages: list[Received],
    events: list[QueuedEvent],
    results: dict[str, EventResult],
    outcome: list[MessageResult],
    duration_s: float,
) -> None:
    """The canonical line of one batch: what came in, what happened, how late it was."""
    now_us = time.time_ns() // 1000
    counts = Counter(r.outcome.value for r in results.values())
    dispositions = Counter(r.disposition.value for r in outcome)
    log.info(
        "batch",
        messages=len(messages),
        events=len(events),
        stored=counts.get(Outcome.STORED.value, 0),
        duplicates=counts.get(Outcome.DUPLICATE.value, 0),
        already_stored=counts.get(Outcome.ALREADY_STORED.value, 0),
        rejected=counts.get(Outcome.REJECTED.value, 0),
        throttled=counts.get(Outcome.THROTTLED.value, 0),
        retry=dispositions.get(Disposition.RETRY.value, 0),
        waiting=dispositions.get(Disposition.WAIT.value, 0),
        poison=dispositions.get(Disposition.POISON.value, 0),
        duration_ms=round(duration_s * 1000, 2),
        max_lag_ms=round(max(((now_us - e.received_at_us) / 1000 for e in events), default=0.0), 1),
        request_ids=sorted({e.request_id for e in events if e.request_id}),
    )
