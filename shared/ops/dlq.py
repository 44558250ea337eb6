"""Inspecting and replaying the dead-letter queue, without StartMessageMoveTask.

Replay receives from the DLQ, sends each chosen message back to the events queue, and only
then deletes it from the DLQ: a crash between the two leaves a copy in both, which the
writer's deduplication makes harmless. A message whose events are all stored already is
not sent again ("duplicate"); one that cannot be decoded stays in the DLQ ("invalid").
Works the same on AWS, LocalStack and moto (moto lacks the move-task API).

Events older than the event retention: a stored event is removed by TTL at the earliest
``event_retention_s`` after it was received (it must be acknowledged first, and it was
received before it was stored). So a missing item means "never stored" only for an event
younger than that; for an older one it may as well mean "stored, acknowledged and expired",
and sending it again would put an acknowledged event back into the inbox. For such an event
its dedup claim decides, which outlives the event (``shared.storage.claims``):
no claim for its dedup key means it was never stored, and it is replayed; a claim naming it
means it was stored, one naming another event means another holds its key, and either way
it is not replayed ("expired"); past the claim's own lifetime nothing can tell, and it is
not replayed either. A message made only of expired events (and of stored ones) stays in the
DLQ, reported "expired"; in a message that also holds events to replay, they are put back
into the DLQ on their own, with that reason, and the rest is replayed.

Dead letters made while a run goes (a replayed event that fails again) are left for the
next run, reported "later": those whose events this run sent back, and those SQS stamped
after the run began, with ``CLOCK_MARGIN_S`` for the operator's clock against SQS's.
"""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from botocore.exceptions import ClientError

from shared.aws.clients import AwsClients
from shared.aws.sqs import SQS_BATCH_ENTRIES
from shared.contract.dead_letter import dead_letter_attributes, reason_of
from shared.contract.envelope import QueuedEvent, QueueMessage, decode_message, encode_message
from shared.settings import Settings
from shared.storage.claims import CLAIM_EXISTS_PROJECTION, claim_exists_answer, claim_key
from shared.storage.events import EXISTS_PROJECTION, event_key, exists_answer
from shared.storage.layout import claim_linger_s, dedup_id
from shared.storage.reads import BatchGetAnswer, batch_get

T = TypeVar("T")

# How long a message received for inspection or replay stays hidden from other readers.
HOLD_S = 60
# How far the operator's clock may be behind SQS's before a dead letter sent just before the
# run looks as if it was sent during it (and is left for the next run, reported "later").
CLOCK_MARGIN_S = 60


class Outcome(enum.StrEnum):
    REPLAYED = "replayed"
    WOULD_REPLAY = "would_replay"  # --dry-run
    DUPLICATE = "duplicate"  # every event is in the inbox already: removed, not resent
    INVALID = "invalid"  # cannot be decoded: left in the DLQ
    SKIPPED = "skipped"  # did not match the filter: left in the DLQ
    EXPIRED = "expired"  # only events past retention (and stored ones): left in the DLQ
    LATER = "later"  # dead-lettered while this run went on: left for the next run


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    receipt_handle: str
    body: str
    reason: str
    sent_at_s: float
    message: QueueMessage | None

    def summary(self) -> dict[str, Any]:
        events = self.message.events if self.message else []
        return {
            "message_id": self.message_id,
            "reason": self.reason,
            "age_s": round(time.time() - self.sent_at_s, 1),
            "events": len(events),
            "event_types": sorted({e.event_type for e in events}),
            "event_ids": [e.event_id for e in events][:5],
        }


@dataclass(frozen=True)
class ReplayFilter:
    event_type: str | None = None
    older_than_s: float | None = None
    newer_than_s: float | None = None

    def matches(self, message: QueueMessage) -> bool:
        """A message matches if any of its events does (its events travel together)."""
        now_us = time.time_ns() // 1000
        for event in message.events:
            age_s = (now_us - event.received_at_us) / 1_000_000
            if self.event_type is not None and event.event_type != self.event_type:
                continue
            if self.older_than_s is not None and age_s < self.older_than_s:
                continue
            if self.newer_than_s is not None and age_s > self.newer_than_s:
                continue
            return True
        return False


@dataclass
class ReplayReport:
    outcomes: dict[str, str] = field(default_factory=dict)  # message id -> outcome

    def counts(self) -> dict[str, int]:
        counted = {o.value: 0 for o in Outcome}
        for outcome in self.outcomes.values():
            counted[outcome] += 1
        return counted


