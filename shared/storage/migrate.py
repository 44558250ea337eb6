"""Carry the undelivered counts of the pre-0.2 counters table over to the counts table.

Before, each shard of a counter was its own item (``counter_id`` = ``account|shard[|t:type]``)
and a count read every shard by key. Now a counter is an item collection (``counter_id`` =
``account[|t:type]``, sort key ``shard_index``) read with one Query. The legacy shards of each
counter are summed into one item at ``MIGRATED_SHARD``, a shard no live writer uses, so the
migration can run after the new version is deployed: live writes land on shards 0 and up,
and the migrated sum sits beside them. Rerunning it overwrites that item with the same sum,
so it is idempotent once no old-version process writes the legacy table any more.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from shared.aws import AwsClients
from shared.settings import Settings
from shared.storage.layout import SEP, counter_key

MIGRATED_SHARD = -1


def legacy_counter(legacy_id: str) -> str:
    """``account|shard`` -> ``account``; ``account|shard|t:type`` -> ``account|t:type``."""
    account, _shard, *kind = legacy_id.split(SEP, 2)
    return SEP.join([account, *kind])


async def migrate_counters(settings: Settings, clients: AwsClients) -> int:
    """Sum the legacy shards into the counts table; how many counters were carried over."""
    dynamodb = clients.dynamodb
    try:
        await dynamodb.describe_table(TableName=settings.legacy_counters_table)
    except dynamodb.exceptions.ResourceNotFoundException:
        return 0  # created by 0.2 or later: nothing to carry over
    totals: defaultdict[str, int] = defaultdict(int)
    scan: dict[str, Any] = {"TableName": settings.legacy_counters_table, "ConsistentRead": True}
    while True:  # an operator's one-off: a Scan is what it takes to read every counter
        page = await dynamodb.scan(**scan)
        for item in page.get("Items", []):
            totals[legacy_counter(item["counter_id"]["S"])] += int(item.get("n", {}).get("N", "0"))
        if "LastEvaluatedKey" not in page:
            break
        scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    for counter, total in totals.items():
        migrated: Any = {**counter_key(counter, MIGRATED_SHARD), "n": {"N": str(total)}}
        await dynamodb.put_item(TableName=settings.counters_table, Item=migrated)
    return len(totals)
