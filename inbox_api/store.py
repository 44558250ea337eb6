"""Reads of the inbox, on the data model of ``shared.storage.layout``.

No request path scans: a page is one Query on a sparse index per inbox shard, a count is one
consistent Query of the counter's shards, an event is one consistent GetItem.
Acknowledgements: acks.py.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any

import msgspec
from types_aiobotocore_dynamodb import DynamoDBClient

from shared.errors import NotFound
from shared.lean_aws import call_decoded
from shared.settings import Settings
from shared.storage.attributes import BoolValue, NumberValue, StringValue
from shared.storage.layout import INBOX_BY_TYPE_INDEX, INBOX_INDEX, counter_id, inbox_pk, inbox_type_pk


class StoredEvent(msgspec.Struct, frozen=True, gc=False):  # gc=False: no field can hold a cycle
    event_id: str
    event_type: str
    payload: msgspec.Raw
    received_at_us: int
    delivered: bool
    delivered_at_us: int | None


# The items and answers the hot reads get back, typed so msgspec decodes them straight from
# the wire. Attributes not named here (index keys, request_id, expires_at) are skipped.
class _EventItem(msgspec.Struct, frozen=True, gc=False):
    event_id: StringValue
    event_type: StringValue
    payload: StringValue
    received_at_us: NumberValue
    delivered: BoolValue | None = None
    delivered_at_us: NumberValue | None = None

    def event(self) -> StoredEvent:
        return StoredEvent(
            self.event_id.S,
            self.event_type.S,
            msgspec.Raw(self.payload.S.encode()),
            self.received_at_us.N,
            self.delivered is not None and self.delivered.BOOL,
            self.delivered_at_us.N if self.delivered_at_us is not None else None,
        )


class _QueryAnswer(msgspec.Struct, frozen=True):
    Items: list[_EventItem] = []


class _CounterItem(msgspec.Struct, frozen=True, gc=False):
    n: NumberValue | None = None


class _CounterAnswer(msgspec.Struct, frozen=True):
    Items: list[_CounterItem] = []
    LastEvaluatedKey: dict[str, Any] | None = None


_query_answer = msgspec.json.Decoder(_QueryAnswer, strict=False)
_counter_answer = msgspec.json.Decoder(_CounterAnswer, strict=False)
# What a page reads of each item: the index keys, account and request id stay behind (a
# sixth less to send and parse).
PAGE_PROJECTION = ", ".join(_EventItem.__struct_fields__)


def _event_id(item: _EventItem) -> str:
    return item.event_id.S


def _from_item(item: dict[str, Any]) -> StoredEvent:
    """An item as aiobotocore's generic answers hold it, read like the typed answers."""
    return msgspec.convert(item, _EventItem, strict=False).event()


class InboxStore:
    def __init__(self, client: DynamoDBClient, settings: Settings) -> None:
        self._client = client
        self._events = settings.events_table
        self._counters = settings.counters_table
        self._shard_ids = range(settings.inbox_shards)

    async def page(
        self, account_id: str, event_type: str | None, descending: bool, limit: int, after: str | None
    ) -> tuple[list[StoredEvent], bool]:
        """Up to ``limit`` undelivered events past ``after``, and whether more follow.

        With several inbox shards, each is read from the same position and the answers are
        merged by event id: the first ``limit`` of the merge are the first ``limit`` of the
        whole inbox, so the paging rules hold unchanged.
        """
        if event_type is None:
            index, key_name, keys = INBOX_INDEX, "inbox_pk", [inbox_pk(account_id, s) for s in self._shard_ids]
        else:
            index, key_name = INBOX_BY_TYPE_INDEX, "inbox_type_pk"
            keys = [inbox_type_pk(account_id, event_type, s) for s in self._shard_ids]
        condition = f"{key_name} = :pk"
        values: dict[str, Any] = {}
        if after is not None:
            condition += " AND event_id " + ("< :after" if descending else "> :after")
            values[":after"] = {"S": after}
        query = {
            "TableName": self._events,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ScanIndexForward": not descending,
            "ProjectionExpression": PAGE_PROJECTION,
            "Limit": limit + 1,  # one more than asked tells whether another page exists
        }
        reads = [self._query(query, {**values, ":pk": {"S": key}}) for key in keys]
        shards = [await reads[0]] if len(reads) == 1 else await asyncio.gather(*reads)
        merged = heapq.merge(*shards, key=_event_id, reverse=descending)
        items = list(itertools.islice(merged, limit + 1))
        return [i.event() for i in items[:limit]], len(items) > limit

    async def _query(self, query: dict[str, Any], values: dict[str, Any]) -> list[_EventItem]:
        answer = await call_decoded(self._client, "query", _query_answer, ExpressionAttributeValues=values, **query)
        return answer.Items

    async def count(self, account_id: str, event_type: str | None) -> int:
        """Exact undelivered count: the sum of the counter's shards, read consistently."""
        total = 0
        params: dict[str, Any] = {
            "TableName": self._counters,
            "KeyConditionExpression": "counter_id = :c",
            "ExpressionAttributeValues": {":c": {"S": counter_id(account_id, event_type)}},
            "ProjectionExpression": "n",
            "ConsistentRead": True,
        }
        while True:  # a counter has at most TRIGGERS_COUNTER_SHARDS small items: one answer
            response = await call_decoded(self._client, "query", _counter_answer, **params)
            total += sum(i.n.N for i in response.Items if i.n is not None)
            if response.LastEvaluatedKey is None:
                return total
            params["ExclusiveStartKey"] = response.LastEvaluatedKey

    async def get(self, account_id: str, event_id: str) -> StoredEvent:
        """One event of the account; a duplicate's id resolves to the original."""
        item = await self._get_item(account_id, event_id)
        if item is not None and "alias_of" in item:
            item = await self._get_item(account_id, item["alias_of"]["S"])
        if item is None:
            raise NotFound("No such event.")
        return _from_item(item)

    async def _get_item(self, account_id: str, event_id: str) -> dict[str, Any] | None:
        response = await self._client.get_item(
            TableName=self._events,
            Key={"account_id": {"S": account_id}, "event_id": {"S": event_id}},
            ConsistentRead=True,
        )
        return response.get("Item")
