"""Carry the undelivered counts of the pre-0.2 counters table over to the counts table.

Before, each shard of a counter was its own item (``counter_id`` = ``account|shard[|t:type]``)
and a count read every shard by key. Now a counter is an item collection (``counter_id`` =
``account[|t:type]``, sort key ``shard_index``) read with one Query. The legacy shards of each
counter are summed into one item at ``MIGRATED_SHARD``, a shard no live writer uses, so the
migration can run after the new version is deployed: live writes land on shards 0 and up,
and the migrated sum sits beside them. Rerunning it overwrites that item with the same sum,
so it is idempotent once no old-version process writes the legacy table any more.

0.2 → 0.3: ``migrate_inbox_positions`` gives the undelivered events of 0.2 an inbox position.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from shared.aws.clients import AwsClients
from shared.settings import Settings
from shared.storage.counters import counter_item, legacy_count
from shared.storage.events import position_legacy, unpositioned_scan
from shared.storage.layout import SEP

MIGRATED_SHARD = -1


def legacy_counter(legacy_id: str) -> str:
    """``account|shard`` -> ``account``; ``account|shard|t:type`` -> ``account|t:type``."""
    account, _shard, *kind = legacy_id.split(SEP, 2)
    return SEP.join([account, *kind])


async def migrate_counters(settings: Settings, clients: AwsClients) -> int:
    """Sum the legacy shards into the counts table; how many counters were carried over."""
    dynamodb = clients.dynamodb
    try:
        await dynamodb.admin.describe_table(TableName=settings.legacy_counters_table)
    except dynamodb.admin.exceptions.ResourceNotFoundException:
        return 0  # created by 0.2 or later: nothing to carry over
    totals: defaultdict[str, int] = defaultdict(int)
    scan: dict[str, Any] = {"TableName": settings.legacy_counters_table, "ConsistentRead": True}
    while True:  # an operator's one-off: a Scan is what it takes to read every counter
        page = await dynamodb.admin.scan(**scan)
        for item in page.get("Items", []):
            legacy_id, n = legacy_count(item)
            totals[legacy_counter(legacy_id)] += n
        if "LastEvaluatedKey" not in page:
            break
        scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    for counter, total in totals.items():
        migrated: Any = counter_item(counter, MIGRATED_SHARD, total)
        await dynamodb.put_item(TableName=settings.counters_table, Item=migrated)
    return len(totals)


# Items one Scan page of the position backfill examines (a page is also one progress line).
POSITIONS_SCAN_PAGE = 500


async def migrate_inbox_positions(
    settings: Settings,
    clients: AwsClients,
    report: Callable[[str], None] = lambda _: None,
    clock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
) -> int:
    """Give undelivered events of 0.2 (no ``inbox_pos``) a position; how many were given one.

    The position is the migration's own clock when it writes it (``clock_us``), as if the
    event were stored then: 0.3 inboxes may already serve (one image runs ingest, writer
    and inbox), and every cursor they handed out is before that, so a consumer paging
    forward meets these events. They sort after everything stored before the migration
    (docs/operations.md, "Upgrading"). Each write is conditional (still undelivered, still
    without a position), so running it again, or after an interruption, only does what is
    left, and never moves an event a 0.3 writer stamped or an acknowledgement removed
    meanwhile.
    """
    dynamodb = clients.dynamodb
    scan: dict[str, Any] = unpositioned_scan(settings.events_table, POSITIONS_SCAN_PAGE)
    scanned = stamped = 0
    while True:  # an operator's one-off: a Scan is what it takes to find every such event
        page = await dynamodb.admin.scan(**scan)
        for item in page.get("Items", []):
            stamped += await _stamp_legacy(settings, clients, item, clock_us())
        scanned += page.get("ScannedCount", 0)
        report(f"scanned {scanned} items, {stamped} given a position")
        if "LastEvaluatedKey" not in page:
            return stamped
        scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def _stamp_legacy(settings: Settings, clients: AwsClients, item: dict[str, Any], stamp_us: int) -> int:
    update: Any = position_legacy(settings.events_table, item, stamp_us)
    try:
        await clients.dynamodb.update_item(**update)
    except ClientError as exc:  # the lean client raises ClientError itself, not botocore's modeled subclasses
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        return 0  # acknowledged or stamped meanwhile
    return 1
