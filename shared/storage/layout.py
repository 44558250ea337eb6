"""Tables, key attributes and index names of the inbox data model.

events table  (pk ``account_id``, sk ``event_id``): one item per stored event, plus alias
    items (``alias_of``) that point a duplicate's id at the original.
    GSI ``inbox``          (``inbox_pk`` = account, sk ``event_id``): undelivered events only.
    GSI ``inbox_by_type``  (``inbox_type_pk`` = account|type, sk ``event_id``): same, per type.
    Both are sparse: acknowledging removes the two attributes, which drops the event from
    both indexes. ``expires_at`` (TTL) is set when the event is acknowledged.
dedup table   (pk ``dedup_id`` = account|dedup key): which event first claimed a key, and until
    when (``window_ends_us``); TTL ``expires_at`` removes it after the window.
counters table (pk ``counter_id`` = account|shard[|type]): undelivered counts, split over
    shards so no single item takes every write; a count is the sum of its shards.
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


def counter_id(account_id: str, shard: int, event_type: str | None = None) -> str:
    """Total count shards are ``account|shard``; per-type shards add ``|t:type``."""
    base = f"{account_id}{SEP}{shard}"
    return base if event_type is None else f"{base}{SEP}t:{event_type}"
