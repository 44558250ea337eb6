"""Tables, key attributes and index names of the inbox data model.

events table  (pk ``account_id``, sk ``event_id``): one item per stored event, plus alias
    items (``alias_of``) that point a duplicate's id at the original.
    GSI ``inbox``          (``inbox_pk`` = account, sk ``event_id``): undelivered events only.
    GSI ``inbox_by_type``  (``inbox_type_pk`` = account|type, sk ``event_id``): same, per type.
    Both are sparse: acknowledging removes the two attributes, which drops the event from
    both indexes. ``expires_at`` (TTL) is set when the event is acknowledged.
dedup table   (pk ``dedup_id`` = account|dedup key): which event first claimed a key, and until
    when (``window_ends_us``); TTL ``expires_at`` removes it after the window.
counts table  (pk ``counter_id`` = account[|t:type], sk ``shard``): undelivered counts. A
    counter is an item collection: a count is the sum of its shards, read with one
    consistent Query; writes spread over shards only where they contend
    (``shared.storage.counters``).
"""

from __future__ import annotations

INBOX_INDEX = "inbox"
INBOX_BY_TYPE_INDEX = "inbox_by_type"

# Separator between an account id (ours, never contains it) and a free-form suffix.
SEP = "|"


def inbox_pk(account_id: str) -> str:
    return account_id


def inbox_type_pk(account_id: str, event_type: str) -> str:
    return f"{account_id}{SEP}{event_type}"


def dedup_id(account_id: str, dedup_key: str) -> str:
    return f"{account_id}{SEP}{dedup_key}"


def counter_id(account_id: str, event_type: str | None = None) -> str:
    """The account's total count is ``account``; a count per type is ``account|t:type``."""
    return account_id if event_type is None else f"{account_id}{SEP}t:{event_type}"


def counter_key(counter: str, shard: int) -> dict[str, dict[str, str]]:
    """One shard of a counter, as a DynamoDB key."""
    return {"counter_id": {"S": counter}, "shard": {"N": str(shard)}}
