"""Consumers benchmark (issue 18): what named consumers cost the writer, on the embedded
default's DynamoDB (DynamoDB Local), the writer pinned to its own core as in bench/writer.py.

For 0, 1, 3 and 10 named consumers of every type on each account (created through
``ConsumerRegistry`` before the queue is filled, starting then), the writer drains the same
queue of 1 KB events, 20 a message: its CPU per stored event until every consumer's
partition holds every event, and its DynamoDB requests per event (its own count, logged when
it stops). 0 named consumers is the default consumer alone: today's inbox, through the code
that copies (a look-up of the account's kept view, one Query of the consumers table per
account every ``consumer_view_s``).

DynamoDB Local does not meter capacity, so write units are computed: the run's batches
(their sizes, from the writer's log) are written again by the writer's own store
(``EventWriter`` with its consumer views) in this process, through a client that records
every transaction it sends; each item's size follows DynamoDB's sizing rules, each index
entry comes from the table's indexes (``table_specs``) and the attributes the item holds.
See ``write_units`` for the rules.

Run: python -m bench.consumers [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import backends
from bench.common import LOAD_CPU, write_results
from bench.writer import ACCOUNTS, add_consumers, env_for, init_resources, median_run, queued_event, writer_cost
from shared.aws.clients import open_clients
from shared.aws.dynamodb import LeanDynamoDB
from shared.contract.envelope import QueuedEvent
from shared.keys.admin import new_account_id
from shared.ops.resources import table_specs
from shared.settings import Settings, settings_from_env
from writer_worker.consumer_view import ConsumerViews
from writer_worker.store import EventWriter

if TYPE_CHECKING:  # types-aiobotocore is a development dependency: types only
    from types_aiobotocore_dynamodb.type_defs import TransactWriteItemsInputTypeDef, TransactWriteItemsOutputTypeDef
    from typing_extensions import Unpack

CONSUMERS = (0, 1, 3, 10)  # named consumers per account, besides the default
PER_MESSAGE = 20  # events a message, as the edge packs them (the writer's target figure)
REPLAY_EVENTS = 1000  # events written again to count write units (enough batches of the run)
WARM_UP_EVENTS = 1000  # the uncounted first run
KB = 1024
# Base-table writes inside a transaction cost twice (prepare and commit). Index entries are
# written by DynamoDB after the commit, as for any write: one unit per KB.
TRANSACTION_FACTOR = 2
BASELINE = Path(__file__).resolve().parent / "results" / "before-consumers.json"


def measure(quick: bool, logs: Path) -> dict[str, Any]:
    """Each number of consumers on one DynamoDB Local, its accounting beside it.

    The runs of the numbers take turns (0, 1, 3, 10, 0, 1, ...), so a slow phase of this
    shared machine falls on all of them alike, after one run that is not counted: a cold JVM
    commits slowly enough that the writer moves late commits (extra writes, extra CPU)."""
    events, runs = (1000, 1) if quick else (3000, 3)
    measured: dict[int, list[dict[str, Any]]] = {consumers: [] for consumers in CONSUMERS}
    with backends.running(backends.EMBEDDED[0], LOAD_CPU) as endpoints:
        writer_cost(endpoints, logs, WARM_UP_EVENTS, PER_MESSAGE, 0)
        for _ in range(runs):
            for consumers in CONSUMERS:
                measured[consumers].append(writer_cost(endpoints, logs, events, PER_MESSAGE, consumers))
        settings = settings_from_env(env_for(endpoints))
        by_count: dict[str, Any] = {}
        for consumers, consumer_runs in measured.items():
            median = median_run(consumer_runs)
            accounting = asyncio.run(write_units(settings, consumers, median["batches"]))
            by_count[str(consumers)] = {**median, "accounting": accounting}
        backend = endpoints.backend
    return {"backend": backend, "by_consumers": by_count, "before": json.loads(BASELINE.read_text())}


class _Recording(LeanDynamoDB):
    """The writer's client, keeping every transaction it sends (each attempt: each is billed)."""

    def __init__(self, client: LeanDynamoDB) -> None:
        super().__init__(client._transport, client.admin)  # the same connection as the client
        self.transactions: list[list[dict[str, Any]]] = []

    async def transact_write_items(
        self, **params: Unpack[TransactWriteItemsInputTypeDef]
    ) -> TransactWriteItemsOutputTypeDef:
        self.transactions.append([dict(item) for item in params["TransactItems"]])
        return await super().transact_write_items(**params)


