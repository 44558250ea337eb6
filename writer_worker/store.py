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
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from types_aiobotocore_dynamodb import DynamoDBClient

from shared.envelope import QueuedEvent
from shared.settings import Settings
from shared.storage.counters import ShardChooser, counter_add
from shared.storage.layout import (
    TRANSACTION_MAX_ITEMS,
    counter_id,
    dedup_id,
    inbox_pk,
    inbox_shard,
    inbox_type_pk,
)

log = structlog.get_logger()

# TransactWriteItems takes 100 items and 4 MB. A group holds as many events as fit: two
# items per event (event, claim), one counter update per account and per (account, type);
# the byte budget keeps large payloads under the size limit.
GROUP_MAX_BYTES = 3 * 1024 * 1024
# Transactions cancelled by a conflict (two writers touching one counter shard at once) are
# retried this many times, after a jittered pause growing from the base.
CONFLICT_ATTEMPTS = 6
CONFLICT_BACKOFF_BASE_S = 0.02
_US = 1_000_000


class Outcome(enum.StrEnum):
    STORED = "stored"  # new in the inbox
    ALREADY_STORED = "already_stored"  # this very event was stored before (redelivery)
    DUPLICATE = "duplicate"  # another event with its dedup key came first
    RETRY = "retry"  # not stored now; safe to try again later
    REJECTED = "rejected"  # can never be stored as it is


@dataclass(frozen=True, slots=True)
class _Claimed:
    event: QueuedEvent
    claim_id: str  # the dedup item this event claims


@dataclass(frozen=True, slots=True)
class EventResult:
    outcome: Outcome
    original_id: str | None = None
    reason: str = ""


