"""The consumers table's items, built and read here only: a named consumer, and the account's
``#account`` item that counts them.

A consumer item (key ``account_id``, ``name``): ``generation`` (random, new at each creation,
part of its partition: ``layout.consumer_partition``), ``event_types`` (a list of exact
types and ``prefix.*`` patterns; absent: every type), ``start_us`` (0: as far back as
retention keeps events), ``created_at_us``, ``status`` and, while it has one, its job:
``job`` (``backfill`` or ``cleanup``), ``job_pk`` and ``job_due_us`` (the sparse ``jobs``
index), ``job_after`` (the last event id the job has handled), ``job_owner`` and
``job_lease_until_us`` (the inbox process running it), ``walk_until_us`` (where the
backfill's walk ends), ``walked`` and ``delivered`` (what the backfill has read and copied so
far).

A deleted consumer's item moves to the name ``#deleted:<name>#<generation>`` with status
``deleting`` and a clean-up job: the name is free again at once, and the writers, which see
the moved item in their view, stop copying to it. Names of real consumers never start with
``#``. The ``#account`` item holds ``n``, how many named consumers the account has, and
``d``, how many deleted ones wait for their clean-up: creation and deletion move them in the
same transaction as the consumer item, on condition that both stay within the account's
limit; the end of a clean-up takes one from ``d``.

Who uses what: the inbox's ``/consumers`` routes (create, read, filter, delete), the writer's
view of an account (``view_query``, ``consumers_of``), the job runner (``jobs_query`` and
the ``job_*`` updates).
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass
from typing import Any

from shared.storage.layout import JOBS_INDEX, consumer_partition

DEFAULT = "default"  # every account's implicit consumer: today's inbox, never stored
# The contract's ``[A-Za-z0-9_.-]{1,64}``, less the names made of dots only: ``.`` and ``..``
# are path steps that HTTP clients rewrite, so no URL could name such a consumer. Leading dots,
# then one other character: one way to match, so a long hostile name costs linear time.
NAME_PATTERN = re.compile(r"\.*[A-Za-z0-9_-][A-Za-z0-9_.-]*")
MAX_NAME_CHARS = 64
MAX_EVENT_TYPES = 50  # patterns in one consumer's filter
MAX_EVENT_TYPE_CHARS = 255
PREFIX_SUFFIX = ".*"
ACCOUNT_ITEM = "#account"
_DELETED = "#deleted:"
# ``start: now`` begins this long before the creation instant: an event sent just after the
# creation, through an ingest host whose clock is behind the inbox's (or the operator's), is
# still the consumer's. It may get the events of that second before, never miss one after.
NOW_LEEWAY_US = 1_000_000
LATEST_START_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z: the last RFC 3339 can write
DEFAULT_MAX_DELIVERIES = 10  # the contract's default, and the ``default`` consumer's
MAX_DELIVERIES_LIMIT = 1000
_JOBS_PARTITION = "due"  # one partition of the jobs index: a few items, read a few times a minute
_GENERATION_BYTES = 6


class Status(enum.StrEnum):
    ACTIVE = "active"
    DELETING = "deleting"


class Job(enum.StrEnum):
    BACKFILL = "backfill"  # copy the events received from its start on, stored before writers knew it
    CLEANUP = "cleanup"  # delete a deleted consumer's copies and counters


def start_of_now(now_us: int) -> int:
    """Where a consumer created ``now`` starts (``NOW_LEEWAY_US``)."""
    return max(0, now_us - NOW_LEEWAY_US)


def valid_name(name: str) -> bool:
    """``NAME_PATTERN``, at most ``MAX_NAME_CHARS``."""
    return len(name) <= MAX_NAME_CHARS and NAME_PATTERN.fullmatch(name) is not None


def pattern_problem(pattern: str) -> str | None:
    """Why a filter entry is not an exact type or ``prefix.*``; None when it is one."""
    if not 1 <= len(pattern) <= MAX_EVENT_TYPE_CHARS:
        return f"Each entry must be 1 to {MAX_EVENT_TYPE_CHARS} characters."
    if pattern == PREFIX_SUFFIX:
        return "A prefix pattern needs a prefix before '.*' (leave event_types out for every type)."
    return None


def matches(event_types: tuple[str, ...] | None, event_type: str) -> bool:
    """Does a filter take this type? ``order.*`` takes ``order.created`` and ``order.a.b``, not ``order``."""
    if event_types is None:
        return True
    for pattern in event_types:
        if pattern == event_type:
            return True
        if pattern.endswith(PREFIX_SUFFIX) and event_type.startswith(pattern[:-1]):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Consumer:
    account_id: str
    name: str
    generation: str
    event_types: tuple[str, ...] | None
    start_us: int  # 0: the earliest event retained
    created_at_us: int
    status: Status = Status.ACTIVE
    job: Job | None = None
    job_due_us: int | None = None
    job_after: str | None = None
    job_owner: str | None = None
    job_lease_until_us: int | None = None
    # From this instant of receipt on, the writers copy every event themselves: where the
    # backfill's walk ends (creation + view + margin, decided once by whoever created it).
    walk_until_us: int | None = None
    walked: int = 0
    delivered: int = 0
    # Claims of one event without an ack before it moves to the failed list (shared.storage.leases).
    max_deliveries: int = DEFAULT_MAX_DELIVERIES

    @property
    def partition(self) -> str:
        """Its copies' ``account_id`` in the events table (and its counters' id)."""
        return consumer_partition(self.account_id, self.name, self.generation)

    @property
    def stored_name(self) -> str:
        """The item's sort key: its name, or the moved name of a deleted consumer."""
        if self.status is Status.DELETING:
            return f"{_DELETED}{self.name}#{self.generation}"
        return self.name

    def takes(self, event_type: str, received_at_us: int) -> bool:
        """Is an event of this type, received then, one of this consumer's?"""
        return (
            self.status is Status.ACTIVE and received_at_us >= self.start_us and matches(self.event_types, event_type)
        )


