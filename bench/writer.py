"""Writer benchmark: CPU per stored event, AWS requests per event, end-to-end lag and
throughput on the embedded default, against moto's own write rate in the same run.

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

from bench.common import LOAD_CPU, SERVER_CPU, cpu_seconds, create_key_for, pinned, rss_mib, summarize, write_results
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

NOTE = "x" * 900  # ~1 KB events
PACED_RATE = 200  # events/s of the lag measurement on the embedded default
DRAIN_LIMIT_S = 120  # a flood not stored by then is a failure, not a slow figure
ACCOUNTS = 10


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "TRIGGERS_AWS_ENDPOINT_URL": endpoint,
        "TRIGGERS_RESOURCE_PREFIX": f"b{uuid.uuid4().hex[:8]}",
        "TRIGGERS_LOG_LEVEL": "INFO",
        "TRIGGERS_BCRYPT_ROUNDS": "4",
        "TRIGGERS_WRITER_WAIT_TIME_S": "1",
        **extra,
    }


async def _init(settings: Settings) -> None:
    async with open_clients(settings) as clients:
        await ensure_resources(settings, clients)


async def _fill(settings: Settings, accounts: list[str], events: int, per_message: int) -> None:
    """Put ``events`` on the queue, ``per_message`` to a message, as the edge packs them."""
    async with open_clients(settings) as clients:
        url = (await clients.sqs.get_queue_url(QueueName=settings.events_queue))["QueueUrl"]
        bodies = []
        for start in range(0, events, per_message):
            batch = []
            for n in range(start, min(events, start + per_message)):
                now_us = time.time_ns() // 1000
                batch.append(
                    QueuedEvent(
                        event_id=new_event_id(now_us // 1000),
                        account_id=accounts[n % len(accounts)],
                        event_type=f"type.{n % 5}",
                        payload=msgspec.Raw(msgspec.json.encode({"n": n, "note": NOTE})),
                        received_at_us=now_us,
                        request_id=uuid.uuid4().hex,
                    )
                )
            bodies.append(encode_message(batch))
        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])]
            await clients.sqs.send_message_batch(QueueUrl=url, Entries=entries)  # type: ignore[arg-type]


async def _stored(settings: Settings, accounts: list[str]) -> int:
    async with open_clients(settings) as clients:
        store = InboxStore(clients.dynamodb, settings)
        return sum([await store.count(a, None) for a in accounts])


def _last_json(log: Path, event: str) -> dict[str, Any]:
    for line in reversed(log.read_text().splitlines()):
        if f'"event":"{event}"' in line:
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    return {}


def writer_cost(endpoint: str, logs: Path, events: int, per_message: int) -> dict[str, Any]:
    """One writer pinned to its own core drains what is put on its queue.

    Its CPU is counted from when it is idle and ready (interpreter start and imports are not
    part of the cost of an event) until the last event is stored.
    """
    env = _env(endpoint)
    settings = settings_from_env(env)
    accounts = [new_account_id() for _ in range(ACCOUNTS)]
    asyncio.run(_init(settings))
    log = logs / f"writer-{per_message}.log"
    command = pinned(SERVER_CPU, [sys.executable, "-m", "shared.ops.cli", "run", "writer"])
    with log.open("wb") as out:
        writer = processes.spawn(command, env, output=out)
    while not _last_json(log, "writer_started"):
        time.sleep(0.1)
    time.sleep(1)
    cpu_before = cpu_seconds(writer.pid)
    started = time.monotonic()  # the writer drains while the queue fills: time both
    asyncio.run(_fill(settings, accounts, events, per_message))
    while asyncio.run(_stored(settings, accounts)) < events:
        time.sleep(0.2)
        if time.monotonic() - started > 600:
            raise TimeoutError("the writer did not drain the queue")
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(writer.pid) - cpu_before
    writer.send_signal(signal.SIGTERM)
    writer.wait(30)
    summary = _last_json(log, "writer_stopped")
    requests = summary.get("aws_requests", {})
    sqs = sum(v for k, v in requests.items() if k.startswith("sqs."))
    dynamodb = sum(v for k, v in requests.items() if k.startswith("dynamodb."))
    return {
        "events": events,
        "events_per_message": per_message,
        "cpu_us_per_event": round(cpu / events * 1e6, 1),
        "events_per_s": round(events / elapsed, 1),
        "sqs_requests_per_event": round(sqs / events, 4),
        "dynamodb_requests_per_event": round(dynamodb / events, 4),
        "aws_requests": requests,
    }


async def _moto_batch_write_rate(settings: Settings, seconds: float) -> float:
    """moto's own BatchWriteItem rate (25 items a call, 4 calls in flight): the ceiling."""
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
                await clients.dynamodb.batch_write_item(RequestItems={table: items})  # type: ignore[dict-item]
                written += 25

        await asyncio.gather(*(loop() for _ in range(4)))
        return written / seconds


