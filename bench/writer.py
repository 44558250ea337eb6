"""Writer benchmark: CPU per stored event, AWS requests per event, end-to-end lag and
throughput on the embedded default (SQS on moto, DynamoDB on DynamoDB Local) beside its
fallback without Java (moto for both), in the same run (bench/backends.py).

Run: python -m bench.writer [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench import backends
from bench.common import (
    LOAD_CPU,
    SERVER_CPU,
    KeptAlive,
    cpu_seconds,
    create_key_for,
    pinned,
    rss_mib,
    summarize,
    write_results,
)
from inbox_api.store import InboxStore
from shared.aws.clients import open_clients
from shared.contract.envelope import QueuedEvent, encode_message
from shared.contract.ids import new_event_id
from shared.keys.admin import new_account_id
from shared.keys.store import DynamoKeyStore
from shared.local import processes
from shared.ops.cli import EMBEDDED_LINGER_MS
from shared.ops.resources import ensure_resources
from shared.settings import Settings, settings_from_env
from shared.storage.registry import ConsumerRegistry, wall_clock_us
from writer_worker.store import EventWriter, Outcome

NOTE = "x" * 900  # ~1 KB events
PACED_RATE = 500  # events/s of the lag measurement on the embedded default (issue 17's target)
DRAIN_LIMIT_S = 120  # a flood not stored by then is a failure, not a slow figure
ACCOUNTS = 10
PACED_CONNECTIONS = 32  # senders of the paced run: each sends every 64 ms at 500 events/s
WARM_UP_S = 5  # paced load before the lag is measured
GROUP_EVENTS = 45  # events of one call of the ceiling probe: about one full writer transaction


def env_for(endpoints: backends.Endpoints, **extra: str) -> dict[str, str]:
    return {
        **endpoints.env,
        "TRIGGERS_RESOURCE_PREFIX": f"b{uuid.uuid4().hex[:8]}",
        "TRIGGERS_LOG_LEVEL": "INFO",
        "TRIGGERS_BCRYPT_ROUNDS": "4",
        "TRIGGERS_WRITER_WAIT_TIME_S": "1",
        **extra,
    }


async def init_resources(settings: Settings) -> None:
    async with open_clients(settings) as clients:
        await ensure_resources(settings, clients)


def queued_event(account: str, event_type: str, n: int) -> QueuedEvent:
    """A 1 KB event as the edge queues it, received now."""
    now_us = time.time_ns() // 1000
    return QueuedEvent(
        event_id=new_event_id(now_us // 1000),
        account_id=account,
        event_type=event_type,
        payload=msgspec.Raw(msgspec.json.encode({"n": n, "id": uuid.uuid4().hex, "note": NOTE})),
        received_at_us=now_us,
        request_id=uuid.uuid4().hex,
    )


async def _fill(settings: Settings, accounts: list[str], events: int, per_message: int) -> None:
    """Put ``events`` on the queue, ``per_message`` to a message, as the edge packs them."""
    async with open_clients(settings) as clients:
        url = (await clients.sqs.admin.get_queue_url(QueueName=settings.events_queue))["QueueUrl"]
        bodies = []
        for start in range(0, events, per_message):
            numbers = range(start, min(events, start + per_message))
            batch = [queued_event(accounts[n % len(accounts)], f"type.{n % 5}", n) for n in numbers]
            bodies.append(encode_message(batch))
        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])]
            await clients.sqs.send_message_batch(QueueUrl=url, Entries=entries)  # type: ignore[arg-type]


async def _stored(settings: Settings, partitions: list[str]) -> int:
    """Undelivered events in these partitions (accounts' own, or named consumers'): exact counts."""
    async with open_clients(settings) as clients:
        registry = ConsumerRegistry(clients.dynamodb, settings)
        return sum(await asyncio.gather(*(registry.undelivered(p) for p in partitions)))


async def add_consumers(settings: Settings, accounts: list[str], per_account: int) -> list[str]:
    """``per_account`` named consumers of every type, starting now, on each account, created
    as the inbox creates them (ConsumerRegistry); their partitions."""
    async with open_clients(settings) as clients:
        registry = ConsumerRegistry(clients.dynamodb, settings)
        now_us = wall_clock_us()
        created = [await registry.create(a, f"bench-{n}", None, now_us) for a in accounts for n in range(per_account)]
        return [c.partition for c in created]


def _wait_stored(settings: Settings, partitions: list[str], events: int, started: float) -> None:
    """Until these partitions hold ``events`` between them (exact counts: no event is counted twice)."""
    while partitions and asyncio.run(_stored(settings, partitions)) < events:
        time.sleep(0.2)
        if time.monotonic() - started > 600:
            raise TimeoutError("the writer did not drain the queue")


def _last_json(log: Path, event: str) -> dict[str, Any]:
    for line in reversed(log.read_text().splitlines()):
        if f'"event":"{event}"' in line:
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    return {}


def _batch_sizes(log: Path) -> list[int]:
    """Events of each batch the writer handled, in order (its log's ``batch`` lines)."""
    return [int(json.loads(line)["events"]) for line in log.read_text().splitlines() if '"event":"batch"' in line]


def writer_cost(
    endpoints: backends.Endpoints, logs: Path, events: int, per_message: int, consumers: int | None = None
) -> dict[str, Any]:
    """One writer pinned to its own core drains what is put on its queue.

    Its CPU is counted from when it is idle and ready (interpreter start and imports are not
    part of the cost of an event) until the last event is stored: with ``consumers`` named
    consumers on each account (created before the writer starts), until every consumer's
    partition holds every event of its account too.
    """
    env = env_for(endpoints)
    settings = settings_from_env(env)
    accounts = [new_account_id() for _ in range(ACCOUNTS)]
    asyncio.run(init_resources(settings))
    partitions = asyncio.run(add_consumers(settings, accounts, consumers)) if consumers else []
    log = logs / (f"writer-{per_message}.log" if consumers is None else f"writer-{per_message}-c{consumers}.log")
    command = pinned(SERVER_CPU, [sys.executable, "-m", "shared.ops.cli", "run", "writer"])
    with log.open("wb") as out:
        writer = processes.spawn(command, env, output=out)
    while not _last_json(log, "writer_started"):
        time.sleep(0.1)
    time.sleep(1)
    cpu_before = cpu_seconds(writer.pid)
    started = time.monotonic()  # the writer drains while the queue fills: time both
    asyncio.run(_fill(settings, accounts, events, per_message))
    _wait_stored(settings, accounts, events, started)
    # The accounts' own partitions first: 10 counts a poll, not 10 * (1 + consumers).
    _wait_stored(settings, partitions, events * (consumers or 0), started)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(writer.pid) - cpu_before
    writer.send_signal(signal.SIGTERM)
    writer.wait(30)
    summary = _last_json(log, "writer_stopped")
    requests = summary.get("aws_requests", {})
    sqs = sum(v for k, v in requests.items() if k.startswith("sqs."))
    dynamodb = sum(v for k, v in requests.items() if k.startswith("dynamodb."))
    consumer_figures = {} if consumers is None else {"consumers_per_account": consumers, "batches": _batch_sizes(log)}
    return {
        **consumer_figures,
        "events": events,
        "events_per_message": per_message,
        "cpu_us_per_event": round(cpu / events * 1e6, 1),
        "events_per_s": round(events / elapsed, 1),
        "sqs_requests_per_event": round(sqs / events, 4),
        "dynamodb_requests_per_event": round(dynamodb / events, 4),
        "aws_requests": requests,
    }


async def _batch_write_rate(settings: Settings, seconds: float) -> float:
    """The DynamoDB endpoint's own BatchWriteItem rate (25 items a call, 4 calls in flight)."""
    async with open_clients(settings) as clients:
        table = settings.dedup_table  # any table: plain items under its one key attribute
        written = 0
        deadline = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal written
            while time.monotonic() < deadline:
                items = [
                    {"PutRequest": {"Item": {"dedup_id": {"S": uuid.uuid4().hex}, "note": {"S": NOTE}}}}
                    for _ in range(25)
                ]
                await clients.dynamodb.admin.batch_write_item(RequestItems={table: items})  # type: ignore[dict-item]
                written += 25

        await asyncio.gather(*(loop() for _ in range(4)))
        return written / seconds


async def _transact_write_rate(settings: Settings, seconds: float) -> float:
    """Events/s the writer's own store (``EventWriter.write``: its transactions, conditions and
    counters) gets stored by the DynamoDB endpoint alone, GROUP_EVENTS new events of one
    account a call, 4 calls in flight: the ceiling of any writer on this endpoint."""
    async with open_clients(settings) as clients:
        store = EventWriter(clients.dynamodb, settings)
        stored = 0
        deadline = time.monotonic() + seconds

        async def loop() -> None:
            nonlocal stored
            account = new_account_id()
            while time.monotonic() < deadline:
                results = await store.write([queued_event(account, "type.0", n) for n in range(GROUP_EVENTS)])
                stored += sum(r.outcome is Outcome.STORED for r in results.values())

        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(4)))
        return stored / (time.monotonic() - started)