def new_generation() -> str:
    return secrets.token_hex(_GENERATION_BYTES)


# Writing


def consumer_key(account_id: str, stored_name: str) -> dict[str, dict[str, str]]:
    return {"account_id": {"S": account_id}, "name": {"S": stored_name}}


def consumer_item(consumer: Consumer) -> dict[str, Any]:
    item: dict[str, Any] = {
        **consumer_key(consumer.account_id, consumer.stored_name),
        "generation": {"S": consumer.generation},
        "start_us": {"N": str(consumer.start_us)},
        "created_at_us": {"N": str(consumer.created_at_us)},
        "status": {"S": consumer.status.value},
        "walked": {"N": str(consumer.walked)},
        "delivered": {"N": str(consumer.delivered)},
        "max_deliveries": {"N": str(consumer.max_deliveries)},
    }
    if consumer.event_types is not None:
        item["event_types"] = {"L": [{"S": t} for t in consumer.event_types]}
    if consumer.job is not None:
        item["job"] = {"S": consumer.job.value}
        item["job_pk"] = {"S": _JOBS_PARTITION}
        item["job_due_us"] = {"N": str(consumer.job_due_us or 0)}
        if consumer.job_after is not None:
            item["job_after"] = {"S": consumer.job_after}
    if consumer.walk_until_us is not None:
        item["walk_until_us"] = {"N": str(consumer.walk_until_us)}
    return item


def create_put(table: str, consumer: Consumer) -> dict[str, Any]:
    """Put a new consumer unless its name is taken."""
    return {
        "TableName": table,
        "Item": consumer_item(consumer),
        "ConditionExpression": "attribute_not_exists(#n)",
        "ExpressionAttributeNames": {"#n": "name"},
    }


def count_update(table: str, account_id: str, delta: int, limit: int) -> dict[str, Any]:
    """Move the account's consumer count by ``delta``. An increase only while under ``limit``,
    and while fewer than ``limit`` deleted consumers wait for their clean-up (``d``): deleting
    frees a slot at once, but churn cannot pile up deleted items that every writer's view
    reads. A decrease (a deletion) adds one to ``d``; ``cleanup_count_update`` takes it back."""
    update: dict[str, Any] = {
        "TableName": table,
        "Key": consumer_key(account_id, ACCOUNT_ITEM),
        "UpdateExpression": "ADD n :d",
        "ExpressionAttributeValues": {":d": {"N": str(delta)}},
    }
    if delta > 0:
        update["ConditionExpression"] = (
            "(attribute_not_exists(n) OR n <= :most) AND (attribute_not_exists(d) OR d < :limit)"
        )
        update["ExpressionAttributeValues"][":most"] = {"N": str(limit - delta)}
        update["ExpressionAttributeValues"][":limit"] = {"N": str(limit)}
    else:
        update["UpdateExpression"] = "ADD n :d, d :deleted"
        update["ExpressionAttributeValues"][":deleted"] = {"N": str(-delta)}
    return update


