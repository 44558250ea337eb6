"""Inbox benchmark: a 50-event page of 1 KB events against an account with 10,000 undelivered.

The inbox server runs alone on core 0; wrk (C) and the DynamoDB endpoint share core 1.
Figures: inbox CPU per request, GET /inbox latency (p50, p95, p99), and the latency of the
raw DynamoDB Query for the same page against the same endpoint in the same run.

Run: python -m bench.inbox [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from typing import Any

import msgspec

from bench.common import LOAD_CPU, SERVER_CPU, cpu_seconds, pinned, run_wrk, write_results
from shared import processes
from shared.aws import open_clients
from shared.envelope import QueuedEvent
from shared.ids import new_event_id
from shared.key_admin import create_key, new_account_id
from shared.key_store import DynamoKeyStore
from shared.keys import Scope
from shared.resources import ensure_resources
from shared.settings import Settings, settings_from_env
from shared.storage.layout import INBOX_INDEX, inbox_pk
from writer_worker.store import EventWriter

NOTE = "x" * 900
PAGE = 50


async def _seed(settings: Settings, events: int) -> tuple[str, str]:
    """An account with ``events`` undelivered 1 KB events, stored by the writer's own code."""
    async with open_clients(settings) as clients:
        await ensure_resources(settings, clients)
        account = new_account_id()
        key, _ = await create_key(
            DynamoKeyStore(clients.dynamodb, settings.keys_table),
            account_id=account,
            scopes=frozenset(Scope),
            rate_limit_per_minute=1000,
            bcrypt_rounds=4,
        )
        writer = EventWriter(clients.dynamodb, settings)
        for start in range(0, events, 400):
            batch = []
            for n in range(start, min(events, start + 400)):
                now_us = time.time_ns() // 1000
                batch.append(
                    QueuedEvent(
                        event_id=new_event_id(now_us // 1000),
                        account_id=account,
                        event_type=f"type.{n % 5}",
                        payload=msgspec.Raw(msgspec.json.encode({"n": n, "note": NOTE})),
                        received_at_us=now_us,
                    )
                )
            await writer.write(batch)
        return account, key


async def _raw_query_ms(settings: Settings, account: str, runs: int) -> list[float]:
    """The latency of the bare Query behind one page, as a client sees it."""
    async with open_clients(settings) as clients:
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            await clients.dynamodb.query(
                TableName=settings.events_table,
                IndexName=INBOX_INDEX,
                KeyConditionExpression="inbox_pk = :pk",
                ExpressionAttributeValues={":pk": {"S": inbox_pk(account)}},
                Limit=PAGE + 1,
            )
            timings.append((time.perf_counter() - started) * 1000)
        return timings


def measure(quick: bool, events: int) -> dict[str, Any]:
    seconds = 5 if quick else 15
    port = processes.free_port()
    moto = processes.spawn(
        pinned(LOAD_CPU, [sys.executable, "-m", "shared.local_aws", "-H", "127.0.0.1", "-p", str(port)]), quiet=True
    )
    endpoint = f"http://127.0.0.1:{port}"
    processes.wait_http(f"{endpoint}/moto-api/", 30, moto)
    env = {
        "TRIGGERS_AWS_ENDPOINT_URL": endpoint,
        "TRIGGERS_RESOURCE_PREFIX": f"i{uuid.uuid4().hex[:8]}",
        "TRIGGERS_KEY_CACHE_TTL_S": "300",
        "TRIGGERS_LOG_LEVEL": "INFO",
    }
    settings = settings_from_env(env)
    children = [moto]
    try:
        account, key = asyncio.run(_seed(settings, events))
        inbox_port = processes.free_port()
        args = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--loop", "uvloop", "--no-log"]
        args += ["--port", str(inbox_port), "inbox_api.app:create_app"]
        inbox = processes.spawn(pinned(SERVER_CPU, args), env, quiet=True)
        children.append(inbox)
        processes.wait_http(f"http://127.0.0.1:{inbox_port}/status", 30, inbox)
        url = f"http://127.0.0.1:{inbox_port}/inbox?limit={PAGE}"
        headers = {"Authorization": f"Bearer {key}"}
        run_wrk(url, b"", headers, connections=1, seconds=2, method="GET")  # warm: key cache, connections
        raw = asyncio.run(_raw_query_ms(settings, account, 20 if quick else 50))
        cpu0 = cpu_seconds(inbox.pid)
        page = run_wrk(url, b"", headers, connections=2, seconds=seconds, method="GET")
        cpu = cpu_seconds(inbox.pid) - cpu0
        raw_after = asyncio.run(_raw_query_ms(settings, account, 20 if quick else 50))
    finally:
        processes.stop(children)
    raw_all = sorted(raw + raw_after)
    raw_p50 = statistics.median(raw_all)
    return {
        "undelivered_events": events,
        "page_size": PAGE,
        "requests": page.requests,
        "failures": page.non2xx + page.errors,
        "inbox_cpu_ms_per_request": round(cpu / max(1, page.requests) * 1000, 3),
        "inbox_p50_ms": round(page.p50_ms, 1),
        "inbox_p95_ms": round(page.p95_ms, 1),
        "inbox_p99_ms": round(page.p99_ms, 1),
        "raw_query_p50_ms": round(raw_p50, 1),
        "raw_query_p95_ms": round(raw_all[int(len(raw_all) * 0.95)], 1),
        "latency_ratio_p50": round(page.p50_ms / raw_p50, 2),
        "endpoint": "moto (shared/local_aws)",
    }


def markdown(results: dict[str, Any]) -> str:
    r = results

    def verdict(ok: bool) -> str:
        return "yes" if ok else "**no**"

    return "\n".join(
        [
            "# Inbox benchmark",
            "",
            f"{r['when']}, Python {r['python']}, {r['cpus']} cores; {r['undelivered_events']} undelivered 1 KB events "
            f"in one account, pages of {r['page_size']}, against {r['endpoint']}; {r['requests']} requests.",
            "",
            "| figure | value | target | holds |",
            "|---|---|---|---|",
            f"| inbox CPU per GET /inbox | {r['inbox_cpu_ms_per_request']} ms | <= 1 ms | "
            f"{verdict(r['inbox_cpu_ms_per_request'] <= 1)} |",
            f"| GET /inbox p50 / p95 / p99 | {r['inbox_p50_ms']} / {r['inbox_p95_ms']} / {r['inbox_p99_ms']} ms | "
            f"p95 < 200 ms | {verdict(r['inbox_p95_ms'] < 200)} |",
            f"| raw Query for the same page, p50 / p95 | {r['raw_query_p50_ms']} / {r['raw_query_p95_ms']} ms | | |",
            f"| GET /inbox p50 / raw Query p50 | {r['latency_ratio_p50']} | <= 1.5 | "
            f"{verdict(r['latency_ratio_p50'] <= 1.5)} |",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--events", type=int, default=10_000, help="undelivered events in the account")
    args = parser.parse_args()
    results = measure(args.quick, args.events)
    path = write_results("inbox", results, "")
    path.with_suffix(".md").write_text(markdown(json.loads(path.read_text())))
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
