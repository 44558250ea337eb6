"""The events table's two items, built and read here only: the event and the alias.

The event item (key ``account_id``, ``event_id``): ``event_type``, ``payload`` (the JSON
text as received), ``received_at_us``, ``delivered``, ``request_id`` (when the edge had one),
and while it is undelivered its inbox keys ``inbox_pk``, ``inbox_type_pk`` (sharded:
``layout.inbox_pk``) and ``inbox_pos`` (``layout.inbox_position``); acknowledging sets
``delivered``, ``delivered_at_us`` and ``expires_at`` (TTL) and removes the inbox keys, which
drops it from every inbox index. A named consumer's copy (``consumer_copy``) is an event
item under the consumer's partition, with ``by_backfill`` when its backfill made it. The
alias item (same key) holds ``alias_of``, the id of the event a duplicate's id stands for,
and ``received_at_us``.

The writer builds them (``event_item``, ``event_put``, ``alias_put``, ``restamp_update``),
the inbox reads them (``PageItem``, ``stored_event``, ``alias_target``), acknowledgements
read and update them (``AckItem``, ``ack_update``), DLQ replay asks whether one exists, the
migration stamps 0.2 items, and the consumer jobs walk an account's items and delete a
deleted consumer's copies (``walk_query``, ``copy_keys_query``): each through this module,
which is the one place that spells their attributes.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from shared.contract.envelope import QueuedEvent
from shared.storage.attributes import BoolValue, NumberValue, StringValue
from shared.storage.layout import (
    INBOX_BY_TYPE_POS_INDEX,
    INBOX_POS_INDEX,
    inbox_pk,
    inbox_position,
    inbox_shard,
    inbox_type_pk,
)
from shared.storage.reads import BatchGetAnswer

_US = 1_000_000


def event_key(account_id: str, event_id: str) -> dict[str, dict[str, str]]:
    return {"account_id": {"S": account_id}, "event_id": {"S": event_id}}


# Writing


def event_item(event: QueuedEvent, inbox_shards: int = 1, stamp_us: int | None = None) -> dict[str, Any]:
    """An undelivered event as stored: in the inbox indexes until it is acknowledged.

    ``inbox_pos`` is the writer's clock at this attempt (``stamp_us``, default now), not the
    time of receipt: what decides where a forward pager finds the event is when it was stored.
    The 0.2 indexes (keyed on ``event_id``) read the same item, so a 0.2 inbox keeps working.
    """
    shard = inbox_shard(event.event_id, inbox_shards)
    stamp_us = time.time_ns() // 1000 if stamp_us is None else stamp_us
    item: dict[str, Any] = {
        **event_key(event.account_id, event.event_id),
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


def consumer_copy(
    item: dict[str, Any], partition: str, inbox_shards: int, stamp_us: int, *, backfill: bool = False
) -> dict[str, Any]:
    """A named consumer's copy of an event item (as built, or as stored): the same event
    under the consumer's partition (``layout.consumer_partition``), undelivered, in that
    partition's inbox at ``stamp_us``: the copier's clock, so after every cursor the
    consumer was given before the copy existed. A backfill's copy says so (``backfill``:
    ``by_backfill``), so that the backfill moves only its own."""
    event_id, event_type = item["event_id"]["S"], item["event_type"]["S"]
    shard = inbox_shard(event_id, inbox_shards)
    copy: dict[str, Any] = {
        **event_key(partition, event_id),
        "event_type": item["event_type"],
        "payload": item["payload"],
        "received_at_us": item["received_at_us"],
        "delivered": {"BOOL": False},
        "inbox_pk": {"S": inbox_pk(partition, shard)},
        "inbox_type_pk": {"S": inbox_type_pk(partition, event_type, shard)},
        "inbox_pos": {"S": inbox_position(stamp_us, event_id)},
    }
    if "request_id" in item:
        copy["request_id"] = item["request_id"]
    if backfill:
        copy[_BY_BACKFILL] = {"BOOL": True}
    return copy


_BY_BACKFILL = "by_backfill"


def by_backfill(item: dict[str, Any]) -> bool:
    """Was this copy (as stored) made by a consumer's backfill, not by a writer?"""
    return _BY_BACKFILL in item