class Paced(msgspec.Struct):
    """What a paced run offered and what the edge accepted, in how long."""

    sent: int
    accepted: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


async def _paced(url: str, headers: dict[str, str], rate: float, seconds: float) -> Paced:
    """Single events at a steady rate, each unique (a per-run id: no copy of an earlier run's
    event is deduplicated), from PACED_CONNECTIONS kept-alive connections; event n is due at
    n / rate and goes on connection n mod PACED_CONNECTIONS."""
    run = uuid.uuid4().hex
    count = int(rate * seconds)
    accepted = 0
    start = time.monotonic()

    async def connection(first: int) -> None:
        nonlocal accepted
        client = KeptAlive(url, headers)
        try:
            for n in range(first, count, PACED_CONNECTIONS):
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
                body = {"event_type": "lag", "payload": {"run": run, "n": n, "note": NOTE}}
                status, _ = await client.request("POST", msgspec.json.encode(body))
                accepted += status == 202
        finally:
            client.close()

    await asyncio.gather(*(connection(c) for c in range(min(PACED_CONNECTIONS, count))))
    return Paced(count, accepted, round(time.monotonic() - start, 2))


async def _flood(url: str, headers: dict[str, str], seconds: float) -> int:
    """Batches of 100 from 4 concurrent senders; the number of events accepted."""
    accepted = 0
    deadline = time.monotonic() + seconds
    sent = 0
    flood = uuid.uuid4().hex  # every event unique across floods too, or copies would be deduplicated
    async with httpx.AsyncClient(timeout=30) as client:

        async def sender() -> None:
            nonlocal accepted, sent
            while time.monotonic() < deadline:
                events = [
                    {"event_type": "flood", "payload": {"flood": flood, "n": sent + n, "note": NOTE}}
                    for n in range(100)
                ]
                sent += 100  # every event unique: a flood of copies would measure deduplication
                response = await client.post(url, json={"events": events}, headers=headers)
                if response.status_code == 202:
                    accepted += 100

        await asyncio.gather(*(sender() for _ in range(4)))
    return accepted


