"""Ingest edge benchmark: events/s on one server core, latency at half load, SQS requests/event.

Arrangement: the ingest server runs alone on core 0 (taskset). wrk (C) drives it from core 1,
where a minimal SQS endpoint (bench/fake_aws.py, the real SQS JSON protocol, nothing stored)
answers: moto would measure itself (every send walks its queue). DynamoDB (moto) serves only
the key lookup, once per cache period. The same server also runs a bare Litestar handler
that returns fixed bytes: the ceiling the edge is held against.

Run: python -m bench.ingest [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.request
from dataclasses import dataclass
from typing import Any

from bench.common import (
    LOAD_CPU,
    SERVER_CPU,
    cpu_seconds,
    create_key_for,
    rss_mib,
    run_wrk,
    spawn_pinned,
    summarize,
    write_results,
)
from shared.aws.clients import open_clients
from shared.local import processes
from shared.ops.resources import ensure_resources
from shared.settings import settings_from_env
from shared.web import serving

PAYLOAD = {"order_id": 123456, "customer": {"id": "c_42", "email": "someone@example.com"}, "note": "x" * 860}
EVENT = {"event_type": "order.created", "payload": PAYLOAD}
BATCH_EVENTS = 100
SINGLE = json.dumps(EVENT).encode()
BATCH = json.dumps({"events": [EVENT] * BATCH_EVENTS}).encode()
SWEEP_RATES = {False: [500, 1000, 2000, 3000, 4000, 5000, 6000], True: [1000, 4000]}  # offered events/s, by --quick


def post_ok(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - local URL
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - local URL
        return int(response.status)


def fake_stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/stats", timeout=5) as response:  # noqa: S310 - local URL
        stats: dict[str, int] = json.loads(response.read())
        return stats


def prepare(env: dict[str, str]) -> str:
    settings = settings_from_env(env)

    async def init() -> None:
        async with open_clients(settings) as clients:
            await ensure_resources(settings, clients)

    asyncio.run(init())
    return create_key_for(settings)


def _serve(app: str, port: int, env: dict[str, str]) -> Any:
    process = spawn_pinned(SERVER_CPU, serving.command(app, port), env)
    processes.wait_http(f"http://127.0.0.1:{port}/status", 30, process)
    return process


@dataclass
class Rig:
    """The processes of one benchmark run and how to reach them."""

    env: dict[str, str]
    headers: dict[str, str]
    fake_url: str
    children: list[Any]
    seconds: float
    runs: int


def _rig(quick: bool) -> Rig:
    moto, moto_url = processes.start_moto()
    fake_port = processes.free_port()
    fake = spawn_pinned(LOAD_CPU, [sys.executable, "-m", "bench.fake_aws", str(fake_port)], {})
    fake_url = f"http://127.0.0.1:{fake_port}"
    processes.wait_http(f"{fake_url}/stats", 30, fake)
    env = {
        "TRIGGERS_AWS_ENDPOINT_URL": moto_url,
        "TRIGGERS_RESOURCE_PREFIX": "bench",
        "TRIGGERS_KEY_CACHE_TTL_S": "300",
        "TRIGGERS_LOG_LEVEL": "INFO",  # the canonical request line is part of the cost
    }
    key = prepare(env)
    env["TRIGGERS_SQS_ENDPOINT_URL"] = fake_url
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return Rig(env, headers, fake_url, [moto, fake], 4 if quick else 10, 1 if quick else 3)


def _throughput(
    rig: Rig, pid: int, url: str, body: bytes, *, events_per_request: int, connections: int
) -> dict[str, Any]:
    """Closed-loop load: events/s, server CPU per event, SQS requests per event."""
    rates, cpu_us, sqs_per_event, failures = [], [], [], 0
    for _ in range(rig.runs):
        stats0, cpu0 = fake_stats(rig.fake_url), cpu_seconds(pid)
        result = run_wrk(url, body, rig.headers, connections=connections, seconds=rig.seconds)
        stats1, cpu1 = fake_stats(rig.fake_url), cpu_seconds(pid)
        events = result.requests * events_per_request
        rates.append(result.rate * events_per_request)
        cpu_us.append((cpu1 - cpu0) / max(1, events) * 1e6)
        sqs_per_event.append((stats1["requests"] - stats0["requests"]) / max(1, stats1["events"] - stats0["events"]))
        failures += result.non2xx + result.errors
    return {
        "events_per_s": summarize(rates),
        "cpu_us_per_event": summarize(cpu_us),
        "sqs_requests_per_event": summarize(sqs_per_event),
        "failures": failures,
    }


def _latency(rig: Rig, url: str, rate: float, *, seconds: float | None = None, body: bytes = SINGLE) -> dict[str, Any]:
    """Latency at a paced (open-ish) load: each connection waits between requests."""
    # Enough connections that each waits between requests even at ~25 ms latency: a
    # connection's rate is 1 / (delay + latency), so too few would cap the offered rate.
    connections = max(32, round(rate / 40))
    method = "POST" if body else "GET"
    # wrk waits `delay` after each answer, so a connection's period is delay + latency:
    # a short probe measures the latency, and the delay is set to hit the rate.
    probe = run_wrk(
        url, body, rig.headers, connections=connections, seconds=2, delay_ms=connections * 1000 / rate, method=method
    )
    delay_ms = max(0.1, connections * 1000 / rate - probe.p50_ms)
    runs = [
        run_wrk(
            url,
            body,
            rig.headers,
            connections=connections,
            seconds=seconds or rig.seconds,
            delay_ms=delay_ms,
            method=method,
        )
        for _ in range(rig.runs)
    ]
    return {
        "target_events_per_s": round(rate),
        "events_per_s": summarize([r.rate for r in runs]),
        "p50_ms": summarize([r.p50_ms for r in runs]),
        "p95_ms": summarize([r.p95_ms for r in runs]),
        "p99_ms": summarize([r.p99_ms for r in runs]),
        "failures": sum(r.non2xx + r.errors for r in runs),
    }


def measure(quick: bool) -> dict[str, Any]:
    rig = _rig(quick)
    results: dict[str, Any] = {"event_bytes": len(SINGLE), "batch_events": BATCH_EVENTS}
    try:
        port = processes.free_port()
        bare = _serve("bench.bare_app:create_app", port, rig.env)
        url = f"http://127.0.0.1:{port}/events"
        ceiling = [
            run_wrk(url, SINGLE, rig.headers, connections=256, seconds=rig.seconds).rate for _ in range(rig.runs)
        ]
        results["bare_handler_rps"] = summarize(ceiling)
        processes.stop([bare])

        port = processes.free_port()
        ingest = _serve("ingest_api.app:create_app", port, rig.env)
        rig.children.append(ingest)
        url = f"http://127.0.0.1:{port}/events"
        assert post_ok(url, SINGLE, rig.headers) == 202  # warms the key cache (one bcrypt)
        results["single"] = _throughput(rig, ingest.pid, url, SINGLE, events_per_request=1, connections=256)
        results["half_load"] = _latency(rig, url, results["single"]["events_per_s"]["median"] / 2)
        # Throughput and latency against offered load (the 1,000 events/s point is a target).
        results["sweep"] = [_latency(rig, url, rate, seconds=3 if quick else 5) for rate in SWEEP_RATES[quick]]
        status_url = f"http://127.0.0.1:{port}/status"
        results["status"] = _latency(rig, status_url, 1000, seconds=2 if quick else 5, body=b"")
        results["batch"] = _throughput(
            rig, ingest.pid, f"{url}/batch", BATCH, events_per_request=BATCH_EVENTS, connections=16
        )
        results["rss_mib"] = rss_mib(ingest.pid)
    finally:
        processes.stop(rig.children)
    return results


TARGETS = {
    "single_events_per_s": (">=", 5000),
    "half_load_p99_ms": ("<", 20),
    "batch_events_per_s": (">=", 40000),
    "single_sqs_requests_per_event": ("<=", 0.1),
}


FIGURES = [
    # (label, path in the results, target operator, target bound)
    ("bare Litestar handler, requests/s (ceiling)", ("bare_handler_rps",), None, None),
    ("POST /events, events/s", ("single", "events_per_s"), ">=", 5000),
    ("POST /events, server CPU µs/event", ("single", "cpu_us_per_event"), None, None),
    ("POST /events, SQS requests/event", ("single", "sqs_requests_per_event"), "<=", 0.1),
    ("half load, events/s achieved", ("half_load", "events_per_s"), None, None),
    ("half load, p50 ms", ("half_load", "p50_ms"), None, None),
    ("half load, p99 ms", ("half_load", "p99_ms"), "<", 20),
    ("POST /events/batch (100), events/s", ("batch", "events_per_s"), ">=", 40000),
    ("POST /events/batch, server CPU µs/event", ("batch", "cpu_us_per_event"), None, None),
    ("POST /events/batch, SQS requests/event", ("batch", "sqs_requests_per_event"), "<=", 0.1),
]


def _verdict(value: float, op: str | None, bound: float | None) -> str:
    if op is None or bound is None:
        return ""
    holds = {"<": value < bound, "<=": value <= bound, ">=": value >= bound}[op]
    return "yes" if holds else "**no**"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Ingest benchmark",
        "",
        f"{results['when']}, Python {results['python']}, {results['cpus']} cores; the server on one core, "
        f"{results['event_bytes']}-byte events; median of {results['single']['events_per_s']['runs']} runs.",
        "",
        "| figure | median | min to max | target | holds |",
        "|---|---|---|---|---|",
    ]
    for label, path, op, bound in FIGURES:
        value: Any = results
        for part in path:
            value = value[part]
        target = f"{op} {bound}" if op else ""
        spread = f"{value['min']} to {value['max']}"
        lines.append(f"| {label} | {value['median']} | {spread} | {target} | {_verdict(value['median'], op, bound)} |")
    failures = results["single"]["failures"] + results["half_load"]["failures"] + results["batch"]["failures"]
    lines += ["", f"Non-2xx answers or socket errors during the runs: {failures}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short run of each figure")
    args = parser.parse_args()
    results = measure(args.quick)
    path = write_results("ingest", results, "")
    saved = json.loads(path.read_text())
    path.with_suffix(".md").write_text(markdown(saved))
    print(path.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