def event_put(table: str, item: dict[str, Any]) -> dict[str, Any]:
    """Put a new event unless its id is stored: then the stored item comes back (its position)."""
    return {
        "TableName": table,
        "Item": item,
        "ConditionExpression": "attribute_not_exists(event_id)",
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }


def event_probe(table: str, item: dict[str, Any]) -> dict[str, Any]:
    """A known-good event put that can never apply: its key never exists (the writer's probe)."""
    return {"TableName": table, "Item": item, "ConditionExpression": "attribute_exists(event_id)"}


def alias_put(table: str, event: QueuedEvent, original_id: str) -> dict[str, Any]:
    """Point a duplicate's id at its original, unless that id already points somewhere.

    No TTL: an alias must resolve for as long as its original exists, and the original is
    kept until it has been acknowledged and its retention has passed, which the writer
    cannot know. An alias is about 100 bytes, one per duplicate that arrived.
    """
    item = {
        **event_key(event.account_id, event.event_id),
        "alias_of": {"S": original_id},
        "received_at_us": {"N": str(event.received_at_us)},
    }
    return {"TableName": table, "Item": item, "ConditionExpression": "attribute_not_exists(event_id)"}


class Placement(msgspec.Struct, frozen=True, gc=False):
    """Where a stored event sits in the inbox: what a re-stamp moves."""

    account_id: str
    event_id: str
    position: str


def placement(item: dict[str, Any]) -> Placement | None:
    """The inbox place of an event item (as written, or as stored); None once acknowledged,
    or for a 0.2 item without a position."""
    if "inbox_pk" not in item or "inbox_pos" not in item:
        return None
    return Placement(item["account_id"]["S"], item["event_id"]["S"], item["inbox_pos"]["S"])


def restamp_update(table: str, place: Placement, new_position: str) -> dict[str, Any]:
    """Move an event to ``new_position`` if it is still undelivered where it was."""
    return {
        "TableName": table,
        "Key": event_key(place.account_id, place.event_id),
        "UpdateExpression": "SET inbox_pos = :new",
        "ConditionExpression": "inbox_pos = :old AND attribute_exists(inbox_pk)",
        "ExpressionAttributeValues": {":new": {"S": new_position}, ":old": {"S": place.position}},
    }


