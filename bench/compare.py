"""The comparison: FastAPI + pydantic writing one PutItem per event (bench/fastapi_app.py).

Same arrangement as bench/ingest.py: the server alone on one core under uvicorn (its usual
server, uvloop + httptools), wrk and a fake AWS endpoint on the other core, the same 1 KB
event, the same cached key check. Reports events/s on that core, server CPU per event and
DynamoDB requests per event.

Run: python -m bench.compare [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench.common import LOAD_CPU, SERVER_CPU, cpu_seconds, rss_mib, run_wrk, spawn_pinned, summarize, write_results
from bench.ingest import SINGLE, fake_stats, post_ok, prepare
from shared.local import processes


def measure(quick: bool) -> dict[str, Any]:
    moto, moto_url = processes.start_moto()
    fake_port = processes.free_port()
    fake = spawn_pinned(LOAD_CPU, [sys.executable, "-m", "bench.fake_aws", str(fake_port)], {})
    fake_url = f"http://127.0.0.1:{fake_port}"
    children = [moto, fake]
    try:
        processes.wait_http(f"{fake_url}/stats", 30, fake)
        env = {
            "TRIGGERS_AWS_ENDPOINT_URL": moto_url,
            "TRIGGERS_RESOURCE_PREFIX": "compare",
            "TRIGGERS_KEY_CACHE_TTL_S": "300",
            "BENCH_PUT_ENDPOINT_URL": fake_url,
        }
        key = prepare(env)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        port = processes.free_port()
        args = [sys.executable, "-m", "uvicorn", "bench.fastapi_app:app", "--port", str(port)]
        args += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        server = spawn_pinned(SERVER_CPU, args, env)
        children.insert(0, server)
        url = f"http://127.0.0.1:{port}/events"
        processes.wait_http(f"http://127.0.0.1:{port}/docs", 30, server)
        assert post_ok(url, SINGLE, headers) == 202  # warms the key cache (one bcrypt)
        rates, cpu_us, requests_per_event, failures = [], [], [], 0
        for _ in range(1 if quick else 3):
            stats0, cpu0 = fake_stats(fake_url), cpu_seconds(server.pid)
            result = run_wrk(url, SINGLE, headers, connections=64, seconds=3 if quick else 10)
            stats1, cpu1 = fake_stats(fake_url), cpu_seconds(server.pid)
            rates.append(result.rate)
            cpu_us.append((cpu1 - cpu0) / max(1, result.requests) * 1e6)
            puts = stats1["dynamodb_requests"] - stats0["dynamodb_requests"]
            requests_per_event.append(puts / max(1, result.requests))
            failures += result.non2xx + result.errors
        return {
            "events_per_s": summarize(rates),
            "cpu_us_per_event": summarize(cpu_us),
            "dynamodb_requests_per_event": summarize(requests_per_event),
            "rss_mib": rss_mib(server.pid),
            "failures": failures,
        }
    finally:
        processes.stop(children)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short run")
    args = parser.parse_args()
    results = measure(args.quick)
    path = write_results("compare", results, "")
    print(json.dumps(json.loads(path.read_text()), indent=2))


if __name__ == "__main__":
    main()
