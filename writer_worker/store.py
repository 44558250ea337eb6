"""Exactly-once storage of events: conditional DynamoDB transactions decide every race.

For a group of events, one TransactWriteItems call does, all or nothing:
- put each event, on condition that its id is not stored yet (SQS redelivery);
- claim each event's dedup key, on condition that no other event holds it within the window
  (copies sent twice, or to two ingest instances);
- add the number of new events to one shard of the account's undelivered counters (shard 0
  unless the account's counter writes contend: ``shared.storage.counters``).
When the transaction is cancelled, its cancellation reasons, named by item
(``shared.storage.transactions``), say which events were already stored or were duplicates;
the rest are written again. So every decision is atomic across
any number of writer processes, and the counters move only with the events they count.

Then every event stored, or found already stored (a redelivery), is copied into each of its
account's named consumers that takes it (``consumer_view``: the account's consumers as read
at most ``consumer_view_s`` ago; ``shared.storage.copies``: exactly once). An event is
settled (STORED, ALREADY_STORED) only once each of its copies is: else its message comes
back, meets the stored event, and copies again. An account without named consumers costs a
look-up of its kept view, one Query of the consumers table per ``consumer_view_s``. The
services pass the views (``EventWriter(..., views=ConsumerViews(...))``); a writer without
them copies nothing (the fakes of unit tests, the bench's transaction probes).

Every event gets its own result: one that cannot be encoded, or that DynamoDB refuses
(``ValidationException``), is ``REJECTED`` alone and the rest of its group is stored. A
storage outage (unreachable, throttling, 5xx) is ``UNAVAILABLE``: nothing is wrong with the
event, and the caller waits for storage rather than counting it against the message.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from shared.aws.dynamodb import LeanDynamoDB
from shared.contract.envelope import QueuedEvent
from shared.contract.ids import new_event_id
from shared.observability.metrics import WRITER_COMMIT_SECONDS
from shared.settings import Settings
from shared.storage.claims import claim_item, claim_probe, claim_put, claimant
from shared.storage.consumers import Consumer
from shared.storage.copies import SETTLED, Copy, CopyOutcome, CopyWriter
from shared.storage.counters import ShardChooser, counter_probe, counter_updates, transaction_groups
from shared.storage.events import Placement, alias_put, alias_target, event_item, event_probe, event_put
from shared.storage.layout import SEP, TRANSACTION_MAX_ITEMS, claim_linger_s, counter_id, dedup_id
from shared.storage.restamp import Restamper, Unsettled
from shared.storage.transactions import (
    INVALID,
    Cancellation,
    Role,
    TransactionCancelled,
    TxItem,
    retrying,
    transact,
    unavailable,
)
from writer_worker.consumer_view import ConsumerViews, ViewUnavailable

__all__ = ["EventResult", "EventWriter", "Outcome", "event_item", "unavailable"]  # event_item: tests, bench

log = structlog.get_logger()

# How long a dedup claim outlives its window: a copy received inside the window can still
# arrive this much later (SQS keeps a message at most 14 days; a dead letter can be replayed
# while its events are younger than the event retention, and then waits in the queue again),
# and it must still meet the claim. TTL removes claims after that; the condition decides.
# A key no dedup claim can have (account ids never contain the separator at the start): the
# storage probe checks that it does not exist, which reads nothing and writes nothing.
PROBE_KEY = f"{SEP}writer-probe"
_US = 1_000_000
# Reads of the views an event batch needs, should one age out while another is read.
VIEW_ATTEMPTS = 3


class Outcome(enum.StrEnum):
    STORED = "stored"  # new in the inbox
    ALREADY_STORED = "already_stored"  # this very event was stored before (redelivery)
    DUPLICATE = "duplicate"  # another event with its dedup key came first
    RETRY = "retry"  # not stored now; safe to try again later
    UNAVAILABLE = "unavailable"  # storage as a whole did not answer (outage, throttling): wait for it
    THROTTLED = "throttled"  # this event's account's items were throttled: send it again later, alone
    REJECTED = "rejected"  # can never be stored as it is


@dataclass(frozen=True, slots=True)
class _Claimed:
    event: QueuedEvent
    claim_id: str  # the dedup item this event claims


# One item of the writer's transaction: its event's claim (None for counter updates).
_Item = TxItem[_Claimed | None]


@dataclass(frozen=True, slots=True)
class EventResult:
    outcome: Outcome
    original_id: str | None = None
    reason: str = ""


class EventWriter:
    def __init__(
        self,
        client: LeanDynamoDB,
        settings: Settings,
        *,
        clock_us: Callable[[], int] | None = None,
        monotonic_us: Callable[[], int] | None = None,
        views: ConsumerViews | None = None,
    ) -> None:
        self._client = client
        self._clock_us = clock_us or wall_clock_us  # the inbox position's stamp (event_item)
        # How long a commit took: never the wall clock, which NTP may step meanwhile.
        self._monotonic_us = monotonic_us or monotonic_clock_us
        # Each account's named consumers, whose partitions its events are copied into. None:
        # copy nothing (the fakes of unit tests, the bench's probes); every service passes one.
        self._views = views
        self._copier = CopyWriter(client, settings, clock_us=self._clock_us, monotonic_us=self._monotonic_us)
        self._events_table = settings.events_table
        self._dedup_table = settings.dedup_table
        self._counters_table = settings.counters_table
        self._window_us = settings.dedup_window_s * _US
        self._retention_s = settings.event_retention_s
        self._claim_linger_s = claim_linger_s(settings.event_retention_s)
        self._shards = ShardChooser(settings.counter_shards)
        self._inbox_shards = settings.inbox_shards
        # An attempt that committed later than a quarter of the margin after its stamp is re-stamped.
        self._restamper = Restamper(
            client, settings.events_table, settings.inbox_settle_ms, self._clock_us, self._monotonic_us
        )

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
        if self._views is not None:
            await self._copy(self._views, events, results)
        return results

    async def _copy(self, views: ConsumerViews, events: list[QueuedEvent], results: dict[str, EventResult]) -> None:
        """Copy each event stored (or met stored) into its account's consumers that take it;
        an event whose copies are not all settled is not settled either."""
        stored: dict[str, list[QueuedEvent]] = {}
        seen: set[str] = set()
        for event in events:
            if event.event_id not in seen and results[event.event_id].outcome in _COPIED_OUTCOMES:
                stored.setdefault(event.account_id, []).append(event)
            seen.add(event.event_id)  # a repeated id has the first copy's result (_rounds)
        if not stored:
            return
        of_accounts = await _views_of(views, list(stored))
        copies: dict[str, list[Copy]] = {}
        for account, account_events in stored.items():
            consumers = of_accounts[account]
            if isinstance(consumers, ViewUnavailable):
                outcome = Outcome.UNAVAILABLE if consumers.outage else Outcome.RETRY
                for event in account_events:
                    results[event.event_id] = EventResult(outcome, reason=f"consumers unread: {consumers.reason}")
            elif consumers:
                for event in account_events:
                    if taking := [c for c in consumers if c.takes(event.event_type, event.received_at_us)]:
                        item = self._event_item(event)
                        copies[event.event_id] = [Copy(c.partition, item) for c in taking]
        if copies:
            outcomes = await self._copier.copy([c for cs in copies.values() for c in cs])
            _settle_copies(copies, outcomes, results)

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
        claim = claim_item(PROBE_KEY, event, self._window_us, self._claim_linger_s)
        items: list[TxItem[None]] = [
            TxItem(Role.EVENT_PUT, {"Put": event_probe(self._events_table, self._event_item(event))}, None),
            TxItem(Role.CLAIM, {"Put": claim_probe(self._dedup_table, claim)}, None),
            TxItem(Role.COUNTER, {"Update": counter_probe(self._counters_table, counter_id(PROBE_KEY))}, None),
        ]
        try:
            await transact(self._client, items)
        except TransactionCancelled as cancelled:
            if INVALID in cancelled.codes():
                return "invalid"
            return "unavailable" if any(c.throttled for c in cancelled.cancellations) else "ok"
        except ClientError as exc:
            if unavailable(exc):
                return "unavailable"
            code = exc.response["Error"]["Code"]
            return "invalid" if code == "ValidationException" else "ok"  # any other answer is storage answering
        except BotoCoreError:
            return "unavailable"
        return "ok"

    def _prepare(self, events: list[QueuedEvent], results: dict[str, EventResult]) -> list[_Claimed]:
        """Encode each event's item once, as a check: one that cannot be encoded is rejected alone.

        The item is built again for every attempt (``_transaction``), with that attempt's stamp.
        """
        claims = []
        for event in events:
            try:
                self._event_item(event)
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
        await retrying(group, lambda pending: self._attempt(pending, results, controlled))

    async def _attempt(
        self, pending: list[_Claimed], results: dict[str, EventResult], controlled: bool = False
    ) -> list[_Claimed]:
        items = self._transaction(pending, self._clock_us())  # one stamp for the attempt
        started_us = self._monotonic_us()
        try:
            await transact(self._client, items)
        except TransactionCancelled as cancelled:
            self._shards.cancelled(cancelled.cancellations, (c.event.account_id for c in pending))
            return await self._resolve(pending, cancelled, results)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ValidationException" and not unavailable(exc):
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

    async def _settle_positions(self, items: list[_Item], started_us: int, results: dict[str, EventResult]) -> None:
        """Re-stamp the events of an attempt that committed later than a quarter of the margin
        (``shared.storage.restamp``). An event whose move fails is not settled: its message
        comes back (RETRY, or UNAVAILABLE for an outage), meets the stored event, and moves
        it then (``_restamp_stored``)."""
        took_us = self._monotonic_us() - started_us
        WRITER_COMMIT_SECONDS.observe(took_us / _US)
        if self._restamper.late(took_us):
            written = (i.request["Put"]["Item"] for i in items if i.role is Role.EVENT_PUT)
            _restamp_failed(await self._restamper.move_written(written, "late_commit"), results)

    async def _restamp_stored(self, stored: list[dict[str, Any]], results: dict[str, EventResult]) -> None:
        """Events met already stored (redelivery, a resend after a timeout): move the stale ones.

        The earlier attempt may have committed late, after its writer stopped waiting, and
        so never re-stamped them. Each item is the stored one (ALL_OLD on the event's Put).
        """
        _restamp_failed(await self._restamper.move_stale(stored, "already_stored"), results)

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
        self, pending: list[_Claimed], cancelled: TransactionCancelled[_Claimed | None], results: dict[str, EventResult]
    ) -> list[_Claimed]:
        """Settle the events whose conditions failed; return those to write again."""
        put: dict[str, Cancellation[_Claimed | None]] = {}
        claim: dict[str, Cancellation[_Claimed | None]] = {}
        for found, role in ((put, Role.EVENT_PUT), (claim, Role.CLAIM)):
            found.update({c.item.ref.event.event_id: c for c in cancelled.of(role) if c.item.ref is not None})
        # A throttled item concerns its account alone: that account's events are set aside
        # (THROTTLED: sent again later in a message of their own) and the others written again.
        throttled = {c.item.account for c in cancelled.cancellations if c.throttled}
        again, duplicates = [], []
        stored: list[dict[str, Any]] = []
        for claimed in pending:
            event = claimed.event
            stored_reason, claim_reason = put.get(event.event_id), claim.get(event.event_id)
            if stored_reason is not None and stored_reason.condition_failed:
                results[event.event_id] = _met_stored(stored_reason.old, stored)
            elif claim_reason is not None and claim_reason.condition_failed:
                original = claimant(claim_reason.old)
                if original in ("", event.event_id):
                    results[event.event_id] = EventResult(Outcome.ALREADY_STORED)
                else:
                    duplicates.append((event, original))
            elif invalid := next(
                (r for r in (stored_reason, claim_reason) if r is not None and r.code == INVALID), None
            ):
                message = invalid.message or "invalid item"
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
            items = [
                TxItem(Role.ALIAS, {"Put": alias_put(self._events_table, e, o)}, (e, o), e.account_id)
                for e, o in pending
            ]
            try:
                await transact(self._client, items)
            except TransactionCancelled as cancelled:
                again = []
                for reason in cancelled.cancellations:
                    event, original = reason.item.ref
                    if reason.condition_failed:
                        results[event.event_id] = EventResult(Outcome.DUPLICATE, original_id=original)
                    else:
                        again.append((event, original))
                        results[event.event_id] = EventResult(Outcome.RETRY, reason="alias not written")
                return again
            except (ClientError, BotoCoreError) as exc:
                _unsettled_aliases(pending, results, exc)
                return []
            for event, original in pending:
                results[event.event_id] = EventResult(Outcome.DUPLICATE, original_id=original)
            return []

        await retrying(duplicates, attempt)

    def _transaction(self, claims: list[_Claimed], stamp_us: int) -> list[_Item]:
        """The attempt's items, built once: every event carries the attempt's one stamp, so
        its events sit together in the inbox, in event id order."""
        items: list[_Item] = []
        for claimed in claims:
            event, account = claimed.event, claimed.event.account_id
            put = event_put(self._events_table, self._event_item(event, stamp_us))
            claim = claim_item(claimed.claim_id, event, self._window_us, self._claim_linger_s)
            items.append(TxItem(Role.EVENT_PUT, {"Put": put}, claimed, account))
            items.append(
                TxItem(Role.CLAIM, {"Put": claim_put(self._dedup_table, claim, event.received_at_us)}, claimed, account)
            )
        gained = [(c.event.account_id, c.event.event_type) for c in claims]
        return items + counter_updates(self._counters_table, self._shards, gained)

    def _event_item(self, event: QueuedEvent, stamp_us: int | None = None) -> dict[str, Any]:
        return event_item(event, self._inbox_shards, self._clock_us() if stamp_us is None else stamp_us)


def wall_clock_us() -> int:
    return time.time_ns() // 1000


def monotonic_clock_us() -> int:
    return time.monotonic_ns() // 1000


def _failure(exc: Exception) -> EventResult:
    code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
    return EventResult(Outcome.UNAVAILABLE if unavailable(exc) else Outcome.RETRY, reason=code)


async def _views_of(views: ConsumerViews, accounts: list[str]) -> dict[str, tuple[Consumer, ...] | ViewUnavailable]:
    """Each account's consumers, checked young enough right before the copies are built."""
    failed: dict[str, ViewUnavailable] = {}
    for _ in range(VIEW_ATTEMPTS):
        missing = [a for a in accounts if a not in failed and views.cached(a) is None]
        if not missing:
            break
        answers = await asyncio.gather(*(views.active(a) for a in missing), return_exceptions=True)
        for account, answer in zip(missing, answers, strict=True):
            if isinstance(answer, ViewUnavailable):
                failed[account] = answer
            elif isinstance(answer, BaseException):
                raise answer
    found: dict[str, tuple[Consumer, ...] | ViewUnavailable] = {}
    for account in accounts:  # no await from here to the copies' transaction: the ages hold
        consumers = views.cached(account) if account not in failed else None
        found[account] = (
            consumers if consumers is not None else failed.get(account, ViewUnavailable("view aged", outage=False))
        )
    return found


def _met_stored(old: dict[str, Any] | None, stored: list[dict[str, Any]]) -> EventResult:
    """An event whose id was taken: by itself (a redelivery: its stored item joins ``stored``),
    or by its alias (a duplicate delivered again: no copies, the alias answers for it)."""
    aliased = alias_target(old) if old is not None else None
    if aliased is not None:
        return EventResult(Outcome.DUPLICATE, original_id=aliased)
    if old is not None:
        stored.append(old)
    return EventResult(Outcome.ALREADY_STORED)


_COPIED_OUTCOMES = frozenset({Outcome.STORED, Outcome.ALREADY_STORED})


def _settle_copies(
    copies: dict[str, list[Copy]], outcomes: dict[tuple[str, str], CopyOutcome], results: dict[str, EventResult]
) -> None:
    """An event whose copies are not all made comes back (its copies are made exactly once)."""
    for event_id, event_copies in copies.items():
        unsettled = [o for c in event_copies if (o := outcomes[c.key]) not in SETTLED]
        if CopyOutcome.UNAVAILABLE in unsettled:
            results[event_id] = EventResult(Outcome.UNAVAILABLE, reason="copies unavailable")
        elif unsettled and all(o is CopyOutcome.THROTTLED for o in unsettled):
            # Sent again alone, in a new message: throttling that lasts never ages it into the DLQ.
            results[event_id] = EventResult(Outcome.THROTTLED, reason="copies throttled")
        elif unsettled:
            results[event_id] = EventResult(Outcome.RETRY, reason=f"copies not made: {unsettled[0].value}")


def _restamp_failed(failed: list[tuple[Placement, Unsettled]], results: dict[str, EventResult]) -> None:
    """Events whose move failed are not settled: their message must come back."""
    for place, failure in failed:
        outcome = Outcome.UNAVAILABLE if failure.unavailable else Outcome.RETRY
        results[place.event_id] = EventResult(outcome, reason=failure.reason)


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
    """Two items per event (event, claim), plus the counter updates (``transaction_groups``)."""
    return transaction_groups(
        events,
        gains=lambda c: (c.event.account_id, c.event.event_type),
        size=lambda c: len(c.event.payload) + 512,  # keys, index keys, claim: a generous bound
        items_each=2,
    )