def _batches(log: Path, since: float) -> list[tuple[float, float, int]]:
    """(time, worst lag ms, events stored) of every batch the writer logged after ``since``."""
    found = []
    for line in log.read_text().splitlines():
        if '"event":"batch"' in line:
            batch = json.loads(line)
            at = datetime.fromisoformat(batch["timestamp"]).timestamp()
            if at >= since:
                found.append((at, batch["max_lag_ms"], batch["stored"]))
    return found


def _lag_percentiles(batches: list[tuple[float, float, int]]) -> tuple[float, float]:
    """(p50, p99) over stored events, each with the worst lag of its batch (an upper bound)."""
    lags = sorted(lag for _, lag, stored in batches for _ in range(stored))
    if not lags:
        return 0.0, 0.0
    return statistics.median(lags), lags[min(len(lags) - 1, int(len(lags) * 0.99))]


def _lag(log: Path, windows: int, since: float) -> dict[str, Any]:
    """Lag percentiles in each of ``windows`` equal spans of the run (a median and spread),
    and the lag over time for the plot."""
    batches = _batches(log, since)
    if not batches:
        return {"p50_ms": summarize([0.0]), "p99_ms": summarize([0.0]), "events": 0, "series": []}
    start, span = batches[0][0], (batches[-1][0] - batches[0][0]) / windows or 1.0
    parts: list[list[tuple[float, float, int]]] = [[] for _ in range(windows)]
    for batch in batches:
        parts[min(windows - 1, int((batch[0] - start) / span))].append(batch)
    percentiles = [_lag_percentiles(part) for part in parts if part]
    step = max(1, len(batches) // 300)  # at most ~300 points for the plot
    return {
        "p50_ms": summarize([p50 for p50, _ in percentiles]),
        "p99_ms": summarize([p99 for _, p99 in percentiles]),
        "events": sum(stored for _, _, stored in batches),
        "series": [[round(t - start, 2), lag] for t, lag, _ in batches[::step]],
    }


def _sustained(settings: Settings, url: str, headers: dict[str, str], seconds: float) -> float:
    """A flood of batches, then the time until all of it is in the inbox: events/s end to end."""
    before = _count_all(settings)
    started = time.monotonic()
    flooded = asyncio.run(_flood(url, headers, seconds))
    while _count_all(settings) - before < flooded:
        time.sleep(0.5)
        if time.monotonic() - started > DRAIN_LIMIT_S:
            raise TimeoutError(f"{flooded} events accepted, {_count_all(settings) - before} stored")
    return (_count_all(settings) - before) / (time.monotonic() - started)


def embedded_default(endpoints: backends.Endpoints, logs: Path, seconds: float, runs: int) -> dict[str, Any]:
    """Ingest + writer + the backend's endpoints on this machine, unpinned, as `triggers up`
    runs them: lag at a steady PACED_RATE (``runs`` windows of one paced run), then ``runs``
    floods; each process's memory after them."""
    env = env_for(endpoints, TRIGGERS_ENQUEUE_LINGER_MS=str(EMBEDDED_LINGER_MS))
    settings = settings_from_env(env)
    asyncio.run(init_resources(settings))
    key = create_key_for(settings)
    port = processes.free_port()
    ingest = processes.spawn(
        [sys.executable, "-m", "shared.ops.cli", "run", "ingest", "--port", str(port)], env, quiet=True
    )
    log = logs / f"embedded-writer-{endpoints.backend}.log"
    with log.open("wb") as out:
        writer = processes.spawn([sys.executable, "-m", "shared.ops.cli", "run", "writer"], env, output=out)
    try:
        processes.wait_http(f"http://127.0.0.1:{port}/status", 30, ingest)
        headers = {"Authorization": f"Bearer {key}"}
        url = f"http://127.0.0.1:{port}/events"
        # Warm first: a cold JVM (DynamoDB Local) and cold connections are start-up, not steady state.
        asyncio.run(_paced(url, headers, PACED_RATE, WARM_UP_S))
        time.sleep(3)
        since = time.time()
        paced = asyncio.run(_paced(url, headers, PACED_RATE, seconds))
        time.sleep(3)  # let the writer finish the tail
        lag = _lag(log, runs, since)
        sustained = [_sustained(settings, f"{url}/batch", headers, seconds / runs) for _ in range(runs)]
        memory = {"ingest": rss_mib(ingest.pid), "writer": rss_mib(writer.pid), **endpoints.rss_mib()}
        transact_rate = asyncio.run(_transact_write_rate(settings, 5))
    finally:
        processes.stop([ingest, writer])
    return {
        "backend": endpoints.backend,
        "paced_rate_events_per_s": PACED_RATE,
        "paced_accepted": paced.accepted,
        "paced_sent": paced.sent,
        "paced_achieved_events_per_s": round(paced.rate, 1),
        "lag_p50_ms": lag["p50_ms"],
        "lag_p99_ms": lag["p99_ms"],
        "lag_events": lag["events"],
        "lag_series": lag["series"],
        "rss_mib": memory,
        "sustained_events_per_s": summarize(sustained),
        "transact_events_per_s": round(transact_rate, 1),
    }


def _count_all(settings: Settings) -> int:
    """Undelivered events of every account of this run (the flood's key is the only one)."""

    async def run() -> int:
        async with open_clients(settings) as clients:
            keys = DynamoKeyStore(clients.dynamodb, settings.keys_table)
            store = InboxStore(clients.dynamodb, settings)
            accounts = {r.account_id async for r in keys.scan()}
            return sum([await store.count(a, None) for a in accounts])

    return asyncio.run(run())


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by CPU per event, with the spread of all runs."""
    median = sorted(runs, key=lambda r: r["cpu_us_per_event"])[len(runs) // 2]
    return {**median, "cpu_us_per_event_runs": summarize([r["cpu_us_per_event"] for r in runs])}


def measure_cost(quick: bool, logs: Path) -> dict[str, Any]:
    """The writer pinned to its own core, the embedded default's endpoints on the other."""
    events = 1000 if quick else 5000
    with backends.running(backends.EMBEDDED[0], LOAD_CPU) as endpoints:
        results: dict[str, Any] = {
            "backend": endpoints.backend,
            "writer_packed": median_run(
                [writer_cost(endpoints, logs, events, per_message=20) for _ in range(1 if quick else 3)]
            ),
            "writer_single": median_run(
                [writer_cost(endpoints, logs, events // 2, per_message=1) for _ in range(1 if quick else 3)]
            ),
        }
        settings = settings_from_env(env_for(endpoints))
        asyncio.run(init_resources(settings))
        results["batch_write_items_per_s"] = round(asyncio.run(_batch_write_rate(settings, 2 if quick else 5)), 1)
    return results


def measure_embedded(backend: backends.Backend, quick: bool, logs: Path) -> dict[str, Any]:
    """The pipeline on ``backend``, unpinned, as `triggers up` starts it."""
    with backends.running(backend) as endpoints:
        return embedded_default(endpoints, logs, 4 if quick else 30, 1 if quick else 3)


def measure(quick: bool, logs: Path) -> dict[str, Any]:
    """Everything this module measures (bench/run.py runs the parts one by one instead)."""
    embedded = {backend: measure_embedded(backend, quick, logs) for backend in backends.EMBEDDED}
    return {**measure_cost(quick, logs), "embedded": embedded}


def markdown(results: dict[str, Any]) -> str:
    packed, single = results["writer_packed"], results["writer_single"]
    lines = [
        "# Writer benchmark",
        "",
        f"{results['when']}, Python {results['python']}, {results['cpus']} cores; the writer against "
        f"{results['backend']} (bench/backends.py).",
        "",
        "| figure | value |",
        "|---|---|",
        f"| writer CPU per stored event, 20 / 1 events a message | {packed['cpu_us_per_event']} / "
        f"{single['cpu_us_per_event']} µs |",
        f"| SQS requests per event (20 / 1 events a message) | {packed['sqs_requests_per_event']} / "
        f"{single['sqs_requests_per_event']} |",
        f"| DynamoDB requests per event (20 / 1 events a message) | {packed['dynamodb_requests_per_event']} / "
        f"{single['dynamodb_requests_per_event']} |",
        f"| drain rate (20 / 1 events a message) | {packed['events_per_s']} / {single['events_per_s']} events/s |",
        f"| the DynamoDB endpoint's own BatchWriteItem rate | {results['batch_write_items_per_s']} items/s |",
    ]
    for backend, embedded in results["embedded"].items():
        lines += [
            f"| embedded ({backend}): lag p50 / p99 at {embedded['paced_rate_events_per_s']} events/s "
            f"| {embedded['lag_p50_ms']['median']} / {embedded['lag_p99_ms']['median']} ms |",
            f"| embedded ({backend}): sustained end to end | {embedded['sustained_events_per_s']['median']} events/s |",
        ]
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events, shorter runs")
    args = parser.parse_args()
    logs = Path(__file__).resolve().parent / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = measure(args.quick, logs)
    path = write_results("writer", results, "")
    path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