def cleanup_count_update(table: str, account_id: str) -> dict[str, Any]:
    """One deleted consumer fewer waiting for its clean-up (in the transaction that ends it)."""
    return {
        "TableName": table,
        "Key": consumer_key(account_id, ACCOUNT_ITEM),
        "UpdateExpression": "ADD d :minus",
        "ExpressionAttributeValues": {":minus": {"N": "-1"}},
    }


def settings_update(table: str, consumer: Consumer) -> dict[str, Any]:
    """Write an active consumer's filter and ``max_deliveries`` as ``consumer`` holds them, if
    it is still the generation that was read."""
    values: dict[str, Any] = {":g": {"S": consumer.generation}, ":m": {"N": str(consumer.max_deliveries)}}
    expression = "SET max_deliveries = :m"
    if consumer.event_types is None:
        expression += " REMOVE event_types"
    else:
        expression += ", event_types = :t"
        values[":t"] = {"L": [{"S": t} for t in consumer.event_types]}
    return {
        "TableName": table,
        "Key": consumer_key(consumer.account_id, consumer.name),
        "UpdateExpression": expression,
        "ConditionExpression": "generation = :g",
        "ExpressionAttributeValues": values,
    }


def delete_active(table: str, consumer: Consumer) -> dict[str, Any]:
    """Remove the active item of the generation that was read (the transaction moves it)."""
    return {
        "TableName": table,
        "Key": consumer_key(consumer.account_id, consumer.name),
        "ConditionExpression": "generation = :g",
        "ExpressionAttributeValues": {":g": {"S": consumer.generation}},
    }


def moved_put(table: str, deleting: Consumer) -> dict[str, Any]:
    """Put a deleted consumer's item under its moved name (the transaction removes the active one)."""
    if deleting.status is not Status.DELETING:
        raise ValueError("only a deleting consumer moves")
    return {
        "TableName": table,
        "Item": consumer_item(deleting),
        "ConditionExpression": "attribute_not_exists(#n)",
        "ExpressionAttributeNames": {"#n": "name"},
    }


# Reading


def view_query(table: str, account_id: str) -> dict[str, Any]:
    """Every item of an account, read consistently: what a writer's view and ``GET /consumers`` read."""
    return {
        "TableName": table,
        "KeyConditionExpression": "account_id = :a",
        "ExpressionAttributeValues": {":a": {"S": account_id}},
        "ConsistentRead": True,
    }


def get_key(table: str, account_id: str, name: str) -> dict[str, Any]:
    return {"TableName": table, "Key": consumer_key(account_id, name), "ConsistentRead": True}


def consumer_from_item(item: dict[str, Any]) -> Consumer | None:
    """A consumer item as stored (a deleted one included); None for the ``#account`` item."""
    stored = item["name"]["S"]
    if stored == ACCOUNT_ITEM:
        return None
    deleting = stored.startswith(_DELETED)
    name = stored[len(_DELETED) :].rsplit("#", 1)[0] if deleting else stored
    types = item.get("event_types")
    return Consumer(
        account_id=item["account_id"]["S"],
        name=name,
        generation=item["generation"]["S"],
        event_types=tuple(t["S"] for t in types["L"]) if types is not None else None,
        start_us=int(item["start_us"]["N"]),
        created_at_us=int(item["created_at_us"]["N"]),
        status=Status(item["status"]["S"]),
        job=Job(item["job"]["S"]) if "job" in item else None,
        job_due_us=_number(item, "job_due_us"),
        job_after=item["job_after"]["S"] if "job_after" in item else None,
        job_owner=item["job_owner"]["S"] if "job_owner" in item else None,
        job_lease_until_us=_number(item, "job_lease_until_us"),
        walk_until_us=_number(item, "walk_until_us"),
        walked=_number(item, "walked") or 0,
        delivered=_number(item, "delivered") or 0,
        max_deliveries=_number(item, "max_deliveries") or DEFAULT_MAX_DELIVERIES,  # 0.4 items: the default
    )


def consumers_of(items: list[dict[str, Any]]) -> list[Consumer]:
    """The consumers among an account's items (``view_query``'s answer), deleted ones included."""
    return [c for item in items if (c := consumer_from_item(item)) is not None]


def account_count(items: list[dict[str, Any]]) -> int:
    """How many named consumers the ``#account`` item counts (0 when it does not exist)."""
    for item in items:
        if item["name"]["S"] == ACCOUNT_ITEM:
            return _number(item, "n") or 0
    return 0


