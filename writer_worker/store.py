"""Exactly-once storage of events: conditional DynamoDB transactions decide every race.

For a group of events, one TransactWriteItems call does, all or nothing:
- put each event, on condition that its id is not stored yet (SQS redelivery);
- claim each event's dedup key, on condition that no other event holds it within the window
  (copies sent twice, or to two ingest instances);
- add the number of new events to one shard of the account's undelivered counters (shard 0
  unless the account's counter writes contend: ``shared.storage.counters``).
When the transaction is cancelled, its cancellation reasons say which events were already
stored or were duplicates; the rest are written again. So every decision is atomic across
any number of writer processes, and the counters move only with the events they count.

Every event gets its own result: one that cannot be encoded, or that DynamoDB refuses
(``ValidationException``), is ``REJECTED`` alone and the rest of its group is stored. A
storage outage (unreachable, throttling, 5xx) is ``UNAVAILABLE``: nothing is wrong with the
event, and the caller waits for storage rather than counting it against the message.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from types_aiobotocore_dynamodb import DynamoDBClient

from shared.aws.lean import RETRYABLE_CODES
from shared.contract.envelope import QueuedEvent
from shared.contract.ids import new_event_id
from shared.observability.metrics import WRITER_COMMIT_SECONDS, WRITER_RESTAMP_FAILURES, WRITER_RESTAMPS
from shared.retry import CONFLICT_RETRY, retry_pending
from shared.settings import Settings
from shared.storage.counters import THROTTLE_REASONS, ShardChooser, counter_add
from shared.storage.layout import (
    SEP,
    TRANSACTION_MAX_ITEMS,
    claim_linger_s,
    counter_id,
    dedup_id,
    inbox_pk,
    inbox_position,
    inbox_shard,
    inbox_type_pk,
    position_stamp_us,
)

log = structlog.get_logger()

# TransactWriteItems takes 100 items and 4 MB. A group holds as many events as fit: two
# items per event (event, claim), one counter update per account and per (account, type);
# the byte budget keeps large payloads under the size limit.
GROUP_MAX_BYTES = 3 * 1024 * 1024
# How long a dedup claim outlives its window: a copy received inside the window can still
# arrive this much later (SQS keeps a message at most 14 days; a dead letter can be replayed
# while its events are younger than the event retention, and then waits in the queue again),
# and it must still meet the claim. TTL removes claims after that; the condition decides.
# A key no dedup claim can have (account ids never contain the separator at the start): the
# storage probe checks that it does not exist, which reads nothing and writes nothing.
PROBE_KEY = f"{SEP}writer-probe"
# Cancellation reasons that say one item's partition is overloaded, not that the item is
# wrong: they concern the accounts whose items carry them, never the whole transaction.
# Answers that say no write can succeed until something outside the writer changes (keys,
# permissions, a table): like an outage, they hold messages rather than counting against them.
_SERVICE_WIDE_CODES = frozenset(
    {
        "AccessDeniedException",
        "ExpiredTokenException",
        "ExpiredToken",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "ResourceNotFoundException",
    }
)
_US = 1_000_000
# Moves of one late-committed event to a fresh position before giving up (_restamp).
RESTAMP_ATTEMPTS = 3
# The share of the settle margin a commit may take before its events are re-stamped: the
# rest is for the index's propagation and clock differences between hosts (the budget in
# docs/architecture.md, "Inbox: paging and counts").
RESTAMP_FRACTION = 4


class Outcome(enum.StrEnum):
    STORED = "stored"  # new in the inbox
    ALREADY_STORED = "already_stored"  # this very event was stored before (redelivery)
    DUPLICATE = "duplicate"  # another event with its dedup key came first
    RETRY = "retry"  # not stored now; safe to try again later
    UNAVAILABLE = "unavailable"  # storage as a whole did not answer (outage, throttling): wait for it
    THROTTLED = "throttled"  # this event's account's items were throttled: send it again later, alone
    REJECTED = "rejected"  # can never be stored as it is


class _Role(enum.Enum):
    EVENT = "event"
    CLAIM = "claim"
    COUNTER = "counter"


@dataclass(frozen=True, slots=True)
class _Claimed:
    event: QueuedEvent
    claim_id: str  # the dedup item this event claims


@dataclass(frozen=True, slots=True)
class _Item:
    """One item of a transaction, with what it stands for: reasons map back by name."""

    role: _Role
    claimed: _Claimed | None  # None for counter updates
    request: dict[str, Any]
    account: str = ""  # whose item it is: a throttled item concerns this account alone


@dataclass(frozen=True, slots=True)
class EventResult:
    outcome: Outcome
    original_id: str | None = None
    reason: str = ""


class EventWriter:
    def __init__(
        self,
        client: DynamoDBClient,
        settings: Settings,
        *,
        clock_us: Callable[[], int] | None = None,
        monotonic_us: Callable[[], int] | None = None,
    ) -> None:
        self._client = client
        self._clock_us = clock_us or wall_clock_us  # the inbox position's stamp (event_item)
        # How long a commit took: never the wall clock, which NTP may step meanwhile.
        self._monotonic_us = monotonic_us or monotonic_clock_us
        self._events_table = settings.events_table
        self._dedup_table = settings.dedup_table
        self._counters_table = settings.counters_table
        self._window_us = settings.dedup_window_s * _US
        self._retention_s = settings.event_retention_s
        self._claim_linger_s = claim_linger_s(settings.event_retention_s)
        self._shards = ShardChooser(settings.counter_shards)
        self._inbox_shards = settings.inbox_shards
        # An attempt that committed later than this after its stamp is re-stamped.
        self._late_commit_us = settings.inbox_settle_ms * 1000 // RESTAMP_FRACTION

    async def write(self, events: list[QueuedEvent]) -> dict[str, EventResult]:
        """Store events exactly once; the result of each, by event id."""
        results: dict[str, EventResult] = {}
        claims = self._prepare(events, results)
        down = False
        for round_ in _rounds(claims):
            for group in _groups(round_):
                if down:  # storage as a whole is unavailable: the rest would only fail the same way
                    for claimed in group:
                        results[claimed.event.event_id] = EventResult(Outcome.UNAVAILABLE, reason="not tried")
                    continue
                await self._write_group(group, results)
                down = any(results[c.event.event_id].outcome is Outcome.UNAVAILABLE for c in group)
        return results

    async def probe(self) -> bool:
        """Does storage take writes? The known-good control transaction (``_control``)."""
        return await self._control() == "ok"

    async def _control(self) -> str:
        """Write known-good items of each kind on condition that their keys exist: they never do.

        DynamoDB checks every item (key schema, attribute types, index keys) and then cancels
        the transaction on the conditions, so nothing is written. "ok" when it answers so;
        "invalid" when it refuses the known-good items themselves (ValidationException: the
        tables are not what this writer expects); "unavailable" for a service-wide answer.
        """
        now_us = wall_clock_us()
        event = QueuedEvent(
            event_id=new_event_id(now_us // 1000),
            account_id=PROBE_KEY,
            event_type="probe",
            payload=msgspec.Raw(b"{}"),
            received_at_us=now_us,
        )
        claim = self._claim_put(_Claimed(event, PROBE_KEY))
        counter = counter_add(self._counters_table, counter_id(PROBE_KEY), 0, 1)
        items: list[Any] = [
            {"Put": {**self._event_put(event), "ConditionExpression": "attribute_exists(event_id)"}},
            {"Put": {**claim, "ConditionExpression": "attribute_exists(dedup_id)"}},
            {"Update": {**counter, "ConditionExpression": "attribute_exists(counter_id)"}},
        ]
        for item in items:  # no ALL_OLD, no values the new condition does not use
            body = next(iter(item.values()))
            body.pop("ReturnValuesOnConditionCheckFailure", None)
            if item is not items[2]:
                body.pop("ExpressionAttributeValues", None)
        try:
            await self._client.transact_write_items(TransactItems=items)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "TransactionCanceledException":
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if "ValidationError" in reasons:
                    return "invalid"
                return "unavailable" if THROTTLE_REASONS.intersection(reasons) else "ok"
            if unavailable(exc):
                return "unavailable"
            return "invalid" if code == "ValidationException" else "ok"  # any other answer is storage answering
        except BotoCoreError:
            return "unavailable"
        return "ok"

    def _prepare(self, events: list[QueuedEvent], results: dict[str, EventResult]) -> list[_Claimed]:
        """Encode each event's items once, as a check: one that cannot be encoded is rejected alone.

        The Put is built again for every attempt (``_transaction``): it is stamped then.
        """
        claims = []
        for event in events:
            try:
                self._event_put(event)
                claims.append(_Claimed(event, dedup_id(event.account_id, event.dedup_key())))
            except Exception as exc:  # noqa: BLE001 - pure encoding: whatever it raises is this event's fault
                reason = f"event cannot be encoded: {type(exc).__name__}: {exc}"
                results[event.event_id] = EventResult(Outcome.REJECTED, reason=reason)
        return claims

    async def _write_group(
        self, group: list[_Claimed], results: dict[str, EventResult], *, controlled: bool = False
    ) -> None:
        # Each attempt leaves a provisional result on what it returns as pending, so what is
        # still pending when the attempts run out already says why. ``controlled``: a part of
        # a bisected group, whose control write already passed (_bisect).
        await retry_pending(CONFLICT_RETRY, group, lambda pending: self._attempt(pending, results, controlled))

    async def _attempt(
        self, pending: list[_Claimed], results: dict[str, EventResult], controlled: bool = False
    ) -> list[_Claimed]:
        items = self._transaction(pending)
        self._stamp(items)
        started_us = self._monotonic_us()
        try:
            await self._client.transact_write_items(TransactItems=[i.request for i in items])  # type: ignore[misc]
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "TransactionCanceledException":
                reasons: list[Any] = list(exc.response.get("CancellationReasons", []))
                counters = [i.account if i.role is _Role.COUNTER else None for i in items]
                self._shards.cancelled(reasons, (c.event.account_id for c in pending), counters)
                return await self._resolve(pending, items, reasons, results)
            if code == "ValidationException" and not unavailable(exc):
                await self._bisect(pending, results, exc, controlled)
                return []
            _unsettled(pending, results, exc)
            return []
        except BotoCoreError as exc:
            _unsettled(pending, results, exc)
            return []
        for claimed in pending:
            results[claimed.event.event_id] = EventResult(Outcome.STORED)
        await self._settle_positions(items, started_us, results)
        return []

    def _stamp(self, items: list[_Item]) -> int:
        """One inbox position stamp for the attempt: its events sit together, in event id order."""
        stamp_us = self._clock_us()
        for item in items:
            if item.role is _Role.EVENT:
                put = item.request["Put"]["Item"]
                put["inbox_pos"] = {"S": inbox_position(stamp_us, put["event_id"]["S"])}
        return stamp_us

    async def _settle_positions(self, items: list[_Item], started_us: int, results: dict[str, EventResult]) -> None:
        """Re-stamp the events of an attempt that committed later than a quarter of the margin.

        An inbox shows positions at least the margin old; a commit that came later than
        that after its stamp may sit behind a cursor handed out meanwhile. A fresh position
        is after every such cursor (docs/architecture.md, "Inbox: paging and counts"). An
        event whose move fails is not settled: its message comes back (RETRY, or UNAVAILABLE
        for an outage), meets the stored event, and moves it then (``_restamp_stored``).
        """
        took_us = self._monotonic_us() - started_us
        WRITER_COMMIT_SECONDS.observe(took_us / _US)
        if not self._late_commit_us or took_us <= self._late_commit_us:
            return  # on time (a margin of 0 shows events at once: nothing to settle)
        puts = [i.request["Put"]["Item"] for i in items if i.role is _Role.EVENT]
        moves = [(put["account_id"]["S"], put["event_id"]["S"], put["inbox_pos"]["S"]) for put in puts]
        await self._restamp_all(moves, "late_commit", results)

    async def _restamp_stored(self, stored: list[dict[str, Any]], results: dict[str, EventResult]) -> None:
        """Events met already stored (redelivery, a resend after a timeout): move the stale ones.

        The earlier attempt may have committed late, after its writer stopped waiting, and
        so never re-stamped them. Each item is the stored one (ALL_OLD on the event's Put).
        One still undelivered whose stamp is older than the re-stamp threshold moves to a
        fresh position, on condition that it is still where it was: a repeat for a pager
        that had it, never a skip.
        """
        if not self._late_commit_us:
            return
        now_us = self._clock_us()
        moves = [
            (item["account_id"]["S"], item["event_id"]["S"], item["inbox_pos"]["S"])
            for item in stored
            if "inbox_pk" in item
            and "inbox_pos" in item
            and now_us - position_stamp_us(item["inbox_pos"]["S"]) > self._late_commit_us
        ]
        await self._restamp_all(moves, "already_stored", results)

    async def _restamp_all(
        self, moves: list[tuple[str, str, str]], cause: str, results: dict[str, EventResult]
    ) -> None:
        failed = await asyncio.gather(*(self._restamp(*move) for move in moves))
        for (_, event_id, _), failure in zip(moves, failed, strict=True):
            if failure is not None:
                results[event_id] = failure
            else:
                WRITER_RESTAMPS.labels(cause).inc()

    async def _restamp(self, account_id: str, event_id: str, old: str) -> EventResult | None:
        """Move one event to a fresh position, if it is still undelivered where it was put.

        None when that is done (or it was acknowledged, or moved by another writer,
        meanwhile); else the result the event's message gets so that it comes back. A pager
        that saw the event at its old position sees it once more (docs/api.md, repeats).
        """
        key = {"account_id": {"S": account_id}, "event_id": {"S": event_id}}
        for _ in range(RESTAMP_ATTEMPTS):
            new = inbox_position(self._clock_us(), event_id)
            started_us = self._monotonic_us()
            try:
                await self._client.update_item(
                    TableName=self._events_table,
                    Key=key,
                    UpdateExpression="SET inbox_pos = :new",
                    ConditionExpression="inbox_pos = :old AND attribute_exists(inbox_pk)",
                    ExpressionAttributeValues={":new": {"S": new}, ":old": {"S": old}},
                )
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                    return None  # acknowledged or moved meanwhile: nothing left behind
                return _restamp_failed(_failure(exc))
            except BotoCoreError as exc:
                return _restamp_failed(_failure(exc))
            if self._monotonic_us() - started_us <= self._late_commit_us:
                return None
            old = new  # this write was late too: move it once more
        return _restamp_failed(EventResult(Outcome.RETRY, reason="restamp late again"))

    async def _bisect(
        self, group: list[_Claimed], results: dict[str, EventResult], exc: ClientError, controlled: bool
    ) -> None:
        """DynamoDB refused the whole call, naming no item: find the bad event by halving.

        First, once per refused group, the control write: if storage refuses known-good
        items too, nothing is wrong with these events (a table is misconfigured), and they
        wait as in an outage instead of all being dead-lettered one by one.
        """
        if not controlled:
            answer = await self._control()
            if answer != "ok":
                if answer == "invalid":
                    log.error("storage_refuses_known_good_writes", error="ValidationException", events=len(group))
                reason = "storage refuses known-good writes" if answer == "invalid" else "control write failed"
                for claimed in group:
                    results[claimed.event.event_id] = EventResult(Outcome.UNAVAILABLE, reason=reason)
                return
        if len(group) == 1:
            message = exc.response["Error"].get("Message", "")
            reason = f"refused by storage: ValidationException: {message}"
            results[group[0].event.event_id] = EventResult(Outcome.REJECTED, reason=reason)
            return
        half = len(group) // 2
        for part in (group[:half], group[half:]):
            await self._write_group(part, results, controlled=True)

    async def _resolve(
        self,
        pending: list[_Claimed],
        items: list[_Item],
        reasons: list[dict[str, Any]],
        results: dict[str, EventResult],
    ) -> list[_Claimed]:
        """Settle the events whose conditions failed; return those to write again."""
        by_event: dict[str, dict[_Role, dict[str, Any]]] = {}
        for item, reason in zip(items, reasons, strict=False):  # DynamoDB answers in item order
            if item.claimed is not None:
                by_event.setdefault(item.claimed.event.event_id, {})[item.role] = reason
        # A throttled item concerns its account alone: that account's events are set aside
        # (THROTTLED: sent again later in a message of their own) and the others written again.
        throttled = {i.account for i, r in zip(items, reasons, strict=False) if r.get("Code") in THROTTLE_REASONS}
        again, duplicates, stored = [], [], []
        for claimed in pending:
            event = claimed.event
            found = by_event.get(event.event_id, {})
            stored_reason, claim_reason = found.get(_Role.EVENT, {}), found.get(_Role.CLAIM, {})
            if stored_reason.get("Code") == "ConditionalCheckFailed":
                results[event.event_id] = EventResult(Outcome.ALREADY_STORED)
                if "Item" in stored_reason:
                    stored.append(stored_reason["Item"])
            elif claim_reason.get("Code") == "ConditionalCheckFailed":
                original = claim_reason.get("Item", {}).get("event_id", {}).get("S", "")
                if original in ("", event.event_id):
                    results[event.event_id] = EventResult(Outcome.ALREADY_STORED)
                else:
                    duplicates.append((event, original))
            elif "ValidationError" in (stored_reason.get("Code"), claim_reason.get("Code")):
                message = stored_reason.get("Message") or claim_reason.get("Message") or "invalid item"
                results[event.event_id] = EventResult(Outcome.REJECTED, reason=f"refused by storage: {message}")
            elif event.account_id in throttled:
                results[event.event_id] = EventResult(Outcome.THROTTLED, reason="throttled")
            else:
                again.append(claimed)
                results[event.event_id] = EventResult(Outcome.RETRY, reason="transaction conflicts persisted")
        for start in range(0, len(duplicates), TRANSACTION_MAX_ITEMS):
            await self._write_aliases(duplicates[start : start + TRANSACTION_MAX_ITEMS], results)
        await self._restamp_stored(stored, results)
        return again

    async def _write_aliases(self, duplicates: list[tuple[QueuedEvent, str]], results: dict[str, EventResult]) -> None:
        """Point each duplicate's id at its original, so GET /events/{duplicate id} finds it.

        One transaction for up to 100 aliases; an alias that already exists (the duplicate was
        delivered again) keeps its first target.
        """

        async def attempt(pending: list[tuple[QueuedEvent, str]]) -> list[tuple[QueuedEvent, str]]:
            try:
                await self._client.transact_write_items(TransactItems=[self._alias_put(e, o) for e, o in pending])  # type: ignore[misc]
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    _unsettled_aliases(pending, results, exc)
                    return []
                reasons: list[Any] = list(exc.response.get("CancellationReasons", []))
                again = []
                for (event, original), reason in zip(pending, reasons, strict=False):  # one item per alias
                    if reason.get("Code") == "ConditionalCheckFailed":
                        results[event.event_id] = EventResult(Outcome.DUPLICATE, original_id=original)
                    else:
                        again.append((event, original))
                        results[event.event_id] = EventResult(Outcome.RETRY, reason="alias not written")
                return again
            except BotoCoreError as exc:
                _unsettled_aliases(pending, results, exc)
                return []
            for event, original in pending:
                results[event.event_id] = EventResult(Outcome.DUPLICATE, original_id=original)
            return []

        await retry_pending(CONFLICT_RETRY, duplicates, attempt)

    def _alias_put(self, event: QueuedEvent, original_id: str) -> dict[str, Any]:
        # No TTL: an alias must resolve for as long as its original exists, and the original
        # is kept until it has been acknowledged and its retention has passed, which the
        # writer cannot know. An alias is about 100 bytes, one per duplicate that arrived.
        return {
            "Put": {
                "TableName": self._events_table,
                "Item": {
                    "account_id": {"S": event.account_id},
                    "event_id": {"S": event.event_id},
                    "alias_of": {"S": original_id},
                    "received_at_us": {"N": str(event.received_at_us)},
                },
                "ConditionExpression": "attribute_not_exists(event_id)",
            }
        }

    def _transaction(self, claims: list[_Claimed]) -> list[_Item]:
        items: list[_Item] = []
        for claimed in claims:
            account = claimed.event.account_id
            items.append(_Item(_Role.EVENT, claimed, {"Put": self._event_put(claimed.event)}, account))
            items.append(_Item(_Role.CLAIM, claimed, {"Put": self._claim_put(claimed)}, account))
        events = [c.event for c in claims]
        by_account = Counter(e.account_id for e in events)
        by_type = Counter((e.account_id, e.event_type) for e in events)
        shard = self._shards.shard(by_account)
        for account, count in by_account.items():
            update = counter_add(self._counters_table, counter_id(account), shard, count)
            items.append(_Item(_Role.COUNTER, None, {"Update": update}, account))
        for (account, event_type), count in by_type.items():
            update = counter_add(self._counters_table, counter_id(account, event_type), shard, count)
            items.append(_Item(_Role.COUNTER, None, {"Update": update}, account))
        return items

    def _event_put(self, event: QueuedEvent) -> dict[str, Any]:
        return {
            "TableName": self._events_table,
            "Item": event_item(event, self._inbox_shards, self._clock_us()),
            "ConditionExpression": "attribute_not_exists(event_id)",
            # Already stored: the reason carries the stored item, whose position may need a
            # move (_restamp_stored).
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    def _claim_put(self, claimed: _Claimed) -> dict[str, Any]:
        event = claimed.event
        window_ends_us = event.received_at_us + self._window_us
        return {
            "TableName": self._dedup_table,
            "Item": {
                "dedup_id": {"S": claimed.claim_id},
                "event_id": {"S": event.event_id},
                "window_ends_us": {"N": str(window_ends_us)},
                # TTL only tidies up; the condition below, not TTL, decides duplicates. It
                # outlives the window by as long as a copy received inside it can arrive.
                "expires_at": {"N": str(window_ends_us // _US + self._claim_linger_s)},
            },
            "ConditionExpression": "attribute_not_exists(dedup_id) OR window_ends_us <= :received",
            "ExpressionAttributeValues": {":received": {"N": str(event.received_at_us)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }


def wall_clock_us() -> int:
    return time.time_ns() // 1000


def monotonic_clock_us() -> int:
    return time.monotonic_ns() // 1000


def event_item(event: QueuedEvent, inbox_shards: int = 1, stamp_us: int | None = None) -> dict[str, Any]:
    """An undelivered event as stored: in the inbox indexes until it is acknowledged.

    ``inbox_pos`` is the writer's clock at this attempt (``stamp_us``, default now), not the
    time of receipt: what decides where a forward pager finds the event is when it was stored.
    The 0.2 indexes (keyed on ``event_id``) read the same item, so a 0.2 inbox keeps working.
    """
    shard = inbox_shard(event.event_id, inbox_shards)
    stamp_us = wall_clock_us() if stamp_us is None else stamp_us
    item: dict[str, Any] = {
        "account_id": {"S": event.account_id},
        "event_id": {"S": event.event_id},
        "event_type": {"S": event.event_type},
        "payload": {"S": bytes(event.payload).decode()},
        "received_at_us": {"N": str(event.received_at_us)},
        "delivered": {"BOOL": False},
        "inbox_pk": {"S": inbox_pk(event.account_id, shard)},
        "inbox_type_pk": {"S": inbox_type_pk(event.account_id, event.event_type, shard)},
        "inbox_pos": {"S": inbox_position(stamp_us, event.event_id)},
    }
    if event.request_id:
        item["request_id"] = {"S": event.request_id}
    return item


def unavailable(exc: Exception) -> bool:
    """Is this service-wide (unreachable, 5xx, the call itself throttled, credentials,
    permissions, a missing table), not something about the items?"""
    if isinstance(exc, BotoCoreError):
        return True  # connection refused or reset, timeouts
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response["Error"]["Code"]
        return status >= 500 or code in RETRYABLE_CODES or code in _SERVICE_WIDE_CODES
    return False


def _failure(exc: Exception) -> EventResult:
    code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
    return EventResult(Outcome.UNAVAILABLE if unavailable(exc) else Outcome.RETRY, reason=code)


def _restamp_failed(result: EventResult) -> EventResult:
    WRITER_RESTAMP_FAILURES.labels(result.outcome.value).inc()
    log.warning("restamp_failed", error=result.reason)
    return result


def _unsettled(claims: list[_Claimed], results: dict[str, EventResult], exc: Exception) -> None:
    result = _failure(exc)
    log.warning("store_failed", error=result.reason, events=len(claims))
    for claimed in claims:
        results[claimed.event.event_id] = result


def _unsettled_aliases(
    duplicates: list[tuple[QueuedEvent, str]], results: dict[str, EventResult], exc: Exception
) -> None:
    result = _failure(exc)
    log.warning("alias_failed", error=result.reason, events=len(duplicates))
    for event, _ in duplicates:
        results[event.event_id] = result


def _rounds(events: list[_Claimed]) -> Iterator[list[_Claimed]]:
    """Split events so no transaction touches one item twice (DynamoDB forbids it).

    A repeated event id is dropped (its result is the first copy's); a repeated dedup key
    moves to a later round, where it meets the first copy's claim and becomes its duplicate.
    """
    seen_ids: set[str] = set()
    remaining: list[_Claimed] = []
    for claimed in events:
        if claimed.event.event_id not in seen_ids:
            seen_ids.add(claimed.event.event_id)
            remaining.append(claimed)
    while remaining:
        taken: set[str] = set()
        this_round: list[_Claimed] = []
        later: list[_Claimed] = []
        for claimed in remaining:
            (later if claimed.claim_id in taken else this_round).append(claimed)
            taken.add(claimed.claim_id)
        yield this_round
        remaining = later


def _groups(events: list[_Claimed]) -> Iterator[list[_Claimed]]:
    """Fill each transaction as far as its item and byte limits allow."""
    group: list[_Claimed] = []
    counters: set[tuple[str, str | None]] = set()  # (account, None) is the account's total
    size = 0
    for claimed in events:
        event = claimed.event
        event_size = len(event.payload) + 512
        new_counters = {(event.account_id, None), (event.account_id, event.event_type)} - counters
        items = 2 * (len(group) + 1) + len(counters) + len(new_counters)
        if group and (items > TRANSACTION_MAX_ITEMS or size + event_size > GROUP_MAX_BYTES):
            yield group
            group, counters, size = [], set(), 0
            new_counters = {(event.account_id, None), (event.account_id, event.event_type)}
        group.append(claimed)
        counters |= new_counters
        size += event_size
    if group:
        yield group
