"""Leases and the failed list: the attributes an event item of a consumer partition (the
``default`` consumer's being the account's own) carries while it is undelivered and out of
the inbox, built and read here only.

An undelivered event is in one of three states, and in exactly one count of its partition
(``shared.storage.counters``: ``n``, ``n_leased``, ``n_failed``):
- available: its inbox keys are set (``shared.storage.events``): pages and claims see it;
- leased: ``held_pk`` = ``layout.held_pk(partition, False)``, ``held_pos`` = its lease's end
  and id (``layout.inbox_position``), ``lease_until_us``; a nack's delay is a lease nobody
  holds;
- failed: ``held_pk`` = ``layout.held_pk(partition, True)``, ``held_pos`` = when it failed.
``deliveries`` (how often it was claimed) and ``lease_id`` (its last lease) stay through
every state: a token stays good for its event until the event is claimed again, also after
its lease ended (the contract refuses it only then), and an acknowledgement by id of a
leased event needs no token.

Every move is a conditional update on the state the mover read (``lease_id``, ``held_pk``,
the inbox key), written with its counters in one transaction (inbox_api/leases.py): two
inbox processes moving the same event move it once, and the counts stay exact.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.storage.attributes import NumberValue, StringValue
from shared.storage.events import EventItem, event_key
from shared.storage.layout import (
    HELD_INDEX,
    POSITION_STAMP_DIGITS,
    held_pk,
    inbox_pk,
    inbox_position,
    inbox_shard,
    inbox_type_pk,
)
from shared.storage.reads import BatchGetAnswer

_ABOVE = "~"  # sorts above every event id character: ``f"{t:016d}~"`` follows every position stamped at t


def _pos(stamp_us: int, event_id: str) -> dict[str, str]:
    return {"S": inbox_position(stamp_us, event_id)}


def claim_update(
    table: str, partition: str, event: EventItem, lease_id: str, until_us: int, *, expired: HeldItem | None = None
) -> dict[str, Any]:
    """Lease an event: an available one (``event`` as a page read it), on condition that it is
    still available and claimed as often as read; or one whose lease ended (``expired``, the
    same event as the held index read it), on condition that it still holds that lease."""
    event_id = event.id
    seen = event.times
    values: dict[str, Any] = {
        ":hk": {"S": held_pk(partition, False)},
        ":hp": _pos(until_us, event_id),
        ":lid": {"S": lease_id},
        ":u": {"N": str(until_us)},
        ":dn": {"N": str(seen + 1)},
    }
    sets = "SET held_pk = :hk, held_pos = :hp, lease_id = :lid, lease_until_us = :u, deliveries = :dn"
    if expired is not None:
        values[":old"] = {"S": expired.lease}
        values[":end"] = {"N": str(expired.until_us)}
        condition = "held_pk = :hk AND lease_id = :old AND lease_until_us = :end"
        return _update(table, partition, event_id, sets, (condition, values))
    if seen:
        values[":seen"] = {"N": str(seen)}
        condition = "attribute_exists(inbox_pk) AND deliveries = :seen"
    else:
        condition = "attribute_exists(inbox_pk) AND attribute_not_exists(deliveries)"
    return _update(table, partition, event_id, f"{sets} REMOVE inbox_pk, inbox_type_pk", (condition, values))


def release_update(
    table: str, partition: str, held: HeldItem, inbox_shards: int, stamp_us: int, *, ended: bool
) -> dict[str, Any]:
    """Give a leased event back to the inbox at a fresh position (stamped ``stamp_us``, so a
    consumer paging forward meets it again), if it still holds the lease read (``ended``: and
    that lease still ends when it was read to, so an extension made meanwhile stands)."""
    shard = inbox_shard(held.id, inbox_shards)
    values = {
        ":ip": {"S": inbox_pk(partition, shard)},
        ":it": {"S": inbox_type_pk(partition, held.type, shard)},
        ":pos": _pos(stamp_us, held.id),
    }
    sets = "SET inbox_pk = :ip, inbox_type_pk = :it, inbox_pos = :pos REMOVE held_pk, held_pos, lease_until_us"
    return _update(table, partition, held.id, sets, _holds(partition, held, ended, values))


def fail_update(table: str, partition: str, held: HeldItem, stamp_us: int, *, ended: bool) -> dict[str, Any]:
    """Move a leased event to the failed list (its deliveries are spent), if it still holds
    the lease read (``ended``: as in ``release_update``)."""
    values = {":fk": {"S": held_pk(partition, True)}, ":fp": _pos(stamp_us, held.id)}
    sets = "SET held_pk = :fk, held_pos = :fp REMOVE lease_until_us"
    return _update(table, partition, held.id, sets, _holds(partition, held, ended, values))


def relet_update(
    table: str, partition: str, event_id: str, *, lease_id: str, new_lease: str, until_us: int
) -> dict[str, Any]:
    """Move a lease's end (extend), or hand the event to a new lease nobody holds until
    ``until_us`` (a nack's delay: the old token stops working), if it holds ``lease_id``."""
    values = {
        ":hk": {"S": held_pk(partition, False)},
        ":old": {"S": lease_id},
        ":lid": {"S": new_lease},
        ":u": {"N": str(until_us)},
        ":hp": _pos(until_us, event_id),
    }
    sets = "SET lease_id = :lid, lease_until_us = :u, held_pos = :hp"
    return _update(table, partition, event_id, sets, ("held_pk = :hk AND lease_id = :old", values))


def held_ack_update(
    table: str, partition: str, event_id: str, *, failed: bool, values: dict[str, Any], lease_id: str | None
) -> dict[str, Any]:
    """Mark a leased (or failed) event delivered, if it still is so (and, for a token, holds
    ``lease_id``); ``values`` are ``events.ack_values``."""
    condition = "held_pk = :hk" + (" AND lease_id = :lid" if lease_id is not None else "")
    values = {**values, ":hk": {"S": held_pk(partition, failed)}}
    if lease_id is not None:
        values[":lid"] = {"S": lease_id}
    sets = "SET delivered = :t, delivered_at_us = :now, expires_at = :exp REMOVE held_pk, held_pos, lease_until_us"
    return _update(table, partition, event_id, sets, (condition, values))


def _holds(partition: str, held: HeldItem, ended: bool, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The condition that the event still holds the lease read (and, ``ended``, its end)."""
    values = {**values, ":hk": {"S": held_pk(partition, False)}, ":old": {"S": held.lease}}
    condition = "held_pk = :hk AND lease_id = :old"
    if ended:
        values[":end"] = {"N": str(held.until_us)}
        condition += " AND lease_until_us = :end"
    return condition, values


def _update(
    table: str, partition: str, event_id: str, expression: str, conditioned: tuple[str, dict[str, Any]]
) -> dict[str, Any]:
    condition, values = conditioned
    return {
        "TableName": table,
        "Key": event_key(partition, event_id),
        "UpdateExpression": expression,
        "ConditionExpression": condition,
        "ExpressionAttributeValues": values,
    }


# Reading


class HeldItem(EventItem, frozen=True, gc=False):
    """What a read of the ``held`` index (and a claim's answer) needs of a leased or failed event."""

    held_pk: StringValue | None = None
    held_pos: StringValue | None = None
    lease_id: StringValue | None = None
    lease_until_us: NumberValue | None = None

    @property
    def lease(self) -> str:
        return self.lease_id.S if self.lease_id is not None else ""

    @property
    def until_us(self) -> int:
        return self.lease_until_us.N if self.lease_until_us is not None else 0

    @property
    def pos(self) -> str:
        return self.held_pos.S if self.held_pos is not None else ""

    def leased_in(self, partition: str) -> bool:
        """Is it (as read) under a lease of that partition, or waiting out a nack's delay?"""
        return self.held_pk is not None and held_pk(partition, False) == self.held_pk.S


class HeldAnswer(msgspec.Struct, frozen=True):
    Items: list[HeldItem] = []
    LastEvaluatedKey: dict[str, Any] | None = None


held_answer = msgspec.json.Decoder(HeldAnswer, strict=False)
HELD_PROJECTION = ", ".join(HeldItem.__struct_fields__)


def expired_query(table: str, partition: str, now_us: int, limit: int) -> dict[str, Any]:
    """The partition's leases that ended by ``now_us``, the longest ended first (eventually
    consistent, as every index read: each move is conditional on what it read)."""
    return {
        "TableName": table,
        "IndexName": HELD_INDEX,
        "KeyConditionExpression": "held_pk = :hk AND held_pos <= :now",
        "ExpressionAttributeValues": {
            ":hk": {"S": held_pk(partition, False)},
            ":now": {"S": f"{now_us:0{POSITION_STAMP_DIGITS}d}{_ABOVE}"},
        },
        "ProjectionExpression": HELD_PROJECTION,
        "Limit": limit,
    }


def failed_query(
    table: str, partition: str, *, descending: bool, settled_us: int, after: str | None, limit: int
) -> dict[str, Any]:
    """A page of the partition's failed list in the order events failed, up to those that
    failed ``settled_us`` ago (as the inbox's pages: a late commit is never behind a cursor)."""
    settled = f"{settled_us:0{POSITION_STAMP_DIGITS}d}{_ABOVE}"
    values: dict[str, Any] = {":hk": {"S": held_pk(partition, True)}, ":settled": {"S": settled}}
    if after is None:
        positions = "held_pos <= :settled"
    elif descending:  # below a position handed out: settled already
        positions, values = "held_pos < :after", {":hk": values[":hk"], ":after": {"S": after}}
    else:
        positions, values[":after"] = "held_pos BETWEEN :after AND :settled", {"S": after + " "}
    return {
        "TableName": table,
        "IndexName": HELD_INDEX,
        "KeyConditionExpression": f"held_pk = :hk AND {positions}",
        "ExpressionAttributeValues": values,
        "ProjectionExpression": HELD_PROJECTION,
        "ScanIndexForward": not descending,
        "Limit": limit,
    }


held_read_answer = msgspec.json.Decoder(BatchGetAnswer[HeldItem], strict=False)