async def _paced(url: str, headers: dict[str, str], rate: float, seconds: float) -> int:
    """Send single events at a steady rate; the number accepted."""
    accepted = 0
    interval = 1 / rate
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=64)) as client:

        async def one(n: int) -> None:
            nonlocal accepted
            body = {"event_type": "lag", "payload": {"n": n, "note": NOTE}}
            response = await client.post(url, json=body, headers=headers)
            accepted += response.status_code == 202

        tasks = []
        start = time.monotonic()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return accepted


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


def _batches(log: Path) -> list[tuple[float, float, int]]:
    """(time, worst lag ms, events stored) of every batch the writer logged."""
    found = []
    for line in log.read_text().splitlines():
        if '"event":"batch"' in line:
            batch = json.loads(line)
            found.append((datetime.fromisoformat(batch["timestamp"]).timestamp(), batch["max_lag_ms"], batch["stored"]))
    return found


def _lag_percentiles(batches: list[tuple[float, float, int]]) -> tuple[float, float]:
    """(p50, p99) over stored events, each with the worst lag of its batch (an upper bound)."""
    lags = sorted(lag for _, lag, stored in batches for _ in range(stored))
    if not lags:
        return 0.0, 0.0
    return statistics.median(lags), lags[min(len(lags) - 1, int(len(lags) * 0.99))]


def _lag(log: Path, windows: int) -> dict[str, Any]:
    """Lag percentiles in each of ``windows`` equal spans of the run (a median and spread),
    and the lag over time for the plot."""
    batches = _batches(log)
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