async def write_units(settings: Settings, consumers: int, batches: list[int]) -> dict[str, Any]:
    """The run's first batches (up to REPLAY_EVENTS events), written again as the writer wrote
    them, with as many consumers: items and write units per event, and per event per consumer."""
    sizes = _first(batches, REPLAY_EVENTS)
    await init_resources(settings)
    accounts = [new_account_id() for _ in range(ACCOUNTS)]
    partitions = set(await add_consumers(settings, accounts, consumers))
    async with open_clients(settings) as clients:
        recording = _Recording(clients.dynamodb)
        writer = EventWriter(recording, settings, views=ConsumerViews(clients.dynamodb, settings))
        n = 0
        for size in sizes:
            await writer.write(_events(accounts, n, size))
            n += size
    return _account(settings, recording.transactions, partitions, n, consumers)


def _first(batches: list[int], events: int) -> list[int]:
    taken, total = [], 0
    for size in batches:
        if total >= events:
            break
        taken.append(size)
        total += size
    return taken or [events]


def _events(accounts: list[str], first: int, count: int) -> list[QueuedEvent]:
    """Events as bench/writer.py queues them: event n of account n mod 10, type n mod 5."""
    return [queued_event(accounts[n % len(accounts)], f"type.{n % 5}", n) for n in range(first, first + count)]


def _account(
    settings: Settings, transactions: list[list[dict[str, Any]]], partitions: set[str], events: int, consumers: int
) -> dict[str, Any]:
    indexes = _indexes(settings)
    units: Counter[str] = Counter()
    for transaction in transactions:
        for item in transaction:
            side = "copy" if _partition(item) in partitions else "event"
            operation, request = next(iter(item.items()))
            base, entries, index_units, size = _units(operation, request, indexes)
            units[f"{side}_items"] += 1
            units[f"{side}_{operation.lower()}s"] += 1
            units[f"{side}_base_units"] += base
            units[f"{side}_index_entries"] += entries
            units[f"{side}_index_units"] += index_units
            if operation == "Put":
                units[f"{side}_put_bytes"] += size
    copies = events * consumers
    result: dict[str, Any] = {
        "events": events,
        "transactions": len(transactions),
        "transactions_per_event": round(len(transactions) / events, 4),
        "event": _per(units, "event", events),
    }
    if copies:
        result["copy"] = _per(units, "copy", copies)
    return result


def _per(units: Counter[str], side: str, count: int) -> dict[str, float]:
    """Per event (``count`` events) or per event per consumer (``count`` copies)."""
    puts = units[f"{side}_puts"]
    return {
        "items": round(units[f"{side}_items"] / count, 3),
        "puts": round(puts / count, 3),
        "counter_updates": round(units[f"{side}_updates"] / count, 3),
        "put_bytes": round(units[f"{side}_put_bytes"] / puts) if puts else 0,
        "index_entries": round(units[f"{side}_index_entries"] / count, 3),
        "base_write_units": round(units[f"{side}_base_units"] / count, 3),
        "index_write_units": round(units[f"{side}_index_units"] / count, 3),
        "write_units": round((units[f"{side}_base_units"] + units[f"{side}_index_units"]) / count, 3),
    }


def _partition(item: dict[str, Any]) -> str:
    """The partition an item of a transaction belongs to: an event's account (or consumer),
    or the counter's (``account[|t:type]``)."""
    request = next(iter(item.values()))
    key = request.get("Item") or request.get("Key") or {}
    if "account_id" in key:
        return str(key["account_id"]["S"])
    if "counter_id" in key:
        return str(key["counter_id"]["S"]).split("|t:", 1)[0]
    return ""


