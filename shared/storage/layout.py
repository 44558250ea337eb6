"""Tables, key attributes and index names of the inbox data model.

events table  (pk ``account_id``, sk ``event_id``): one item per stored event, plus alias
    items (``alias_of``) that point a duplicate's id at the original.
    GSI ``inbox``          (``inbox_pk`` = account[#shard], sk ``event_id``): undelivered events.
    GSI ``inbox_by_type``  (``inbox_type_pk`` = account[#shard]|type, sk ``event_id``): same,
    per type. Both are sparse: acknowledging removes the two attributes, which drops the
    event from both indexes. ``expires_at`` (TTL) is set when the event is acknowledged.
    With ``TRIGGERS_INBOX_SHARDS`` = S > 1 an event lands in shard crc32(event_id) mod S;
    shard 0 has no suffix, so a single-shard inbox is laid out as before sharding existed.
    GSI ``inbox_by_pos``, ``inbox_by_type_pos`` (0.3): the same partition keys, sorted by
    ``inbox_pos`` = the writer's clock when it stored the event + the event id
    (``inbox_position``). Pages read these: an event stored late gets a late position, so a
    consumer paging forward never passes it (docs/architecture.md, "Inbox: paging").
    Acknowledging removes the partition keys, which drops the event from all four indexes.
    GSI ``held`` (0.5; ``held_pk`` = partition|lease or partition|failed, sk ``held_pos``):
    undelivered events out of the inbox: leased (sorted by lease end) or on the consumer's
    failed list (sorted by when they failed). ``shared.storage.leases`` owns them.
dedup table   (pk ``dedup_id`` = account|dedup key): which event first claimed a key, and until
    when (``window_ends_us``); TTL ``expires_at`` removes it after the window.
consumers table (pk ``account_id``, sk ``name``): an account's named consumers, and one
    ``#account`` item counting them (``shared.storage.consumers``). GSI ``jobs`` (sparse:
    ``job_pk``, ``job_due_us``): consumers with a backfill or a clean-up to run.
    A named consumer's events are copies of the account's event items under the partition
    ``consumer_partition`` (``c:name#generation|account``) of the events table: its inbox,
    counters, cursors and acknowledgements are those of an account of that id. No account
    id contains ``:`` or ``|``, so no key derived from it meets one derived from an account.
counts table  (pk ``counter_id`` = account[|t:type], sk ``shard_index``): undelivered counts. A
    counter is an item collection: a count is the sum of its shards, read with one
    consistent Query; writes spread over shards only where they contend
    (``shared.storage.counters``).
"""

from __future__ import annotations

import zlib

from shared.contract.ids import is_event_id

# Items one TransactWriteItems may hold (DynamoDB's limit).
TRANSACTION_MAX_ITEMS = 100

INBOX_INDEX = "inbox"
JOBS_INDEX = "jobs"
INBOX_BY_TYPE_INDEX = "inbox_by_type"
# Sorted by inbox position; what the inbox pages on since 0.3. The two above stay while a 0.2
# inbox may still run (docs/operations.md, "Upgrading").
INBOX_POS_INDEX = "inbox_by_pos"
INBOX_BY_TYPE_POS_INDEX = "inbox_by_type_pos"
# 0.5: leased and failed events (``held_pk``, ``held_pos``), shared.storage.leases.
HELD_INDEX = "held"
# Digits of the microsecond stamp at the head of a position: fixed width, so positions sort
# as strings in time order (16 digits last until the year 2286).
POSITION_STAMP_DIGITS = 16

# Separator between an account id and a free-form suffix. Account ids never contain it, nor
# SHARD_SEP (shared.keys.admin.ACCOUNT_ID_PATTERN), so every key here has one reading.
SEP = "|"
SHARD_SEP = "#"


def inbox_shard(event_id: str, shards: int) -> int:
    """The inbox shard of an event: the same in every process and release."""
    return zlib.crc32(event_id.encode()) % shards if shards > 1 else 0


def inbox_pk(account_id: str, shard: int = 0) -> str:
    return account_id if shard == 0 else f"{account_id}{SHARD_SEP}{shard}"


def inbox_type_pk(account_id: str, event_type: str, shard: int = 0) -> str:
    return f"{inbox_pk(account_id, shard)}{SEP}{event_type}"


def inbox_position(stamp_us: int, event_id: str) -> str:
    """Where an event sits in the inbox: after everything stamped before ``stamp_us``."""
    return f"{stamp_us:0{POSITION_STAMP_DIGITS}d}{event_id}"


def is_position(text: str) -> bool:
    """Whether ``text`` has the shape ``inbox_position`` gives: digits, then an event id."""
    stamp, event_id = text[:POSITION_STAMP_DIGITS], text[POSITION_STAMP_DIGITS:]
    return len(stamp) == POSITION_STAMP_DIGITS and stamp.isascii() and stamp.isdigit() and is_event_id(event_id)


def position_stamp_us(position: str) -> int:
    """The microsecond stamp at the head of a position."""
    return int(position[:POSITION_STAMP_DIGITS])


SQS_MAX_RETENTION_S = 14 * 24 * 3600  # the longest SQS keeps a message, dead letters included


def claim_linger_s(event_retention_s: int) -> int:
    """How long a dedup claim outlives its window: as long as a copy received inside it can
    still arrive (the event retention for a dead letter's replay, plus SQS's 14-day maximum
    retention). The writer sets each claim's TTL from this; dead-letter replay reads it."""
    return event_retention_s + SQS_MAX_RETENTION_S


def dedup_id(account_id: str, dedup_key: str) -> str:
    return f"{account_id}{SEP}{dedup_key}"


def consumer_partition(account_id: str, name: str, generation: str) -> str:
    """Where a named consumer's copies of the account's events live (the events table's
    ``account_id``); each creation of a name has its own generation, so its own partition."""
    return f"c:{name}{SHARD_SEP}{generation}{SEP}{account_id}"


def held_pk(partition: str, failed: bool) -> str:
    """The ``held`` index partition of a consumer partition's leased (or failed) events."""
    return f"{partition}{SEP}{'failed' if failed else 'lease'}"


def counter_id(account_id: str, event_type: str | None = None) -> str:
    """The account's total count is ``account``; a count per type is ``account|t:type``."""
    return account_id if event_type is None else f"{account_id}{SEP}t:{event_type}"
