"""The load test file works: a short headless locust run against the real services fails nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, Service, Stack, make_key

pytestmark = pytest.mark.usefixtures("writer")


def test_producers_and_pollers_run_without_failures(stack: Stack, ingest: Service, inbox: Service) -> None:
    key = make_key(stack, rate_limit=10_000_000)
    env = {**os.environ, "TRIGGERS_KEY": key.key, "TRIGGERS_INGEST_URL": ingest.url, "TRIGGERS_INBOX_URL": inbox.url}
    headless = ["--headless", "--skip-log", "--json", "-u", "9", "-r", "9", "-t", "6s"]
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), *headless],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    stats = {entry["name"]: entry for entry in json.loads(run.stdout)}
    assert {"/events", "/events/batch", "/inbox", "/inbox/ack"} <= set(stats), run.stderr[-2000:]
    assert all(entry["num_requests"] > 0 for entry in stats.values())
    assert {name: entry["num_failures"] for name, entry in stats.items()} == dict.fromkeys(stats, 0)