class DeadLetterQueue:
    def __init__(self, clients: AwsClients, settings: Settings) -> None:
        self._clients = clients
        self._settings = settings
        self._urls: dict[str, str] = {}

    async def _url(self, name: str) -> str:
        if name not in self._urls:
            self._urls[name] = (await self._clients.sqs.admin.get_queue_url(QueueName=name))["QueueUrl"]
        return self._urls[name]

    async def depth(self, name: str | None = None) -> dict[str, int]:
        url = await self._url(name or self._settings.dead_letter_queue)
        attributes = (
            await self._clients.sqs.admin.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )
        )["Attributes"]
        return {
            "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
        }

    async def receive(self, limit: int) -> AsyncIterator[list[DeadLetter]]:
        """Batches of dead letters, each held for ``HOLD_S``, until ``limit`` or empty."""
        url = await self._url(self._settings.dead_letter_queue)
        taken = 0
        while taken < limit:
            response = await self._clients.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(SQS_BATCH_ENTRIES, limit - taken),
                VisibilityTimeout=HOLD_S,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["SentTimestamp"],
            )
            messages = response.get("Messages", [])
            if not messages:
                return
            taken += len(messages)
            yield [_dead_letter(m) for m in messages]

    async def release(self, letters: list[DeadLetter]) -> None:
        """Make held messages visible again at once."""
        if not letters:
            return
        url = await self._url(self._settings.dead_letter_queue)
        entries: Any = [
            {"Id": str(i), "ReceiptHandle": d.receipt_handle, "VisibilityTimeout": 0} for i, d in enumerate(letters)
        ]
        await self._clients.sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)

    async def peek(self, limit: int) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        async for batch in self.receive(limit):
            letters += batch
        for start in range(0, len(letters), SQS_BATCH_ENTRIES):
            await self.release(letters[start : start + SQS_BATCH_ENTRIES])
        return letters

    async def replay(
        self,
        chosen: ReplayFilter,
        *,
        limit: int,
        dry_run: bool,
        progress: Callable[[int], None] = lambda _: None,
    ) -> ReplayReport:
        report = ReplayReport()
        events_url = await self._url(self._settings.events_queue)
        dlq_url = await self._url(self._settings.dead_letter_queue)
        kept: list[DeadLetter] = []  # held until the end, so no batch returns them again
        set_apart: set[str] = set()  # dead letters this run made itself (expired events)
        # Dead letters sent after the run began are left for the next run: a replayed event
        # that fails again comes back as a new dead letter, which must not be replayed in a loop.
        started_s = time.time()
        sent_back: set[str] = set()  # event ids this run replayed
        try:
            async for batch in self.receive(limit):
                later = [d for d in batch if d.message_id in set_apart or _made_during(d, started_s, sent_back)]
                kept += later
                for letter in later:
                    if letter.message_id not in set_apart:
                        report.outcomes[letter.message_id] = Outcome.LATER.value
                seen = report.outcomes.keys() | {d.message_id for d in later}
                fresh = [letter for letter in batch if letter.message_id not in seen]
                if not fresh:
                    break  # the queue has come round again
                for letter in fresh:
                    outcome, plan = await self._decide(letter, chosen, dry_run)
                    report.outcomes[letter.message_id] = outcome.value
                    if outcome is Outcome.REPLAYED:
                        await self._clients.sqs.admin.send_message(
                            QueueUrl=events_url, MessageBody=plan.replay_body(letter)
                        )
                        sent_back.update(e.event_id for e in plan.replay)
                        if plan.expired:  # kept, alone, rather than lost with the message
                            sent = await self._clients.sqs.admin.send_message(
                                QueueUrl=dlq_url,
                                MessageBody=encode_message(plan.expired),
                                MessageAttributes=dead_letter_attributes(EXPIRED_REASON),  # type: ignore[arg-type]
                            )
                            set_apart.add(sent["MessageId"])
                    if outcome in (Outcome.REPLAYED, Outcome.DUPLICATE) and not dry_run:
                        await self._clients.sqs.admin.delete_message(
                            QueueUrl=dlq_url, ReceiptHandle=letter.receipt_handle
                        )
                    else:
                        kept.append(letter)
                progress(len(fresh))
        finally:
            for start in range(0, len(kept), SQS_BATCH_ENTRIES):
                await self.release(kept[start : start + SQS_BATCH_ENTRIES])
        return report

    async def _decide(self, letter: DeadLetter, chosen: ReplayFilter, dry_run: bool) -> tuple[Outcome, _Plan]:
        if letter.message is None:
            return Outcome.INVALID, _Plan()
        if not chosen.matches(letter.message):
            return Outcome.SKIPPED, _Plan()
        plan = await self._plan(letter.message)
        if plan.replay:
            return (Outcome.WOULD_REPLAY if dry_run else Outcome.REPLAYED), plan
        return (Outcome.EXPIRED if plan.expired else Outcome.DUPLICATE), plan

    async def _plan(self, message: QueueMessage) -> _Plan:
        """Which events to send again: those not stored, and young enough to know it."""
        plan = _Plan()
        now_us = time.time_ns() // 1000
        oldest_us = now_us - self._settings.event_retention_s * 1_000_000
        # A claim is kept until this long after its event was received (its TTL).
        claim_lives_us = (self._settings.dedup_window_s + claim_linger_s(self._settings.event_retention_s)) * 1_000_000
        stored = await self._stored(message.events)
        unknown = [e for e in message.events if (e.account_id, e.event_id) not in stored]
        # Past retention, a missing event may have expired: its claim decides (module docstring).
        old = [e for e in unknown if e.received_at_us <= oldest_us and e.received_at_us + claim_lives_us > now_us]
        claimed = await self._claimed(old)
        for event in message.events:
            if (event.account_id, event.event_id) in stored:
                plan.stored.append(event)
            elif event.received_at_us > oldest_us:
                plan.replay.append(event)
            elif event.received_at_us + claim_lives_us > now_us and _claim_id(event) not in claimed:
                plan.replay.append(event)  # past retention, but its dedup key was never claimed
            else:
                plan.expired.append(event)
        return plan

    async def _stored(self, events: list[QueuedEvent]) -> set[tuple[str, str]]:
        """The (account, event id) of those events that are stored."""
        keys = [
            event_key(account, event_id) for account, event_id in sorted({(e.account_id, e.event_id) for e in events})
        ]
        found = await self._existing(self._settings.events_table, keys, EXISTS_PROJECTION, exists_answer)
        return {(item.account_id.S, item.event_id.S) for item in found}

    async def _claimed(self, events: list[QueuedEvent]) -> set[str]:
        """The dedup claims that exist for these events' keys (naming them, or other events)."""
        keys = [claim_key(claim) for claim in sorted({_claim_id(e) for e in events})]
        found = await self._existing(self._settings.dedup_table, keys, CLAIM_EXISTS_PROJECTION, claim_exists_answer)
        return {item.dedup_id.S for item in found}

    async def _existing(
        self, table: str, keys: list[dict[str, Any]], projection: str, answer: msgspec.json.Decoder[BatchGetAnswer[T]]
    ) -> list[T]:
        """Consistent batch reads (distinct keys); a key DynamoDB refuses (an empty id or account)
        names nothing: a refused batch is read again key by key, to set that key aside."""
        if not keys:
            return []
        try:
            return await batch_get(self._clients.dynamodb, table, keys, projection, answer)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ValidationException":
                raise
            if len(keys) == 1:
                return []
        found: list[T] = []
        for key in keys:
            found += await self._existing(table, [key], projection, answer)
        return found


