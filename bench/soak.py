"""Soak: the embedded default (`triggers up`) under steady load; memory, errors and lag over time.

Starts `triggers up` exactly as a user does (its own embedded AWS endpoints, ports and state
directory: DynamoDB Local and moto where Java is, moto alone otherwise; ``--backend`` picks),
then for ``--minutes`` (default 10) sends a steady stream through ``triggers_client``
(single events and batches), runs a consumer that pages and acknowledges, and every few
seconds sends a probe event and times how long until the inbox serves it. Every
``SAMPLE_S`` it records the resident memory of each process. Memory is called flat when the
last two minutes' median is within ``FLAT_TOLERANCE`` of the median of the two minutes after
warm-up.

Writes bench/results/soak.json, docs/soak.md and docs/img/soak.png. Not part of CI.
Run: python -m bench.soak [--minutes 10] [--rate 100] [--backend dynamodb-local|moto]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import RESULTS, rss_mib, write_results
from shared.local import processes
from shared.local.embedded import BACKENDS
from triggers_client import ApiError, AsyncTriggersClient

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 10.0  # memory sampling period
PROBE_S = 5.0  # lag probe period
WARM_UP_S = 60.0  # memory before this is start-up, not steady state
FLAT_TOLERANCE = 0.10  # last minutes' median memory within 10 % of the first steady minutes'
BATCH = 50  # half the events travel in batches of this size, half as single POSTs
ACK_MAX = 100  # ids per POST /inbox/ack (the contract's limit), so the consumer's page size
CONSUMER_REST_S = 1.0  # a consumer that has caught up polls again after this
PAYLOAD = {"customer": {"id": "c_42"}, "note": "x" * 800}


def _start_up(state: Path, backend: str | None) -> tuple[subprocess.Popen[str], str, str, str]:
    ingest_port, inbox_port = processes.free_port(), processes.free_port()
    env = {
        **os.environ,
        "TRIGGERS_STATE_DIR": str(state),
        "TRIGGERS_INGEST_PORT": str(ingest_port),
        "TRIGGERS_INBOX_PORT": str(inbox_port),
        "TRIGGERS_DEFAULT_RATE_LIMIT_PER_MINUTE": "10000000",
    }
    env.pop("TRIGGERS_AWS_ENDPOINT_URL", None)
    command = [sys.executable, "-m", "shared.ops.cli", "up", *(["--backend", backend] if backend else [])]
    up = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert up.stdout is not None
    for line in up.stdout:
        found = re.search(r"export TRIGGERS_KEY=(\S+)", line)
        if found:
            threading.Thread(target=up.stdout.read, daemon=True).start()  # keep its pipe from filling up
            return up, found.group(1), f"http://127.0.0.1:{ingest_port}", f"http://127.0.0.1:{inbox_port}"
    raise RuntimeError("triggers up stopped before printing its key")


def _processes(up_pid: int) -> dict[str, int]:
    """The direct children of `triggers up`, named by what they run."""
    named: dict[str, int] = {"triggers up": up_pid}
    for child in Path(f"/proc/{up_pid}/task/{up_pid}/children").read_text().split():
        command = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        name = next((part for part in ("ingest", "inbox", "writer") if f"run {part}" in command), "moto")
        if "DynamoDBLocal.jar" in command:
            name = "dynamodb-local"
        named[name] = int(child)
    return named


def _own_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


class Soak:
    def __init__(self, client: AsyncTriggersClient, rate: float, up_pid: int) -> None:
        self.client = client
        self.rate = rate
        self.up_pid = up_pid
        self.errors: Counter[str] = Counter()
        self.sent = 0
        self.acknowledged = 0
        self.memory: list[dict[str, float]] = []
        self.lag: list[tuple[float, float]] = []
        self.started = time.monotonic()

    def _elapsed(self) -> float:
        return round(time.monotonic() - self.started, 1)

    async def produce(self, until: float) -> None:
        """Every interval, BATCH events: alternately one batch request and BATCH single ones."""
        interval = BATCH / self.rate
        as_batch = True
        while time.monotonic() < until:
            tick = time.monotonic()
            try:
                if as_batch:
                    await self.client.send_batch([{"event_type": "soak.batch", "payload": PAYLOAD}] * BATCH)
                else:
                    await asyncio.gather(*(self.client.send("soak.single", PAYLOAD) for _ in range(BATCH)))
                self.sent += BATCH
                as_batch = not as_batch
            except (ApiError, OSError) as exc:
                self.errors[f"produce {type(exc).__name__} {getattr(exc, 'status', '')}".strip()] += 1
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))

    async def consume(self, until: float) -> None:
        """Page and acknowledge (100 ids at most per call); rest a moment after a short page."""
        while time.monotonic() < until:
            try:
                page = await self.client.inbox_page(limit=ACK_MAX)
                if page.events:
                    result = await self.client.ack_many([e.event_id for e in page.events])
                    self.acknowledged += len(result.acknowledged)
                if len(page.events) < ACK_MAX:
                    await asyncio.sleep(CONSUMER_REST_S)
            except (ApiError, OSError) as exc:
                self.errors[f"consume {type(exc).__name__} {getattr(exc, 'status', '')}".strip()] += 1
                await asyncio.sleep(0.5)

    async def probe(self, until: float) -> None:
        while time.monotonic() < until:
            sent = time.monotonic()
            try:
                accepted = await self.client.send("soak.probe", {"sent": sent})
                while True:
                    try:
                        await self.client.get(accepted.event_id)
                        break
                    except ApiError as exc:
                        if exc.status != 404:
                            raise
                        await asyncio.sleep(0.02)
                self.lag.append((self._elapsed(), round((time.monotonic() - sent) * 1000, 1)))
            except (ApiError, OSError) as exc:
                self.errors[f"probe {type(exc).__name__}"] += 1
            await asyncio.sleep(max(0.0, PROBE_S - (time.monotonic() - sent)))

    async def sample(self, until: float) -> None:
        while time.monotonic() < until:
            names = _processes(self.up_pid)
            sample = {name: rss_mib(pid) for name, pid in names.items() if name != "triggers up"}
            sample["triggers up"] = _own_rss_mib(self.up_pid)  # the supervisor alone, not its children
            self.memory.append({"t": self._elapsed(), **sample})
            await asyncio.sleep(SAMPLE_S)

    async def run(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(self.produce(until), self.consume(until), self.probe(until), self.sample(until))


def _flatness(memory: list[dict[str, float]], seconds: float) -> dict[str, dict[str, float | bool]]:
    window = 120.0
    early = [m for m in memory if WARM_UP_S <= m["t"] < WARM_UP_S + window]
    late = [m for m in memory if m["t"] >= seconds - window]
    verdicts: dict[str, dict[str, float | bool]] = {}
    for name in memory[0]:
        if name == "t" or not early or not late:
            continue
        first = statistics.median(m[name] for m in early)
        last = statistics.median(m[name] for m in late)
        verdicts[name] = {"first_mib": first, "last_mib": last, "flat": last <= first * (1 + FLAT_TOLERANCE)}
    return verdicts


def _plot(results: dict[str, Any], path: Path) -> None:
    figure, (memory_axes, lag_axes) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for name in results["memory"][0]:
        if name != "t":
            memory_axes.plot([m["t"] for m in results["memory"]], [m[name] for m in results["memory"]], label=name)
    memory_axes.set_ylabel("resident memory, MiB")
    memory_axes.set_title(f"Soak: embedded default at {results['rate_events_per_s']} events/s")
    memory_axes.legend(fontsize=8)
    memory_axes.grid(alpha=0.3)
    lag_axes.plot([t for t, _ in results["lag"]], [ms for _, ms in results["lag"]], linewidth=1)
    lag_axes.set_ylabel("probe lag, send to readable, ms")
    lag_axes.set_xlabel("seconds into the soak")
    lag_axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


ENDPOINTS = ("moto", "dynamodb-local")  # the embedded AWS, not the service: they keep every item


def _verdict(name: str, flat: bool) -> str:
    if name in ENDPOINTS:
        return "n/a: the embedded AWS endpoint"
    return "yes" if flat else "**no**"


def _markdown(results: dict[str, Any]) -> str:
    lags = sorted(ms for _, ms in results["lag"])
    lines = [
        "# Soak result",
        "",
        "Generated by `python -m bench.soak` (bench/soak.py) from `bench/results/soak.json`.",
        "",
        f"{results['when']}: `triggers up` (backend {results['backend']}) for {results['minutes']} minutes at "
        f"{results['rate_events_per_s']} events/s (half single POSTs, half batches of 50), one consumer "
        f"paging and acknowledging, a probe every {PROBE_S:g} s.",
        "",
        f"- events sent: {results['sent']:,}; acknowledged by the consumer: {results['acknowledged']:,}",
        f"- errors: {dict(results['errors']) or 'none'}",
        f"- probe lag (send to readable in the inbox): p50 {statistics.median(lags):,} ms, "
        f"p99 {lags[int(len(lags) * 0.99)]:,} ms, max {lags[-1]:,} ms over {len(lags)} probes",
        "",
        "| process | memory after warm-up (MiB) | memory at the end (MiB) | flat (within 10 %) |",
        "|---|---|---|---|",
        *(
            f"| {name} | {v['first_mib']:.1f} | {v['last_mib']:.1f} | {_verdict(name, bool(v['flat']))} |"
            for name, v in results["flatness"].items()
        ),
        "",
        "moto and DynamoDB Local are the embedded AWS endpoints, not part of the service. The",
        "DynamoDB among them keeps every stored item in memory and never expires TTL items, so it",
        "grows with the events stored (DynamoDB Local is a JVM: its heap also grows until the JVM",
        "collects); moto serves SQS on both backends (and DynamoDB on the moto one). On the moto",
        "backend each Query walks the whole table (acknowledged events included) under one lock,",
        "so inbox pages slow down as the table grows and the writers' requests wait behind them;",
        "DynamoDB Local, like DynamoDB, reads only the page (docs/performance.md).",
        "",
        "![soak](img/soak.png)",
        "",
    ]
    return "\n".join(lines)


async def _soak(minutes: float, rate: float, backend: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state:
        up, key, ingest, inbox = _start_up(Path(state), backend)
        try:
            async with AsyncTriggersClient(key, ingest_url=ingest, inbox_url=inbox) as client:
                soak = Soak(client, rate, up.pid)
                await soak.run(minutes * 60)
        finally:
            up.terminate()
            up.wait(60)
    return {
        "backend": "dynamodb-local" if "dynamodb-local" in soak.memory[-1] else "moto",
        "minutes": minutes,
        "rate_events_per_s": rate,
        "sent": soak.sent,
        "acknowledged": soak.acknowledged,
        "errors": dict(soak.errors),
        "lag": soak.lag,
        "memory": soak.memory,
        "flatness": _flatness(soak.memory, minutes * 60),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=100, help="events per second")
    parser.add_argument("--backend", choices=BACKENDS, help="what `triggers up` runs on (default: its own choice)")
    args = parser.parse_args()
    results = asyncio.run(_soak(args.minutes, args.rate, args.backend))
    path = write_results("soak", results, "")
    saved = json.loads(path.read_text())
    _plot(saved, ROOT / "docs" / "img" / "soak.png")
    text = _markdown(saved)
    (ROOT / "docs" / "soak.md").write_text(text)
    (RESULTS / "soak.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
