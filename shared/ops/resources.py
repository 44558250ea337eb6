"""Create the queues and tables, idempotently: running it twice changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from shared.aws.clients import AwsClients
from shared.settings import Settings
from shared.storage.layout import (
    HELD_INDEX,
    INBOX_BY_TYPE_INDEX,
    INBOX_BY_TYPE_POS_INDEX,
    INBOX_INDEX,
    INBOX_POS_INDEX,
    JOBS_INDEX,
)

if TYPE_CHECKING:  # types-aiobotocore is a development dependency: types only
    from types_aiobotocore_dynamodb.type_defs import (
        AttributeDefinitionTypeDef,
        GlobalSecondaryIndexTypeDef,
        KeySchemaElementTypeDef,
    )

TABLE_ACTIVE_TIMEOUT_S = 60.0
QUEUE_MAXIMUM_MESSAGE_SIZE = 1024 * 1024  # bytes; SQS's largest
# A new index on a table that holds data is backfilled first: on a large table that takes
# hours (DynamoDB: "can take a long time"). `triggers init` waits this long for it, printing
# progress, and says to run it again if it gives up (it resumes: nothing is created twice).
INDEX_ACTIVE_TIMEOUT_S = 6 * 3600.0
INDEX_PROGRESS_EVERY_S = 60.0
_POLL_S = 0.2
_INDEX_POLL_MAX_S = 10.0


def _key(*names: tuple[str, str]) -> list[KeySchemaElementTypeDef]:
    return [{"AttributeName": n, "KeyType": t} for n, t in names]  # type: ignore[typeddict-item]


def _attrs(*names: str, kind: Literal["S", "N"] = "S") -> list[AttributeDefinitionTypeDef]:
    return [{"AttributeName": n, "AttributeType": kind} for n in names]


def _sparse_index(name: str, partition: str, sort: str = "event_id") -> GlobalSecondaryIndexTypeDef:
    return {
        "IndexName": name,
        "KeySchema": _key((partition, "HASH"), (sort, "RANGE")),
        # Pages are served from the index alone: no read back to the base table.
        "Projection": {"ProjectionType": "ALL"},
    }


def table_specs(settings: Settings) -> list[dict[str, Any]]:
    """CreateTable arguments of every table, with the attribute that TTL uses (or None)."""
    return [
        {
            "TableName": settings.events_table,
            "KeySchema": _key(("account_id", "HASH"), ("event_id", "RANGE")),
            "AttributeDefinitions": _attrs(
                "account_id", "event_id", "inbox_pk", "inbox_type_pk", "inbox_pos", "held_pk", "held_pos"
            ),
            "GlobalSecondaryIndexes": [
                _sparse_index(INBOX_INDEX, "inbox_pk"),
                _sparse_index(INBOX_BY_TYPE_INDEX, "inbox_type_pk"),
                # 0.3: what pages read (positions, shared.storage.layout). A 0.2 table gets
                # them added by _ensure_indexes.
                _sparse_index(INBOX_POS_INDEX, "inbox_pk", "inbox_pos"),
                _sparse_index(INBOX_BY_TYPE_POS_INDEX, "inbox_type_pk", "inbox_pos"),
                # 0.5: leased and failed events (shared.storage.leases); added to older tables too.
                _sparse_index(HELD_INDEX, "held_pk", "held_pos"),
            ],
            "ttl": "expires_at",
        },
        {
            "TableName": settings.keys_table,
            "KeySchema": _key(("key_id", "HASH")),
            "AttributeDefinitions": _attrs("key_id"),
            "ttl": None,
        },
        {
            "TableName": settings.dedup_table,
            "KeySchema": _key(("dedup_id", "HASH")),
            "AttributeDefinitions": _attrs("dedup_id"),
            "ttl": "expires_at",
        },
        {
            "TableName": settings.counters_table,
            "KeySchema": _key(("counter_id", "HASH"), ("shard_index", "RANGE")),
            "AttributeDefinitions": _attrs("counter_id") + _attrs("shard_index", kind="N"),
            "ttl": None,
        },
        {
            "TableName": settings.consumers_table,
            "KeySchema": _key(("account_id", "HASH"), ("name", "RANGE")),
            "AttributeDefinitions": _attrs("account_id", "name", "job_pk") + _attrs("job_due_us", kind="N"),
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": JOBS_INDEX,
                    "KeySchema": _key(("job_pk", "HASH"), ("job_due_us", "RANGE")),
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
            "ttl": None,
        },
    ]


async def ensure_resources(
    settings: Settings, clients: AwsClients, report: Callable[[str], None] = lambda _: None
) -> None:
    """Create what is missing; align queue attributes with the settings."""
    await _ensure_queues(settings, clients, report)
    for spec in table_specs(settings):
        await _ensure_table(clients, dict(spec), report)


async def _ensure_queues(settings: Settings, clients: AwsClients, report: Callable[[str], None]) -> None:
    retention = str(settings.queue_retention_s)
    # 1 MiB: the edge packs messages up to it. Set explicitly (and raised on an existing
    # queue): queues made before SQS raised its default keep 256 KiB.
    size = str(QUEUE_MAXIMUM_MESSAGE_SIZE)
    dlq_url = await _ensure_queue(
        clients, settings.dead_letter_queue, {"MessageRetentionPeriod": retention, "MaximumMessageSize": size}
    )
    dlq_arn = (await clients.sqs.admin.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": settings.queue_max_receive_count}
    await _ensure_queue(
        clients,
        settings.events_queue,
        {
            "VisibilityTimeout": str(settings.queue_visibility_timeout_s),
            "MessageRetentionPeriod": retention,
            "MaximumMessageSize": size,
            "RedrivePolicy": json.dumps(redrive),
        },
    )
    report(f"queues ready: {settings.events_queue} (dead letters: {settings.dead_letter_queue})")


async def _ensure_queue(clients: AwsClients, name: str, attributes: dict[str, str]) -> str:
    try:
        url = (await clients.sqs.admin.get_queue_url(QueueName=name))["QueueUrl"]
    except ClientError as exc:
        if "NonExistentQueue" not in exc.response["Error"]["Code"]:
            raise
        return (await clients.sqs.admin.create_queue(QueueName=name, Attributes=attributes))["QueueUrl"]  # type: ignore[arg-type]
    await clients.sqs.admin.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # type: ignore[arg-type]
    return url


async def _ensure_table(clients: AwsClients, spec: dict[str, Any], report: Callable[[str], None]) -> None:
    ttl_attribute = spec.pop("ttl")
    name = spec["TableName"]
    try:
        await clients.dynamodb.admin.describe_table(TableName=name)
    except clients.dynamodb.admin.exceptions.ResourceNotFoundException:
        await clients.dynamodb.admin.create_table(BillingMode="PAY_PER_REQUEST", **spec)
        report(f"table created: {name}")
    await _wait_active(clients, name, report)
    await _ensure_indexes(clients, spec, report)
    if ttl_attribute:
        await _ensure_ttl(clients, name, ttl_attribute)


async def _ensure_indexes(clients: AwsClients, spec: dict[str, Any], report: Callable[[str], None]) -> None:
    """Add the indexes an older version's table lacks, one per UpdateTable (DynamoDB's rule).

    So `triggers init` upgrades a 0.2 events table in place; the new index is backfilled by
    DynamoDB (items with the index's keys: for the positions, see migrate-inbox-positions).
    """
    name = spec["TableName"]
    for index in spec.get("GlobalSecondaryIndexes", []):
        table = (await clients.dynamodb.admin.describe_table(TableName=name))["Table"]
        existing = {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])}
        if index["IndexName"] in existing:
            continue
        wanted = {k["AttributeName"] for k in index["KeySchema"]}
        await clients.dynamodb.admin.update_table(
            TableName=name,
            AttributeDefinitions=[a for a in spec["AttributeDefinitions"] if a["AttributeName"] in wanted],
            GlobalSecondaryIndexUpdates=[{"Create": index}],
        )
        report(f"index added: {name} {index['IndexName']} (backfilling; this can take hours on a large table)")
        await _wait_active(clients, name, report)


async def _wait_active(clients: AwsClients, name: str, report: Callable[[str], None] = lambda _: None) -> None:
    """Wait for the table and its indexes; an index still being created gets a much longer bound."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    reported = started
    poll = _POLL_S
    while True:
        table = (await clients.dynamodb.admin.describe_table(TableName=name))["Table"]
        building = [i for i in table.get("GlobalSecondaryIndexes", []) if i.get("IndexStatus", "ACTIVE") != "ACTIVE"]
        if table.get("TableStatus") == "ACTIVE" and not building:
            return
        now = loop.time()
        bound = INDEX_ACTIVE_TIMEOUT_S if building else TABLE_ACTIVE_TIMEOUT_S
        if now - started > bound:
            raise TimeoutError(
                f"table {name} not ACTIVE after {bound:.0f} s"
                + (" (an index is still backfilling: run `triggers init` again later, it resumes)" if building else "")
            )
        if building and now - reported >= INDEX_PROGRESS_EVERY_S:
            reported = now
            report(f"waiting for {name}: " + ", ".join(_index_progress(i) for i in building))
        await asyncio.sleep(poll)
        if building:  # hours, maybe: no need to ask five times a second
            poll = min(_INDEX_POLL_MAX_S, poll * 2)


def _index_progress(index: Any) -> str:
    status = f"{index['IndexName']} {index.get('IndexStatus', '?')}"
    return status + (" (backfilling)" if index.get("Backfilling") else "")


async def _ensure_ttl(clients: AwsClients, name: str, attribute: str) -> None:
    described = await clients.dynamodb.admin.describe_time_to_live(TableName=name)
    status = described.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
    if status in ("ENABLED", "ENABLING"):
        return
    await clients.dynamodb.admin.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute}
    )