def _number(item: dict[str, Any], name: str) -> int | None:
    return int(item[name]["N"]) if name in item else None


# Jobs: taken under a lease, run in steps, their place saved after each (docs/architecture.md)


def jobs_query(table: str, now_us: int, limit: int = 10) -> dict[str, Any]:
    """Consumers whose job is due (an eventually consistent read: the lease decides who runs)."""
    return {
        "TableName": table,
        "IndexName": JOBS_INDEX,
        "KeyConditionExpression": "job_pk = :p AND job_due_us <= :now",
        "ExpressionAttributeValues": {":p": {"S": _JOBS_PARTITION}, ":now": {"N": str(now_us)}},
        "Limit": limit,
    }


def job_lease(table: str, consumer: Consumer, owner: str, now_us: int, until_us: int) -> dict[str, Any]:
    """Take (or renew) the job's lease: free, expired, or already ours, and the same job.

    A leased job is due again when its lease ends: the jobs query, which reads the earliest due
    first, never returns the jobs others are running, so those never hide the ones waiting.
    """
    return {
        "TableName": table,
        "Key": consumer_key(consumer.account_id, consumer.stored_name),
        "UpdateExpression": "SET job_owner = :me, job_lease_until_us = :until, job_due_us = :until",
        "ConditionExpression": "generation = :g AND #job = :job AND "
        "(attribute_not_exists(job_owner) OR job_owner = :me OR job_lease_until_us < :now)",
        "ExpressionAttributeNames": {"#job": "job"},
        "ExpressionAttributeValues": {
            ":me": {"S": owner},
            ":until": {"N": str(until_us)},
            ":now": {"N": str(now_us)},
            ":g": {"S": consumer.generation},
            ":job": {"S": (consumer.job or Job.BACKFILL).value},
        },
        "ReturnValues": "ALL_NEW",
    }


def job_progress(
    table: str, consumer: Consumer, owner: str, *, after: str, walked: int, delivered: int, until_us: int
) -> dict[str, Any]:
    """Save the job's place (and renew its lease) while this process still holds it."""
    return {
        "TableName": table,
        "Key": consumer_key(consumer.account_id, consumer.stored_name),
        "UpdateExpression": "SET job_after = :after, walked = walked + :w, delivered = delivered + :d, "
        "job_lease_until_us = :until, job_due_us = :until",
        "ConditionExpression": "job_owner = :me AND generation = :g",
        "ExpressionAttributeValues": {
            ":after": {"S": after},
            ":w": {"N": str(walked)},
            ":d": {"N": str(delivered)},
            ":until": {"N": str(until_us)},
            ":me": {"S": owner},
            ":g": {"S": consumer.generation},
        },
    }


def job_release(table: str, consumer: Consumer, owner: str, due_us: int) -> dict[str, Any]:
    """Give the job back, due again at ``due_us`` (a step that must wait: any process may take it then)."""
    return {
        "TableName": table,
        "Key": consumer_key(consumer.account_id, consumer.stored_name),
        "UpdateExpression": "SET job_due_us = :due REMOVE job_owner, job_lease_until_us",
        "ConditionExpression": "job_owner = :me AND generation = :g",
        "ExpressionAttributeValues": {
            ":due": {"N": str(due_us)},
            ":me": {"S": owner},
            ":g": {"S": consumer.generation},
        },
    }


def job_done(table: str, consumer: Consumer, owner: str) -> dict[str, Any]:
    """End a backfill: the consumer leaves the jobs index."""
    return {
        "TableName": table,
        "Key": consumer_key(consumer.account_id, consumer.stored_name),
        "UpdateExpression": "REMOVE #job, job_pk, job_due_us, job_owner, job_lease_until_us",
        "ConditionExpression": "job_owner = :me AND generation = :g",
        "ExpressionAttributeNames": {"#job": "job"},
        "ExpressionAttributeValues": {":me": {"S": owner}, ":g": {"S": consumer.generation}},
    }


def cleanup_done(table: str, consumer: Consumer, owner: str) -> dict[str, Any]:
    """End a clean-up: the deleted consumer's item goes."""
    return {
        "TableName": table,
        "Key": consumer_key(consumer.account_id, consumer.stored_name),
        "ConditionExpression": "job_owner = :me AND generation = :g",
        "ExpressionAttributeValues": {":me": {"S": owner}, ":g": {"S": consumer.generation}},
    }
