"""Leases and long polling benchmark (issue 19), on the embedded default (SQS on moto,
DynamoDB on DynamoDB Local), the inbox alone on core 0, everything else on core 1.

1. Wake-up: from the 202 of POST /events to a claim already waiting (``wait_s`` 20) on the
   inbox receiving that event, one event at a time (ingest and writer as `triggers up` runs
   them): p50, p95, p99.
2. Idle long polls: 1,000 requests waiting at once on one inbox process (``GET /inbox?wait_s=20``,
   each on the default consumer of its own account: 1,000 consumers), nothing arriving: the
   inbox's CPU (% of a core) and the DynamoDB requests it makes per second while they wait
   (its /metrics).
3. Four workers drain one consumer (the events stored beforehand): each claims 10 (lease 60 s)
   and acknowledges them by token, until none is left. Claims per second per inbox core
   (claims / inbox CPU seconds), the DynamoDB requests per delivered event for claim + ack,
   and whether any event was handled twice or lost (the "done when" of issue 19 at 10,000).

Results: bench/results/leases.json and .md; docs/performance.md, "Leases and long polling".
Run: python -m bench.leases [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from bench import backends
from bench.common import LOAD_CPU, SERVER_CPU, cpu_seconds, create_key_for, pinned, write_results
from shared.aws.clients import open_clients
from shared.local import processes
from shared.ops.resources import ensure_resources
from shared.settings import Settings, settings_from_env

IDLE_POLLS = {False: 1000, True: 200}
WAKES = {False: 100, True: 20}
DRAIN_EVENTS = {False: 10_000, True: 2_000}
WORKERS = 4
CLAIM = 10
IDLE_WINDOW_S = {False: 10.0, True: 5.0}


def _service(part: str, env: dict[str, str], cpu: str) -> tuple[subprocess.Popen[bytes], str, str]:
    port, admin = processes.free_port(), processes.free_port()
    args = [sys.executable, "-m", "shared.ops.cli", "run", part]
    if part != "writer":
        args += ["--port", str(port), "--admin-port", str(admin)]
    process = processes.spawn(pinned(cpu, args), env, quiet=True)
    url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    if part != "writer":
        processes.wait_http(f"{url}/status", 60, process)
    return process, url, admin_url


def _dynamodb_requests(admin_url: str) -> int:
    """The DynamoDB requests the process sent so far (its /metrics)."""
    text = httpx.get(f"{admin_url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith('triggers_aws_requests_total{operation="dynamodb.'):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def measure(quick: bool) -> dict[str, Any]:
    with backends.running("dynamodb-local", LOAD_CPU) as endpoints:
        env = {
            **endpoints.env,
            "TRIGGERS_RESOURCE_PREFIX": f"l{uuid.uuid4().hex[:8]}",
            "TRIGGERS_LOG_LEVEL": "WARNING",
            "TRIGGERS_KEY_CACHE_TTL_S": "300",
            "TRIGGERS_INBOX_REQUESTS_PER_MINUTE": "1000000000",
            "TRIGGERS_WRITER_WAIT_TIME_S": "1",
            "TRIGGERS_INBOX_SETTLE_MS": "0",
        }
        settings = settings_from_env(env)
        asyncio.run(_init(settings))
        children: list[subprocess.Popen[bytes]] = []
        try:
            inbox, inbox_url, inbox_admin = _service("inbox", env, SERVER_CPU)
            ingest, ingest_url, _ = _service("ingest", env, LOAD_CPU)
            writer, _, _ = _service("writer", env, LOAD_CPU)
            children += [inbox, ingest, writer]
            wake = asyncio.run(_wake_ups(settings, ingest_url, inbox_url, WAKES[quick]))
            served = _Inbox(inbox, inbox_url, inbox_admin)
            idle = asyncio.run(_idle(settings, served, IDLE_POLLS[quick], IDLE_WINDOW_S[quick]))
            drain = asyncio.run(_drain(settings, served, ingest_url, DRAIN_EVENTS[quick]))
        finally:
            processes.stop(children)
    return {"quick": quick, "wake_up_ms": wake, "idle_long_polls": idle, "drain": drain}


async def _init(settings: Settings) -> None:
    async with open_clients(settings) as clients:
        await ensure_resources(settings, clients)


async def _wake_ups(settings: Settings, ingest_url: str, inbox_url: str, count: int) -> dict[str, float]:
    key = create_key_for(settings)
    headers = {"Authorization": f"Bearer {key}"}
    latencies = []
    async with httpx.AsyncClient(timeout=40, headers=headers) as http:
        for n in range(count):
            waiting = asyncio.create_task(http.post(f"{inbox_url}/inbox/claim", json={"wait_s": 20, "lease_s": 60}))
            await asyncio.sleep(0.3)  # the claim found nothing and waits
            sent = await http.post(f"{ingest_url}/events", json={"event_type": "bench.wake", "payload": {"n": n}})
            accepted = time.monotonic()
            assert sent.status_code == 202, sent.text
            answer = (await waiting).json()
            latencies.append((time.monotonic() - accepted) * 1000)
            assert [e["event_id"] for e in answer["events"]] == [sent.json()["event_id"]], answer
            tokens = [e["lease_token"] for e in answer["events"]]
            await http.post(f"{inbox_url}/inbox/ack", json={"lease_tokens": tokens})
    ordered = sorted(latencies)
    return {
        "events": count,
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[int(len(ordered) * 0.95) - 1], 1),
        "p99": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 1),
        "max": round(ordered[-1], 1),
    }


@dataclass(frozen=True)
class _Inbox:
    process: subprocess.Popen[bytes]
    url: str
    admin_url: str


async def _idle(settings: Settings, inbox: _Inbox, count: int, window_s: float) -> dict[str, Any]:
    inbox_url, admin_url = inbox.url, inbox.admin_url
    keys = await asyncio.gather(*(asyncio.to_thread(create_key_for, settings) for _ in range(count)))
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        # Warm each key's cache entry first: a bcrypt check is not what this measures.
        for start in range(0, count, 50):
            await asyncio.gather(
                *(
                    http.get(f"{inbox_url}/inbox", headers={"Authorization": f"Bearer {k}"})
                    for k in keys[start : start + 50]
                )
            )
        polls = [
            asyncio.create_task(
                http.get(f"{inbox_url}/inbox", params={"wait_s": "20"}, headers={"Authorization": f"Bearer {k}"})
            )
            for k in keys
        ]
        await asyncio.sleep(3.0)  # all of them waiting, the poller's first reads done
        cpu0, requests0, started = cpu_seconds(inbox.process.pid), _dynamodb_requests(admin_url), time.monotonic()
        await asyncio.sleep(window_s)
        cpu1, requests1, took = (
            cpu_seconds(inbox.process.pid),
            _dynamodb_requests(admin_url),
            time.monotonic() - started,
        )
        pending = sum(not p.done() for p in polls)
        answers = await asyncio.gather(*polls)
    empty = sum(a.status_code == 200 and a.json()["events"] == [] for a in answers)
    return {
        "waiting": count,
        "still_waiting_at_the_end_of_the_window": pending,
        "answered_empty_after_wait_s": empty,
        "inbox_cpu_percent_of_a_core": round((cpu1 - cpu0) / took * 100, 1),
        "dynamodb_requests_per_s": round((requests1 - requests0) / took, 1),
        "window_s": round(took, 1),
    }


async def _drain(settings: Settings, inbox: _Inbox, ingest_url: str, count: int) -> dict[str, Any]:
    inbox_url, admin_url = inbox.url, inbox.admin_url
    key = create_key_for(settings)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=60, headers=headers) as http:
        sent: set[str] = set()
        for start in range(0, count, 100):
            batch = [
                {"event_type": f"bench.job.{n % 3}", "payload": {"n": n}} for n in range(start, min(count, start + 100))
            ]
            answer = await http.post(f"{ingest_url}/events/batch", json={"events": batch})
            assert answer.status_code == 202, answer.text
            sent.update(r["event_id"] for r in answer.json()["results"])
        await _stored(http, inbox_url, count)
        handled: Counter[str] = Counter()
        claims = 0
        cpu0, requests0, started = cpu_seconds(inbox.process.pid), _dynamodb_requests(admin_url), time.monotonic()

        async def worker() -> None:
            nonlocal claims
            while True:
                answer = (await http.post(f"{inbox_url}/inbox/claim", json={"limit": CLAIM, "lease_s": 60})).json()
                claims += 1
                if not answer["events"]:
                    return
                handled.update(e["event_id"] for e in answer["events"])
                tokens = [e["lease_token"] for e in answer["events"]]
                acked = (await http.post(f"{inbox_url}/inbox/ack", json={"lease_tokens": tokens})).json()
                assert not acked["refused"], acked

        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        took, cpu = time.monotonic() - started, cpu_seconds(inbox.process.pid) - cpu0
        requests = _dynamodb_requests(admin_url) - requests0
        left = (await http.get(f"{inbox_url}/consumers/default")).json()
    return {
        "events": count,
        "workers": WORKERS,
        "events_per_claim": CLAIM,
        "claims": claims,
        "seconds": round(took, 1),
        "events_per_s": round(count / took),
        "claims_per_inbox_core_s": round(claims / cpu) if cpu else None,
        "inbox_cpu_ms_per_event": round(cpu / count * 1000, 3),
        "dynamodb_requests_per_delivered_event": round(requests / count, 2),
        "handled_twice": sum(n > 1 for n in handled.values()),
        "lost": len(sent - handled.keys()),
        "left": {k: left[k] for k in ("total_undelivered", "in_flight", "failed")},
    }


async def _stored(http: httpx.AsyncClient, inbox_url: str, count: int) -> None:
    """Until the writer has stored all ``count`` events."""
    for _ in range(600):
        if (await http.get(f"{inbox_url}/consumers/default")).json()["total_undelivered"] >= count:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the writer did not store {count} events in 5 minutes")


def markdown(results: dict[str, Any]) -> str:
    wake, idle, drain = results["wake_up_ms"], results["idle_long_polls"], results["drain"]
    return "\n".join(
        [
            "# Leases and long polling benchmark",
            "",
            f"{results['when']}, Python {results['python']}, {results['cpus']} cores, the embedded default"
            f" (DynamoDB Local); the inbox alone on core 0{' (--quick)' if results['quick'] else ''}.",
            "",
            "| figure | target | measured |",
            "|---|---|---|",
            f"| 202 to a waiting claim receiving the event ({wake['events']} events) | p99 < 1 s "
            f"| p50 {wake['p50']} ms, p95 {wake['p95']} ms, p99 {wake['p99']} ms |",
            f"| {idle['waiting']} idle long polls (one consumer each) on one inbox | < 10 % of a core "
            f"| {idle['inbox_cpu_percent_of_a_core']} %, {idle['dynamodb_requests_per_s']} DynamoDB requests/s |",
            f"| claims (10 events) per inbox core-second, {drain['workers']} workers | measured "
            f"| {drain['claims_per_inbox_core_s']} ({drain['inbox_cpu_ms_per_event']} ms inbox CPU per event) |",
            "| DynamoDB requests per delivered event, claim + ack | reported "
            f"| {drain['dynamodb_requests_per_delivered_event']} |",
            f"| {drain['workers']} workers drain {drain['events']} events | none twice, none lost "
            f"| {drain['handled_twice']} twice, {drain['lost']} lost, {drain['events_per_s']} events/s;"
            f" left {drain['left']} |",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer events and polls")
    args = parser.parse_args()
    results = measure(args.quick)
    path = write_results("leases", results, "")
    text = markdown(json.loads(path.read_text()))
    path.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