def _indexes(settings: Settings) -> dict[str, list[tuple[str, ...]]]:
    """Each table's global secondary indexes, by their key attributes (all project ALL)."""
    found: dict[str, list[tuple[str, ...]]] = {}
    for spec in table_specs(settings):
        keys = [tuple(k["AttributeName"] for k in i["KeySchema"]) for i in spec.get("GlobalSecondaryIndexes", [])]
        found[spec["TableName"]] = keys
    return found


def _units(
    operation: str, request: dict[str, Any], indexes: dict[str, list[tuple[str, ...]]]
) -> tuple[int, int, int, int]:
    """(base-table write units, index entries written, their write units, item bytes) of one
    transaction item, by DynamoDB's rules: a write costs one unit per KB of the item, rounded
    up, twice in a transaction; a new item holding an index's key attributes adds an entry
    to that index, one unit per KB of what it projects (every attribute, here).

    A Put's item is in the request. An Update here is a counter's ``ADD`` (a few dozen bytes
    before and after): it is sized from its key and the added number. A ConditionCheck or a
    Delete is counted as one KB, the most the small items they name could be.
    """
    if operation == "Put":
        item = request["Item"]
        size = item_bytes(item)
        held = [keys for keys in indexes.get(request["TableName"], []) if all(k in item for k in keys)]
        return TRANSACTION_FACTOR * _kb(size), len(held), len(held) * _kb(size), size
    if operation == "Update":
        values = request.get("ExpressionAttributeValues", {})
        size = item_bytes({**request["Key"], **{name.lstrip(":"): v for name, v in values.items()}})
        return TRANSACTION_FACTOR * _kb(size), 0, 0, size
    return TRANSACTION_FACTOR, 0, 0, KB


def _kb(size: int) -> int:
    return max(1, math.ceil(size / KB))


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB bills it: each attribute's name (UTF-8) plus its value."""
    return sum(len(name.encode()) + _value_bytes(value) for name, value in item.items())


def _value_bytes(value: dict[str, Any]) -> int:
    """Strings in UTF-8 bytes, binary raw, numbers ~1 byte per 2 significant digits + 1,
    booleans and null 1 byte, lists and maps 3 bytes + 1 per element (+ their contents)."""
    kind, inner = next(iter(value.items()))
    if kind in ("L", "M"):
        elements = inner if kind == "L" else inner.values()
        names = 0 if kind == "L" else sum(len(name.encode()) for name in inner)
        return 3 + names + sum(1 + _value_bytes(v) for v in elements)
    sizer = _SCALARS.get(kind)
    if sizer is None:
        raise ValueError(f"unsized attribute type {kind}")
    return sizer(inner)


def _number_bytes(text: str) -> int:
    digits = text.lstrip("+-").replace(".", "").strip("0") or "0"
    return 1 + math.ceil(len(digits) / 2)


def _binary_bytes(data: str | bytes) -> int:
    return len(data) if isinstance(data, bytes) else len(base64.b64decode(data))


_SCALARS: dict[str, Callable[[Any], int]] = {
    "S": lambda text: len(str(text).encode()),
    "N": lambda number: _number_bytes(str(number)),
    "B": _binary_bytes,
    "BOOL": lambda _: 1,
    "NULL": lambda _: 1,
}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Consumers benchmark",
        "",
        f"{results['when']}, Python {results['python']}, {results['cpus']} cores; the writer against "
        f"{results['backend']} (bench/backends.py), {PER_MESSAGE} events a message.",
        "",
        "| named consumers per account | writer CPU µs per stored event | DynamoDB requests per event "
        "| write units per event per consumer |",
        "|---|---|---|---|",
    ]
    for count, run in results["by_consumers"].items():
        copy = run["accounting"].get("copy", {})
        lines.append(
            f"| {count} | {run['cpu_us_per_event']} | {run['dynamodb_requests_per_event']} "
            f"| {copy.get('write_units', '-')} |"
        )
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, one run of each")
    args = parser.parse_args()
    logs = Path(__file__).resolve().parent / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = measure(args.quick, logs)
    path = write_results("consumers", results, "")
    path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
