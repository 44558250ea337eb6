"""Acknowledgements: mark events delivered and decrement their counts, atomically, once.

Acknowledging n ids costs one consistent BatchGetItem per 100 ids (one more for ids that are
a duplicate's alias), then one transaction per group of up to 98 events (fewer across many
types): an update per event, on condition that it is still undelivered, and one decrement
per counter the group touches (the account's total and one per event type), not one per
event. An id whose condition fails was acknowledged by someone else meanwhile; the rest of
its group is written again. So concurrent acknowledgements of the same ids, from any number
of inbox processes, decrement each count exactly once per event.
"""

from __future__ import annotations

import enum
import time
from collections import Counter
from typing import Any

import msgspec
from botocore.exceptions import ClientError
from types_aiobotocore_dynamodb import DynamoDBClient

from shared.aws.lean import call_decoded
from shared.retry import ACK_RETRY, retry_pending
from shared.settings import Settings
from shared.storage.attributes import BoolValue, StringValue
from shared.storage.counters import ShardChooser, counter_add
from shared.storage.layout import TRANSACTION_MAX_ITEMS, counter_id

# Conflicts and unprocessed keys are retried under shared.retry.ACK_RETRY; after a conflict
# the account's counter writes spread over shards (shared.storage.counters).
BATCH_GET_MAX_KEYS = 100  # keys one BatchGetItem may hold
_US = 1_000_000


class AckOutcome(enum.Enum):
    ACKNOWLEDGED = "acknowledged"  # this call marked it delivered
    ALREADY_DELIVERED = "already_delivered"
    NOT_FOUND = "not_found"


class _AckItem(msgspec.Struct, frozen=True, gc=False):
    event_id: StringValue
    event_type: StringValue | None = None
    delivered: BoolValue | None = None
    alias_of: StringValue | None = None  # a duplicate's id, pointing at the event it duplicates


class _BatchGetAnswer(msgspec.Struct, frozen=True):
    Responses: dict[str, list[_AckItem]] = {}
    UnprocessedKeys: dict[str, Any] = {}


_batch_get_answer = msgspec.json.Decoder(_BatchGetAnswer, strict=False)
_ACK_PROJECTION = ", ".join(_AckItem.__struct_fields__)


class Acknowledger:
    def __init__(self, client: DynamoDBClient, settings: Settings) -> None:
        self._client = client
        self._events = settings.events_table
        self._counters = settings.counters_table
        self._retention_s = settings.event_retention_s
        self._shards = ShardChooser(settings.counter_shards)

    async def ack(self, account_id: str, event_ids: list[str]) -> dict[str, AckOutcome]:
        """The outcome of each id; a duplicate's id acknowledges the event it duplicates."""
        found = await self._read(account_id, set(event_ids))
        aliases = {i: item.alias_of.S for i, item in found.items() if item.alias_of is not None}
        found |= await self._read(account_id, set(aliases.values()) - found.keys())
        target = {i: aliases.get(i, i) for i in event_ids if aliases.get(i, i) in found}
        events = {found[t] for t in target.values() if found[t].alias_of is None}
        outcomes = {e.event_id.S: AckOutcome.ALREADY_DELIVERED for e in events if _delivered(e)}
        for group in _groups([e for e in events if not _delivered(e)]):
            outcomes |= await self._mark(account_id, group)
        return {i: outcomes.get(target.get(i, ""), AckOutcome.NOT_FOUND) for i in event_ids}

    async def _read(self, account_id: str, event_ids: set[str]) -> dict[str, _AckItem]:
        found: dict[str, _AckItem] = {}
        ids = sorted(event_ids)
        for start in range(0, len(ids), BATCH_GET_MAX_KEYS):
            keys = [
                {"account_id": {"S": account_id}, "event_id": {"S": i}} for i in ids[start : start + BATCH_GET_MAX_KEYS]
            ]
            request: Any = {
                self._events: {"Keys": keys, "ConsistentRead": True, "ProjectionExpression": _ACK_PROJECTION}
            }

            async def read(requests: list[Any]) -> list[Any]:
                answer = await call_decoded(self._client, "batch_get_item", _batch_get_answer, RequestItems=requests[0])
                found.update({item.event_id.S: item for item in answer.Responses.get(self._events, [])})
                return [answer.UnprocessedKeys] if answer.UnprocessedKeys else []

            if await retry_pending(ACK_RETRY, [request], read):
                raise TimeoutError("event reads kept coming back unprocessed")
        return found

    async def _mark(self, account_id: str, group: list[_AckItem]) -> dict[str, AckOutcome]:
        """Mark a group delivered in one transaction, settling ids others acknowledged first."""
        outcomes: dict[str, AckOutcome] = {}

        async def mark(pending: list[_AckItem]) -> list[_AckItem]:
            try:
                await self._client.transact_write_items(TransactItems=self._transaction(account_id, pending))
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = exc.response.get("CancellationReasons", [])
                # The transaction's first items are the group's updates, in its order.
                taken = {i for i, r in enumerate(reasons[: len(pending)]) if r.get("Code") == "ConditionalCheckFailed"}
                outcomes.update({pending[i].event_id.S: AckOutcome.ALREADY_DELIVERED for i in taken})
                self._shards.cancelled(reasons, [account_id])
                return [e for i, e in enumerate(pending) if i not in taken]
            outcomes.update({e.event_id.S: AckOutcome.ACKNOWLEDGED for e in pending})
            return []

        if await retry_pending(ACK_RETRY, group, mark):
            raise TimeoutError("acknowledgement kept conflicting")
        return outcomes

    def _transaction(self, account_id: str, group: list[_AckItem]) -> list[Any]:
        now_us = time.time_ns() // 1000
        values = {
            ":t": {"BOOL": True},
            ":f": {"BOOL": False},
            ":now": {"N": str(now_us)},
            ":exp": {"N": str(now_us // _US + self._retention_s)},
        }
        items: list[Any] = [
            {
                "Update": {
                    "TableName": self._events,
                    "Key": {"account_id": {"S": account_id}, "event_id": {"S": e.event_id.S}},
                    # Removing the index keys drops the event from both inbox indexes.
                    "UpdateExpression": "SET delivered = :t, delivered_at_us = :now, expires_at = :exp "
                    "REMOVE inbox_pk, inbox_type_pk",
                    "ConditionExpression": "delivered = :f",
                    "ExpressionAttributeValues": values,
                }
            }
            for e in group
        ]
        shard = self._shards.shard([account_id])
        by_type = Counter(_type(e) for e in group)
        decrements = [(counter_id(account_id), len(group))]
        decrements += [(counter_id(account_id, t), n) for t, n in by_type.items()]
        items += [{"Update": counter_add(self._counters, counter, shard, -n)} for counter, n in decrements]
        return items


def _delivered(item: _AckItem) -> bool:
    return item.delivered is not None and item.delivered.BOOL


def _type(item: _AckItem) -> str:
    return item.event_type.S if item.event_type is not None else ""


def _groups(events: list[_AckItem]) -> list[list[_AckItem]]:
    """Events in groups whose transaction (an update each, a decrement per counter) fits."""
    groups: list[list[_AckItem]] = []
    group: list[_AckItem] = []
    types: set[str] = set()
    for event in sorted(events, key=lambda e: e.event_id.S):
        if len(group) + 2 + len(types | {_type(event)}) > TRANSACTION_MAX_ITEMS:
            groups.append(group)
            group, types = [], set()
        group.append(event)
        types.add(_type(event))
    return [*groups, group] if group else groups