class EventWriter:
    def __init__(self, client: DynamoDBClient, settings: Settings) -> None:
        self._client = client
        self._events_table = settings.events_table
        self._dedup_table = settings.dedup_table
        self._counters_table = settings.counters_table
        self._window_us = settings.dedup_window_s * _US
        self._retention_s = settings.event_retention_s
        self._shards = ShardChooser(settings.counter_shards)
        self._inbox_shards = settings.inbox_shards

    async def write(self, events: list[QueuedEvent]) -> dict[str, EventResult]:
        """Store events exactly once; the result of each, by event id."""
        results: dict[str, EventResult] = {}
        claims = [_Claimed(e, dedup_id(e.account_id, e.dedup_key())) for e in events]
        for round_ in _rounds(claims):
            for group in _groups(round_):
                await self._write_group(group, results)
        return results

    async def _write_group(self, group: list[_Claimed], results: dict[str, EventResult]) -> None:
        pending = group
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                await self._client.transact_write_items(TransactItems=self._transaction(pending))
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    _fail(pending, results, exc)
                    return
                reasons: list[Any] = list(exc.response.get("CancellationReasons", []))
                self._shards.cancelled(reasons, (c.event.account_id for c in pending))
                pending = await self._resolve(pending, reasons, results)
                if not pending:
                    return
                await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF_BASE_S * 2**attempt))
            except BotoCoreError as exc:
                _fail(pending, results, exc)
                return
            else:
                for claimed in pending:
                    results[claimed.event.event_id] = EventResult(Outcome.STORED)
                return
        for claimed in pending:
            results[claimed.event.event_id] = EventResult(Outcome.RETRY, reason="transaction conflicts persisted")

    async def _resolve(
        self, pending: list[_Claimed], reasons: list[dict[str, Any]], results: dict[str, EventResult]
    ) -> list[_Claimed]:
        """Settle the events whose conditions failed; return those to write again."""
        again, duplicates = [], []
        for index, claimed in enumerate(pending):
            event = claimed.event
            stored_reason = reasons[2 * index] if 2 * index < len(reasons) else {}
            claim_reason = reasons[2 * index + 1] if 2 * index + 1 < len(reasons) else {}
            if stored_reason.get("Code") == "ConditionalCheckFailed":
                results[event.event_id] = EventResult(Outcome.ALREADY_STORED)
            elif claim_reason.get("Code") == "ConditionalCheckFailed":
                original = claim_reason.get("Item", {}).get("event_id", {}).get("S", "")
                if original in ("", event.event_id):
                    results[event.event_id] = EventResult(Outcome.ALREADY_STORED)
                else:
                    duplicates.append((event, original))
            elif "ValidationError" in (stored_reason.get("Code"), claim_reason.get("Code")):
                reason = stored_reason.get("Message") or claim_reason.get("Message") or "invalid item"
                results[event.event_id] = EventResult(Outcome.REJECTED, reason=reason)
            else:
                again.append(claimed)
        for start in range(0, len(duplicates), TRANSACTION_MAX_ITEMS):
            await self._write_aliases(duplicates[start : start + TRANSACTION_MAX_ITEMS], results)
        return again

    async def _write_aliases(self, duplicates: list[tuple[QueuedEvent, str]], results: dict[str, EventResult]) -> None:
        """Point each duplicate's id at its original, so GET /events/{duplicate id} finds it.

        One transaction for up to 100 aliases; an alias that already exists (the duplicate was
        delivered again) keeps its first target.
        """
        pending = duplicates
        for attempt in range(CONFLICT_ATTEMPTS):
            try:
                items: list[Any] = [self._alias_put(e, o) for e, o in pending]
                await self._client.transact_write_items(TransactItems=items)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    break
                reasons: list[Any] = list(exc.response.get("CancellationReasons", []))
                existing = {i for i, r in enumerate(reasons) if r.get("Code") == "ConditionalCheckFailed"}
                for index in existing:
                    event, original = pending[index]
                    results[event.event_id] = EventResult(Outcome.DUPLICATE, original_id=original)
                pending = [d for i, d in enumerate(pending) if i not in existing]
                if not pending:
                    return
                await asyncio.sleep(random.uniform(0, CONFLICT_BACKOFF_BASE_S * 2**attempt))
            except BotoCoreError:
                break
            else:
                for event, original in pending:
                    results[event.event_id] = EventResult(Outcome.DUPLICATE, original_id=original)
                return
        for event, _ in pending:
            results[event.event_id] = EventResult(Outcome.RETRY, reason="alias not written")

    def _alias_put(self, event: QueuedEvent, original_id: str) -> dict[str, Any]:
        return {
            "Put": {
                "TableName": self._events_table,
                "Item": {
                    "account_id": {"S": event.account_id},
                    "event_id": {"S": event.event_id},
                    "alias_of": {"S": original_id},
                    "received_at_us": {"N": str(event.received_at_us)},
                    "expires_at": {"N": str(event.received_at_us // _US + self._retention_s)},
                },
                "ConditionExpression": "attribute_not_exists(event_id)",
            }
        }

    def _transaction(self, claims: list[_Claimed]) -> list[Any]:
        items: list[Any] = []
        for claimed in claims:
            items.append({"Put": self._event_put(claimed.event)})
            items.append({"Put": self._claim_put(claimed)})
        events = [c.event for c in claims]
        by_account = Counter(e.account_id for e in events)
        by_type = Counter((e.account_id, e.event_type) for e in events)
        shard = self._shards.shard(by_account)
        for account, count in by_account.items():
            items.append({"Update": counter_add(self._counters_table, counter_id(account), shard, count)})
        for (account, event_type), count in by_type.items():
            counter = counter_id(account, event_type)
            items.append({"Update": counter_add(self._counters_table, counter, shard, count)})
        return items

    def _event_put(self, event: QueuedEvent) -> dict[str, Any]:
        return {
            "TableName": self._events_table,
            "Item": event_item(event, self._inbox_shards),
            "ConditionExpression": "attribute_not_exists(event_id)",
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
                # TTL only tidies up; the condition below, not TTL, decides duplicates.
                "expires_at": {"N": str(window_ends_us // _US + 1)},
            },
            "ConditionExpression": "attribute_not_exists(dedup_id) OR window_ends_us <= :received",
            "ExpressionAttributeValues": {":received": {"N": str(event.received_at_us)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }


def event_item(event: QueuedEvent, inbox_shards: int = 1) -> dict[str, Any]:
    """An undelivered event as stored: in both inbox indexes until it is acknowledged."""
    shard = inbox_shard(event.event_id, inbox_shards)
    item: dict[str, Any] = {
        "account_id": {"S": event.account_id},
        "event_id": {"S": event.event_id},
        "event_type": {"S": event.event_type},
        "payload": {"S": bytes(event.payload).decode()},
        "received_at_us": {"N": str(event.received_at_us)},
        "delivered": {"BOOL": False},
        "inbox_pk": {"S": inbox_pk(event.account_id, shard)},
        "inbox_type_pk": {"S": inbox_type_pk(event.account_id, event.event_type, shard)},
    }
    if event.request_id:
        item["request_id"] = {"S": event.request_id}
    return item


def _fail(claims: list[_Claimed], results: dict[str, EventResult], exc: Exception) -> None:
    code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
    log.warning("store_failed", error=code, events=len(claims))
    for claimed in claims:
        results[claimed.event.event_id] = EventResult(Outcome.RETRY, reason=code)


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
    counters: set[tuple[str, str]] = set()
    size = 0
    for claimed in events:
        event = claimed.event
        event_size = len(event.payload) + 512
        new_counters = {(event.account_id, ""), (event.account_id, event.event_type)} - counters
        items = 2 * (len(group) + 1) + len(counters) + len(new_counters)
        if group and (items > TRANSACTION_MAX_ITEMS or size + event_size > GROUP_MAX_BYTES):
            yield group
            group, counters, size = [], set(), 0
            new_counters = {(event.account_id, ""), (event.account_id, event.event_type)}
        group.append(claimed)
        counters |= new_counters
        size += event_size
    if group:
        yield group
