"""Every measurement in one go: ingest edge (with its bare-handler ceiling and an offered-load
sweep), the FastAPI + PutItem comparison, the writer and the embedded pipeline, the inbox on
moto and dynalite. Writes bench/results/pipeline.json, then the report: docs/performance.md
and its plots (bench/report.py).

Run: python -m bench.run [--quick]   (full: under 15 minutes here; --quick: under 2)
"""

from __future__ import annotations

import argparse
import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import compare, inbox, ingest, report, writer
from bench.common import RESULTS, core_speed_ms, write_results

INBOX_EVENTS = {False: 10_000, True: 1_000}  # undelivered events in the measured account
VERSIONS = ("litestar", "msgspec", "granian", "aiobotocore", "moto", "fastapi", "pydantic", "uvicorn")


def _timed(name: str, results: dict[str, Any], step: Any) -> Any:
    """Run one part; record how long it took and how fast the server core was just before."""
    durations, speeds = results["durations_s"], results["core_speed_ms"]
    speeds[name] = core_speed_ms()
    print(f"== {name} (core speed probe {speeds[name]} ms)", flush=True)
    started = time.monotonic()
    result = step()
    durations[name] = round(time.monotonic() - started, 1)
    print(f"   {durations[name]} s", flush=True)
    return result


def measure(quick: bool) -> dict[str, Any]:
    logs = RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    durations: dict[str, float] = {}
    results: dict[str, Any] = {
        "quick": quick,
        "machine": {"platform": platform.platform(), "processor": platform.machine()},
        "versions": {name: version(name) for name in VERSIONS},
        "durations_s": durations,
        "core_speed_ms": {},
    }
    results["ingest"] = _timed("ingest", results, lambda: ingest.measure(quick))
    results["compare"] = _timed("compare (FastAPI + PutItem)", results, lambda: compare.measure(quick))
    results["writer"] = _timed("writer and embedded pipeline", results, lambda: writer.measure(quick, logs))
    results["inbox"] = {
        "runs": [
            _timed(f"inbox on {backend}", results, lambda b=backend: inbox.measure(b, quick, INBOX_EVENTS[quick]))
            for backend in ("moto", "dynalite")
        ]
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short run of each figure (under 2 minutes)")
    args = parser.parse_args()
    started = time.monotonic()
    results = measure(args.quick)
    results["durations_s"]["total"] = round(time.monotonic() - started, 1)
    path = write_results("pipeline", results, "")
    written = report.write(path, Path(__file__).resolve().parent.parent / "docs")
    print(f"results: {path}\nreport: {written}")


if __name__ == "__main__":
    main()