def _claim_id(event: QueuedEvent) -> str:
    return dedup_id(event.account_id, event.dedup_key())


EXPIRED_REASON = (
    "expired: older than the event retention, so it may have been stored, acknowledged and "
    "removed since; replay never sends it again"
)


@dataclass
class _Plan:
    replay: list[QueuedEvent] = field(default_factory=list)
    stored: list[QueuedEvent] = field(default_factory=list)
    expired: list[QueuedEvent] = field(default_factory=list)

    def replay_body(self, letter: DeadLetter) -> str:
        """The message as it was when every event goes back (byte for byte), else just those."""
        if not self.stored and not self.expired:
            return letter.body
        return encode_message(self.replay)


def _made_during(letter: DeadLetter, started_s: float, sent_back: set[str]) -> bool:
    """Was this dead letter made while the run went on (so that replaying it would loop)?"""
    if letter.sent_at_s > started_s + CLOCK_MARGIN_S:
        return True
    events = letter.message.events if letter.message else []
    return bool(events) and all(e.event_id in sent_back for e in events)


def _dead_letter(message: Any) -> DeadLetter:
    try:
        decoded: QueueMessage | None = decode_message(message["Body"])
    except msgspec.DecodeError:
        decoded = None
    attributes = message.get("MessageAttributes", {})
    reason = reason_of(attributes)
    sent_ms = int(message.get("Attributes", {}).get("SentTimestamp", "0"))
    return DeadLetter(
        message_id=message["MessageId"],
        receipt_handle=message["ReceiptHandle"],
        body=message["Body"],
        reason=reason,
        sent_at_s=sent_ms / 1000,
        message=decoded,
    )