def ack_values(now_us: int, retention_s: int) -> dict[str, Any]:
    """What ``ack_update`` sets, shared by every update of one transaction."""
    return {
        ":t": {"BOOL": True},
        ":now": {"N": str(now_us)},
        ":exp": {"N": str(now_us // _US + retention_s)},
    }


def ack_update(
    table: str, account_id: str, event_id: str, values: dict[str, Any], lease_id: str | None = None
) -> dict[str, Any]:
    """Mark an available event delivered if it still is (and, for a lease token, still holds
    ``lease_id``: shared.storage.leases); removing its inbox keys drops it from the inbox.
    A leased or failed event is undelivered too, out of the inbox: ``leases.held_ack_update``."""
    condition = "attribute_exists(inbox_pk)"
    if lease_id is not None:
        values = {**values, ":lid": {"S": lease_id}}
        condition += " AND lease_id = :lid"
    return {
        "TableName": table,
        "Key": event_key(account_id, event_id),
        "UpdateExpression": "SET delivered = :t, delivered_at_us = :now, expires_at = :exp "
        "REMOVE inbox_pk, inbox_type_pk",
        "ConditionExpression": condition,
        "ExpressionAttributeValues": values,
    }


# Reading


class StoredEvent(msgspec.Struct, frozen=True, gc=False):  # gc=False: no field can hold a cycle
    event_id: str
    event_type: str
    payload: msgspec.Raw
    received_at_us: int
    delivered: bool
    delivered_at_us: int | None
    position: str | None = None  # its inbox position while undelivered (0.2 items: none until migrated)


# The items the hot reads get back, typed so msgspec decodes them straight from the wire.
# Attributes a Struct does not name (index keys, request_id, expires_at) are skipped.
class EventItem(msgspec.Struct, frozen=True, gc=False):
    """What every read of an event gets back for its consumer (a page's, the held index's)."""

    event_id: StringValue
    event_type: StringValue
    payload: StringValue
    received_at_us: NumberValue
    deliveries: NumberValue | None = None  # how often claimed (shared.storage.leases)

    @property
    def id(self) -> str:
        return self.event_id.S

    @property
    def type(self) -> str:
        return self.event_type.S

    @property
    def times(self) -> int:
        return self.deliveries.N if self.deliveries is not None else 0

    def event(self) -> StoredEvent:
        """As an undelivered event (what a page item without delivery attributes is)."""
        return StoredEvent(self.id, self.type, msgspec.Raw(self.payload.S.encode()), self.received_at_us.N, False, None)


class PageItem(EventItem, frozen=True, gc=False):
    delivered: BoolValue | None = None
    delivered_at_us: NumberValue | None = None
    inbox_pos: StringValue | None = None

    def event(self) -> StoredEvent:
        return StoredEvent(
            self.id,
            self.type,
            msgspec.Raw(self.payload.S.encode()),
            self.received_at_us.N,
            self.delivered is not None and self.delivered.BOOL,
            self.delivered_at_us.N if self.delivered_at_us is not None else None,
            self.inbox_pos.S if self.inbox_pos is not None else None,
        )

    @property
    def pos(self) -> str:
        return self.inbox_pos.S if self.inbox_pos is not None else ""


class PageAnswer(msgspec.Struct, frozen=True):
    Items: list[PageItem] = []
    LastEvaluatedKey: dict[str, Any] | None = None


page_answer = msgspec.json.Decoder(PageAnswer, strict=False)
# What a page reads of each item: the index keys, account and request id stay behind (a
# sixth less to send and parse).
PAGE_PROJECTION = ", ".join(PageItem.__struct_fields__)

# The position ranges a page reads (placeholders :settled, :after; see inbox_api/store.py).
SETTLED = "inbox_pos <= :settled"
BELOW = "inbox_pos < :after"
BETWEEN = "inbox_pos BETWEEN :after AND :settled"
ANY = ""  # every position: what a claim reads (inbox_api/leases.py)


def page_query(table: str, event_type: str | None, descending: bool, positions: str) -> dict[str, Any]:
    """One shard's Query of an inbox index (the partition key as ``:pk``), in position order."""
    index, key_name = (
        (INBOX_POS_INDEX, "inbox_pk") if event_type is None else (INBOX_BY_TYPE_POS_INDEX, "inbox_type_pk")
    )
    return {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": f"{key_name} = :pk AND {positions}" if positions else f"{key_name} = :pk",
        "ScanIndexForward": not descending,
        "ProjectionExpression": PAGE_PROJECTION,
    }


def page_partitions(account_id: str, event_type: str | None, shards: range) -> list[str]:
    """The index partition of each inbox shard that a page of this filter reads."""
    if event_type is None:
        return [inbox_pk(account_id, s) for s in shards]
    return [inbox_type_pk(account_id, event_type, s) for s in shards]


def key_position(last_key: dict[str, Any]) -> str:
    """The position a page's Query stopped at (its LastEvaluatedKey)."""
    return str(last_key["inbox_pos"]["S"])


def alias_target(item: dict[str, Any]) -> str | None:
    """The original an alias item points at; None for an event item."""
    return str(item["alias_of"]["S"]) if "alias_of" in item else None


def stored_event(item: dict[str, Any]) -> StoredEvent:
    """An event item as aiobotocore's generic answers hold it, read like the typed answers."""
    return msgspec.convert(item, PageItem, strict=False).event()


class AckItem(msgspec.Struct, frozen=True, gc=False):
    """What an acknowledgement reads of an id: an event (type, state, last lease) or an alias."""

    event_id: StringValue
    event_type: StringValue | None = None
    delivered: BoolValue | None = None
    alias_of: StringValue | None = None  # a duplicate's id, pointing at the event it duplicates
    inbox_pk: StringValue | None = None  # set while available
    held_pk: StringValue | None = None  # set while leased or failed (shared.storage.leases)
    lease_id: StringValue | None = None

    @property
    def held(self) -> str | None:
        return self.held_pk.S if self.held_pk is not None else None

    @property
    def lease(self) -> str | None:
        return self.lease_id.S if self.lease_id is not None else None

    @property
    def id(self) -> str:
        return self.event_id.S

    @property
    def type(self) -> str:
        return self.event_type.S if self.event_type is not None else ""

    @property
    def is_delivered(self) -> bool:
        return self.delivered is not None and self.delivered.BOOL

    @property
    def original(self) -> str | None:
        return self.alias_of.S if self.alias_of is not None else None


ack_read_answer = msgspec.json.Decoder(BatchGetAnswer[AckItem], strict=False)
ACK_PROJECTION = ", ".join(AckItem.__struct_fields__)


class EventExists(msgspec.Struct, frozen=True, gc=False):
    """What DLQ replay reads of an event: its key, to know that it exists."""

    account_id: StringValue
    event_id: StringValue


exists_answer = msgspec.json.Decoder(BatchGetAnswer[EventExists], strict=False)
EXISTS_PROJECTION = ", ".join(EventExists.__struct_fields__)


# Consumer jobs (inbox_api/jobs.py): a backfill walks an account's items, a clean-up a
# deleted consumer's copies


def walk_query(
    table: str, account_id: str, *, floor: str, ceiling: str, after: str | None, limit: int
) -> dict[str, Any] | None:
    """A page of an account's items in event id order (time of receipt), from ``floor`` (or from
    ``after``, the last id a walk has handled, once it has one) to ``ceiling``, both included;
    None when that range is empty. An item at ``after`` comes back first (a key condition has
    no "greater than ... and at most"): the page holds one item more, and ``past`` drops it.

    Consistent: an eventually consistent read could miss an event committed just before it,
    which no writer copies (the writer's view may predate the consumer). Whole items: a copy
    carries the payload.
    """
    low = after if after is not None else floor
    if low > ceiling:
        return None
    return {
        "TableName": table,
        "KeyConditionExpression": "account_id = :a AND event_id BETWEEN :low AND :high",
        "ExpressionAttributeValues": {":a": {"S": account_id}, ":low": {"S": low}, ":high": {"S": ceiling}},
        "ConsistentRead": True,
        "Limit": limit + (after is not None),
    }


def past(items: list[dict[str, Any]], after: str | None) -> list[dict[str, Any]]:
    """A ``walk_query`` page without the item at ``after``, which the walk has handled."""
    return [item for item in items if item["event_id"]["S"] != after]


class Walked(msgspec.Struct, frozen=True, gc=False):
    """What a walk reads of an item: its id, and for an event (not an alias) its type and receipt."""

    event_id: str
    event_type: str | None  # None: an alias item
    received_at_us: int


def walked(item: dict[str, Any]) -> Walked:
    """An item of ``walk_query``'s answer (or of ``copy_keys_query``'s, receipt 0)."""
    is_event = "alias_of" not in item and "event_type" in item
    received = item.get("received_at_us")
    return Walked(
        item["event_id"]["S"],
        item["event_type"]["S"] if is_event else None,
        int(received["N"]) if received is not None else 0,
    )


def copy_keys_query(table: str, partition: str, limit: int) -> dict[str, Any]:
    """The first ids and types of a consumer partition's copies: a clean-up reads them, deletes
    them, and reads again from the start until none is left."""
    return {
        "TableName": table,
        "KeyConditionExpression": "account_id = :p",
        "ExpressionAttributeValues": {":p": {"S": partition}},
        "ProjectionExpression": "event_id, event_type",
        "ConsistentRead": True,
        "Limit": limit,
    }


def delete_request(account_id: str, event_id: str) -> dict[str, Any]:
    """One BatchWriteItem entry deleting an item of the events table."""
    return {"DeleteRequest": {"Key": event_key(account_id, event_id)}}


# The 0.2 -> 0.3 migration (shared/ops/migrate.py)


def unpositioned_scan(table: str, limit: int) -> dict[str, Any]:
    """A Scan for undelivered events of 0.2, which have no inbox position yet."""
    return {
        "TableName": table,
        "FilterExpression": "attribute_exists(inbox_pk) AND attribute_not_exists(inbox_pos)",
        "ProjectionExpression": "account_id, event_id",
        "Limit": limit,
    }


def position_legacy(table: str, item: dict[str, Any], stamp_us: int) -> dict[str, Any]:
    """Give a 0.2 event (as ``unpositioned_scan`` returns it) a position, if still without one."""
    return {
        "TableName": table,
        "Key": {"account_id": item["account_id"], "event_id": item["event_id"]},
        "UpdateExpression": "SET inbox_pos = :pos",
        "ConditionExpression": "attribute_exists(inbox_pk) AND attribute_not_exists(inbox_pos)",
        "ExpressionAttributeValues": {":pos": {"S": inbox_position(stamp_us, item["event_id"]["S"])}},
    }
