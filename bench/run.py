"""Every measurement in one go: ingest edge (with its bare-handler ceiling and an offered-load
sweep), the FastAPI + PutItem comparison, the writer and the embedded pipeline on the
embedded default and its moto fallback, the inbox on DynamoDB Local, moto and dynalite.
Writes bench/results/pipeline.json after every part, then the report: docs/performance.md
and its plots (bench/report.py).

A part that fails is recorded in the results (``failures``: what went wrong, and where its
log is) and the run goes on with the next one; what finished is on disk as soon as it has.

`--only PART ...` measures those parts again into the last results, keeping every other
part's figures (and the run's date), and redraws the report, which names them.

Run: python -m bench.run [--quick] [--only PART ...]   (full: about 17 minutes here; --quick: under 4)
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time
import traceback
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import backends, compare, consumers, inbox, ingest, report, writer
from bench.common import RESULTS, core_speed_ms, write_results

INBOX_EVENTS = {False: 10_000, True: 1_000}  # undelivered events in the measured account
VERSIONS = ("litestar", "msgspec", "granian", "aiobotocore", "moto", "fastapi", "pydantic", "uvicorn")
NAME = "pipeline"  # bench/results/pipeline.json


class Run:
    """The results of one run, written to disk after every part, failed parts included."""

    def __init__(self, quick: bool, directory: Path = RESULTS, only: set[str] | None = None) -> None:
        """A new run; with ``only``, those parts measured again into the last run's results
        (its other parts' figures, failures and date kept)."""
        self.directory = directory
        self.logs = directory / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.only = only
        if only is not None:
            self.results: dict[str, Any] = _earlier(directory / f"{NAME}.json", quick)
            return
        for stale in self.logs.glob("failed-*.txt"):  # an earlier run's failures are not this one's
            stale.unlink()
        self.results = {
            "quick": quick,
            "machine": {"platform": platform.platform(), "processor": platform.machine()},
            "versions": {name: version(name) for name in VERSIONS},
            "durations_s": {},
            "core_speed_ms": {},
            "failures": {},
        }

    def part(self, name: str, step: Callable[[], Any], keep: Callable[[Any], None]) -> None:
        """Run one part: how long it took, how fast the server core was just before, and
        its result (handed to ``keep`` before the results are saved), or its failure (the
        traceback in a log file, one line in the results)."""
        if self.only is not None and name not in self.only:
            return
        speeds, durations = self.results["core_speed_ms"], self.results["durations_s"]
        self.results["failures"].pop(name, None)  # an earlier failure of a part measured again
        if self.only is not None:
            self.results.setdefault("remeasured", {})[name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            speeds[name] = core_speed_ms()
            print(f"   core speed probe {speeds[name]} ms", flush=True)
            keep(step())
        except Exception as exc:  # noqa: BLE001 - one part's failure must not cost the others' results
            log = self.logs / f"failed-{name.replace(' ', '-')}.txt"
            log.write_text(traceback.format_exc())
            error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]  # one line, for the report's table
            self.results["failures"][name] = {"error": error, "log": str(log)}
            print(f"   FAILED: {type(exc).__name__}: {exc} (traceback: {log})", flush=True)
        durations[name] = round(time.monotonic() - started, 1)
        print(f"   {durations[name]} s", flush=True)
        self.save()

    def keep_as(self, key: str) -> Callable[[Any], None]:
        return functools.partial(self.results.__setitem__, key)

    def save(self) -> Path:
        return write_results(NAME, self.results, "", self.directory)


def _earlier(path: Path, quick: bool) -> dict[str, Any]:
    """The last run's results, to measure some parts again into: of the same mode only."""
    if not path.exists():
        raise SystemExit(f"--only adds to the last run's results, and {path} is missing")
    results: dict[str, Any] = json.loads(path.read_text())
    if results["quick"] != quick:
        raise SystemExit(f"the last run was {'a --quick' if results['quick'] else 'a full'} run: measure again as one")
    return results


def part_names() -> list[str]:
    """Every part of a run, in order, as ``--only`` names them."""
    return [
        "ingest",
        "compare (FastAPI + PutItem)",
        "writer",
        "consumers",
        *(f"embedded pipeline on {pipeline}" for pipeline in backends.EMBEDDED),
        *(f"inbox on {backend}" for backend in backends.INBOX),
    ]


def measure(run: Run, quick: bool) -> None:
    run.part("ingest", lambda: ingest.measure(quick), run.keep_as("ingest"))
    run.part("compare (FastAPI + PutItem)", lambda: compare.measure(quick), run.keep_as("compare"))
    run.part("writer", lambda: writer.measure_cost(quick, run.logs), run.keep_as("writer"))
    run.part("consumers", lambda: consumers.measure(quick, run.logs), run.keep_as("consumers"))
    embedded: dict[str, Any] = run.results.setdefault("embedded", {})
    for pipeline in backends.EMBEDDED:
        step = functools.partial(writer.measure_embedded, pipeline, quick, run.logs)
        run.part(f"embedded pipeline on {pipeline}", step, functools.partial(embedded.__setitem__, pipeline))
    runs: list[dict[str, Any]] = run.results.setdefault("inbox", {"runs": []})["runs"]
    for backend in backends.INBOX:
        step = functools.partial(inbox.measure, backend, quick, INBOX_EVENTS[quick])
        run.part(f"inbox on {backend}", step, functools.partial(_replace_run, runs))


def _replace_run(runs: list[dict[str, Any]], measured: dict[str, Any]) -> None:
    """A backend's inbox figures, in place of any earlier ones of that backend (``--only``)."""
    for at, run in enumerate(runs):
        if run["backend"] == measured["backend"]:
            runs[at] = measured  # in its place: the report's columns keep their order
            return
    runs.append(measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one short run of each figure (under 4 minutes)")
    parser.add_argument("--only", nargs="+", metavar="PART", help="measure these parts again (names as printed)")
    args = parser.parse_args()
    started = time.monotonic()
    unknown = set(args.only or ()) - set(part_names())
    if unknown:
        parser.error(f"no such part: {', '.join(sorted(unknown))} (parts: {', '.join(part_names())})")
    run = Run(args.quick, only=set(args.only) if args.only else None)
    measure(run, args.quick)
    if not args.only:  # the total is the whole run's
        run.results["durations_s"]["total"] = round(time.monotonic() - started, 1)
    path = run.save()
    print(f"results: {path}")
    try:
        print(f"report: {report.write(path, Path(__file__).resolve().parent.parent / 'docs')}")
    except Exception:  # noqa: BLE001 - the results are on disk: `python -m bench.report` redraws from them
        traceback.print_exc()
        raise SystemExit("the report failed; the results are saved, see above") from None
    failed = run.results["failures"]
    if failed:
        raise SystemExit(f"failed parts: {', '.join(failed)}")


if __name__ == "__main__":
    main()