def embedded_default(endpoint: str, logs: Path, seconds: float, runs: int) -> dict[str, Any]:
    """Ingest + writer + moto on this machine, unpinned, as `triggers up` runs them: lag at a
    steady 200 events/s (``runs`` windows of one paced run), then ``runs`` floods."""
    env = _env(endpoint, TRIGGERS_ENQUEUE_LINGER_MS=str(EMBEDDED_LINGER_MS))
    settings = settings_from_env(env)
    asyncio.run(_init(settings))
    key = create_key_for(settings)
    port = processes.free_port()
    ingest = processes.spawn(
        [sys.executable, "-m", "shared.ops.cli", "run", "ingest", "--port", str(port)], env, quiet=True
    )
    log = logs / "embedded-writer.log"
    with log.open("wb") as out:
        writer = processes.spawn([sys.executable, "-m", "shared.ops.cli", "run", "writer"], env, output=out)
    try:
        processes.wait_http(f"http://127.0.0.1:{port}/status", 30, ingest)
        headers = {"Authorization": f"Bearer {key}"}
        url = f"http://127.0.0.1:{port}/events"
        accepted = asyncio.run(_paced(url, headers, PACED_RATE, seconds))
        time.sleep(3)  # let the writer finish the tail
        lag = _lag(log, runs)
        memory = {"ingest": rss_mib(ingest.pid), "writer": rss_mib(writer.pid)}
        sustained = [_sustained(settings, f"{url}/batch", headers, seconds / runs) for _ in range(runs)]
    finally:
        processes.stop([ingest, writer])
    return {
        "paced_rate_events_per_s": PACED_RATE,
        "paced_accepted": accepted,
        "lag_p50_ms": lag["p50_ms"],
        "lag_p99_ms": lag["p99_ms"],
        "lag_events": lag["events"],
        "lag_series": lag["series"],
        "rss_mib": memory,
        "sustained_events_per_s": summarize(sustained),
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


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by CPU per event, with the spread of all runs."""
    median = sorted(runs, key=lambda r: r["cpu_us_per_event"])[len(runs) // 2]
    return {**median, "cpu_us_per_event_runs": summarize([r["cpu_us_per_event"] for r in runs])}


def measure(quick: bool, logs: Path) -> dict[str, Any]:
    moto, endpoint = processes.start_moto()
    # moto on its own core, so the writer's core measures the writer alone.
    processes.stop([moto])
    port = processes.free_port()
    moto = processes.spawn(
        pinned(LOAD_CPU, [sys.executable, "-m", "shared.local.endpoint", "-H", "127.0.0.1", "-p", str(port)]),
        quiet=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    processes.wait_http(f"{endpoint}/moto-api/", 30, moto)
    events = 1000 if quick else 5000
    try:
        results: dict[str, Any] = {
            "writer_packed": _median_run(
                [writer_cost(endpoint, logs, events, per_message=20) for _ in range(1 if quick else 3)]
            ),
            "writer_single": _median_run(
                [writer_cost(endpoint, logs, events // 2, per_message=1) for _ in range(1 if quick else 3)]
            ),
        }
        settings = settings_from_env(_env(endpoint))
        asyncio.run(_init(settings))
        rate = asyncio.run(_moto_batch_write_rate(settings, 2 if quick else 5))
        results["moto_batch_write_items_per_s"] = round(rate, 1)
    finally:
        processes.stop([moto])
    # The embedded default: a fresh, unpinned moto, as `triggers up` starts it.
    moto, endpoint = processes.start_moto()
    try:
        results["embedded"] = embedded_default(endpoint, logs, 4 if quick else 30, 1 if quick else 3)
        results["embedded"]["rss_mib"]["moto"] = rss_mib(moto.pid)
    finally:
        processes.stop([moto])
    return results


def markdown(results: dict[str, Any]) -> str:
    packed, single, embedded = results["writer_packed"], results["writer_single"], results["embedded"]
    return "\n".join(
        [
            "# Writer benchmark",
            "",
            f"{results['when']}, Python {results['python']}, {results['cpus']} cores, against moto (shared/local_aws).",
            "",
            "| figure | value | target | holds |",
            "|---|---|---|---|",
            f"| writer CPU per stored event, 20 events/message | {packed['cpu_us_per_event']} µs | <= 100 µs | "
            f"{'yes' if packed['cpu_us_per_event'] <= 100 else '**no**'} |",
            f"| writer CPU per stored event, 1 event/message | {single['cpu_us_per_event']} µs | | |",
            f"| SQS requests per event (20 / 1 events a message) | {packed['sqs_requests_per_event']} / "
            f"{single['sqs_requests_per_event']} | | |",
            f"| DynamoDB requests per event (20 / 1 events a message) | {packed['dynamodb_requests_per_event']} / "
            f"{single['dynamodb_requests_per_event']} | | |",
            f"| drain rate against moto (20 / 1 events a message) | {packed['events_per_s']} / "
            f"{single['events_per_s']} events/s | | |",
            f"| moto's own BatchWriteItem rate | {results['moto_batch_write_items_per_s']} items/s | | |",
            f"| embedded default: lag p50 / p99 at 200 events/s | {embedded['lag_p50_ms']['median']} / "
            f"{embedded['lag_p99_ms']['median']} ms | p99 <= 1000 ms "
            f"| {'yes' if embedded['lag_p99_ms']['median'] <= 1000 else '**no**'} |",
            f"| embedded default: sustained end-to-end | {embedded['sustained_events_per_s']['median']} events/s | | |",
            "",
            "Lag is measured by the writer when it has stored an event: now minus the time the edge",
            "received it; each event counts with the worst lag of its batch (an upper bound).",
            "",
        ]
    )


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
