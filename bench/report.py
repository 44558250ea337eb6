"""docs/performance.md and its plots, generated from bench/results/pipeline.json.

Every number and every plot in the report comes from that file, so the report cannot drift
from the measurements: `python -m bench.run` measures and calls this; `python -m
bench.report` redraws from the last results.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no screen
import matplotlib.pyplot as plt

from bench import backends

ROOT = Path(__file__).resolve().parent.parent
IMAGES = "img"  # under docs/


def _holds(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _spread(figure: dict[str, float]) -> str:
    if figure["runs"] == 1:
        return f"{figure['median']:,} (1 run)"
    return f"{figure['median']:,} ({figure['min']:,} to {figure['max']:,}, {figure['runs']} runs)"


def _sweep_point(ingest: dict[str, Any], rate: int) -> dict[str, Any] | None:
    return next((p for p in ingest["sweep"] if p["target_events_per_s"] == rate), None)


def plot_throughput(results: dict[str, Any], path: Path) -> None:
    ingest, compare = results["ingest"], results["compare"]
    offered = [p["target_events_per_s"] for p in ingest["sweep"]]
    achieved = [p["events_per_s"]["median"] for p in ingest["sweep"]]
    low = [p["events_per_s"]["median"] - p["events_per_s"]["min"] for p in ingest["sweep"]]
    high = [p["events_per_s"]["max"] - p["events_per_s"]["median"] for p in ingest["sweep"]]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.errorbar(offered, achieved, yerr=[low, high], marker="o", capsize=3, label="POST /events, paced load")
    axes.plot(offered, offered, linestyle=":", color="grey", label="achieved = offered")
    axes.axhline(ingest["single"]["events_per_s"]["median"], color="C0", linestyle="--", label="edge, closed loop")
    axes.axhline(ingest["bare_handler_rps"]["median"], color="C2", linestyle="--", label="bare Litestar ceiling")
    axes.axhline(compare["events_per_s"]["median"], color="C3", linestyle="--", label="FastAPI + PutItem, closed loop")
    axes.set_xlabel("offered events/s (one event per request)")
    axes.set_ylabel("achieved events/s, one server core")
    axes.set_title("Ingest throughput against offered load")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_latency(results: dict[str, Any], path: Path) -> None:
    sweep = results["ingest"]["sweep"]
    offered = [p["target_events_per_s"] for p in sweep]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name in ("p50_ms", "p95_ms", "p99_ms"):
        axes.plot(offered, [p[name]["median"] for p in sweep], marker="o", label=name.removesuffix("_ms"))
    axes.axhline(100, color="grey", linestyle=":", label="target: p95 < 100 ms at 1,000/s")
    axes.set_yscale("log")
    axes.set_xlabel("offered events/s")
    axes.set_ylabel("POST /events latency, ms (log)")
    axes.set_title("Ingest latency percentiles against offered load")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3, which="both")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_lag(results: dict[str, Any], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(7, 3.5))
    rate = None
    for backend, embedded in _embedded(results).items():
        series, rate = embedded["lag_series"], embedded["paced_rate_events_per_s"]
        axes.plot([t for t, _ in series], [lag for _, lag in series], linewidth=1, label=backend)
    axes.axhline(1000, color="grey", linestyle=":", label="1 s")
    axes.set_xlabel("seconds into the run")
    axes.set_ylabel("worst lag of a writer batch, ms")
    axes.set_title(f"Lag, receipt to inbox, embedded default at {rate} events/s")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def requests_per_event(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """AWS requests per stored event, by part and service, for both designs."""
    ingest, packed = results["ingest"], results["writer"]["writer_packed"]
    return {
        "Triggers (edge + writer)": {
            "SQS at the edge": ingest["single"]["sqs_requests_per_event"]["median"],
            "SQS at the writer": packed["sqs_requests_per_event"],
            "DynamoDB at the writer": packed["dynamodb_requests_per_event"],
        },
        "FastAPI + PutItem": {"DynamoDB at the edge": results["compare"]["dynamodb_requests_per_event"]["median"]},
    }


def plot_requests(results: dict[str, Any], path: Path) -> None:
    by_design = requests_per_event(results)
    figure, axes = plt.subplots(figsize=(7, 3.5))
    labels, values = [], []
    for design, parts in by_design.items():
        for part, value in parts.items():
            labels.append(f"{design}\n{part}")
            values.append(value)
    bars = axes.barh(labels, values, color=["C0"] * 3 + ["C3"])
    axes.bar_label(bars, fmt="%.4g", fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("AWS requests per event (log)")
    axes.set_title("AWS requests per event, by part")
    axes.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


# Each plot, and the parts of the run it needs (a part that failed leaves its plots out).
PLOTS: dict[str, tuple[Callable[[dict[str, Any], Path], None], tuple[str, ...]]] = {
    "throughput_vs_offered_load.png": (plot_throughput, ("ingest", "compare")),
    "latency_percentiles.png": (plot_latency, ("ingest",)),
    "lag_over_time.png": (plot_lag, ("embedded",)),
    "aws_requests_per_event.png": (plot_requests, ("ingest", "compare", "writer")),
}


def _measured(results: dict[str, Any], *parts: str) -> bool:
    return all(results.get(part) for part in parts)


def _section(
    results: dict[str, Any], parts: tuple[str, ...], lines: Callable[[dict[str, Any]], list[str]]
) -> list[str]:
    """A section's lines, or one line saying which part it needs failed in this run."""
    if _measured(results, *parts):
        return lines(results)
    missing = ", ".join(p for p in parts if not results.get(p))
    return [f'*Not measured in this run: the part {missing} failed (see "Failed parts" below).*']


def _failures(results: dict[str, Any]) -> list[str]:
    failures = results.get("failures") or {}
    if not failures:
        return ["None: every part of this run finished."]
    return [
        "| part | what went wrong (traceback in the log) |",
        "|---|---|",
        *(f"| {part} | {failure['error']} (`{failure['log']}`) |" for part, failure in failures.items()),
    ]


def _embedded(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The embedded pipeline's figures by backend, the default first (empty if not measured)."""
    embedded: dict[str, dict[str, Any]] = results.get("embedded") or {}
    return embedded


def _lag_holds(run: dict[str, Any]) -> bool:
    """The lag target holds only at (95 % of) the rate it is stated for, and under 1 s there."""
    achieved = run.get("paced_achieved_events_per_s", 0)
    return bool(achieved >= 0.95 * run["paced_rate_events_per_s"] and run["lag_p99_ms"]["median"] < 1000)


def _not_measured(target: str) -> str:
    return f"| {target} | not measured: its part failed (Failed parts, below) | **no** |"


def _targets(results: dict[str, Any]) -> list[str]:
    rows = ["| target | measured | holds |", "|---|---|---|"]
    ingest = results.get("ingest")
    at_1000 = _sweep_point(ingest, 1000) if ingest else None
    if at_1000:
        p95 = at_1000["p95_ms"]["median"]
        rows.append(
            f"| POST /events p95 < 100 ms at 1,000 events/s | p95 {_spread(at_1000['p95_ms'])} ms "
            f"| {_holds(p95 < 100)} |"
        )
    inbox_runs = {run["backend"]: run for run in (results.get("inbox") or {}).get("runs", [])}
    for backend in backends.INBOX:
        target = f"GET /inbox p95 < 200 ms, 10,000 undelivered ({backend})"
        if (run := inbox_runs.get(backend)) is None:
            rows.append(_not_measured(target))
            continue
        rows.append(
            f"| GET /inbox p95 < 200 ms, {run['undelivered_events']:,} undelivered ({backend}) "
            f"| p95 {_spread(run['spread']['inbox_p95_ms'])} ms | {_holds(run['inbox_p95_ms'] < 200)} |"
        )
    if ingest:
        status = ingest["status"]["p95_ms"]
        rows.append(
            f"| GET /status < 10 ms (p95, at 1,000 requests/s) | {_spread(status)} ms "
            f"| {_holds(status['median'] < 10)} |"
        )
    embedded = _embedded(results)
    for backend in backends.EMBEDDED:
        sustained_target = f"2,000 events/s sustained, end to end on the embedded pipeline ({backend})"
        lag_target = f"lag p99 < 1 s at 500 events/s ({backend})"
        if (run := embedded.get(backend)) is None:
            rows += [_not_measured(sustained_target), _not_measured(lag_target)]
            continue
        sustained, lag = run["sustained_events_per_s"], run["lag_p99_ms"]
        rows += [
            f"| {sustained_target} | {_spread(sustained)} events/s | {_holds(sustained['median'] >= 2000)} |",
            f"| lag p99 < 1 s at {run['paced_rate_events_per_s']:,} events/s ({backend}) | {_spread(lag)} ms at "
            f"{run.get('paced_achieved_events_per_s', 0):,} events/s achieved | {_holds(_lag_holds(run))} |",
        ]
    if ingest:
        edge = ingest["single"]["events_per_s"]
        rows.append(
            f"| 1,000 events/s sustained at the edge, one core | {_spread(edge)} events/s "
            f"| {_holds(edge['median'] >= 1000)} |"
        )
    return rows + _consumer_targets(results)


# Issue 18: the default consumer alone costs the writer, and a page, what they cost before.
WITHIN = 1.10


def _consumer_targets(results: dict[str, Any]) -> list[str]:
    writer_target = "writer CPU per stored event, the default consumer alone, within 10 % of before consumers"
    inbox_target = "inbox CPU per page, default consumer, unchanged (within 10 % of before consumers)"
    consumers = results.get("consumers")
    if not consumers:
        return [_not_measured(writer_target), _not_measured(inbox_target)]
    before = consumers["before"]
    now = consumers["by_consumers"]["0"]
    was = before["writer_packed"]["cpu_us_per_event"]
    rows = [
        f"| {writer_target} | {_spread(now['cpu_us_per_event_runs'])} µs, was {was} µs "
        f"({now['cpu_us_per_event'] / was:.2f} ×) | {_holds(now['cpu_us_per_event'] <= WITHIN * was)} |"
    ]
    page = _inbox_now(results)
    if page is None:
        part = f"inbox on {backends.EMBEDDED[0]}"
        return [*rows, f"| {inbox_target} | not measured since the consumers work (the part {part}) | **no** |"]
    was_page = before["inbox_dynamodb_local"]["inbox_cpu_ms_per_request"]
    now_page = page["inbox_cpu_ms_per_request"]
    rows.append(
        f"| {inbox_target} | {_spread(page['spread']['inbox_cpu_ms_per_request'])} ms, was {was_page} ms "
        f"({now_page / was_page:.2f} ×) | {_holds(now_page <= WITHIN * was_page)} |"
    )
    return rows


def _inbox_now(results: dict[str, Any]) -> dict[str, Any] | None:
    """This run's inbox on the embedded default's DynamoDB, where the before figure was taken;
    None if that figure is the before figure itself (a run then, not measured again since)."""
    part = f"inbox on {backends.EMBEDDED[0]}"
    if results["when"] <= results["consumers"]["before"]["when"] and part not in results.get("remeasured", {}):
        return None
    runs = (results.get("inbox") or {}).get("runs", [])
    return next((r for r in runs if r["backend"] == backends.EMBEDDED[0]), None)


def _ingest_table(ingest: dict[str, Any]) -> list[str]:
    rows = ["| figure | median (spread) | issue target | holds |", "|---|---|---|---|"]
    single, batch, half = ingest["single"], ingest["batch"], ingest["half_load"]
    rows += [
        f"| bare Litestar handler (ceiling), requests/s | {_spread(ingest['bare_handler_rps'])} | | |",
        f"| POST /events, events/s (closed loop, 256 connections) | {_spread(single['events_per_s'])} | >= 5,000 "
        f"| {_holds(single['events_per_s']['median'] >= 5000)} |",
        f"| POST /events, server CPU µs per event | {_spread(single['cpu_us_per_event'])} | | |",
        f"| POST /events, SQS requests per event | {_spread(single['sqs_requests_per_event'])} | <= 0.1 "
        f"| {_holds(single['sqs_requests_per_event']['median'] <= 0.1)} |",
        f"| p99 at half that rate ({half['target_events_per_s']:,}/s), ms | {_spread(half['p99_ms'])} | < 20 "
        f"| {_holds(half['p99_ms']['median'] < 20)} |",
        f"| POST /events/batch (100 events), events/s | {_spread(batch['events_per_s'])} | >= 40,000 "
        f"| {_holds(batch['events_per_s']['median'] >= 40000)} |",
        f"| POST /events/batch, server CPU µs per event | {_spread(batch['cpu_us_per_event'])} | | |",
    ]
    rows += ["", "| offered events/s | achieved | p50 ms | p95 ms | p99 ms | failures |", "|---|---|---|---|---|---|"]
    for point in ingest["sweep"]:
        rows.append(
            f"| {point['target_events_per_s']:,} | {_spread(point['events_per_s'])} | {point['p50_ms']['median']} "
            f"| {point['p95_ms']['median']} | {point['p99_ms']['median']} | {point['failures']} |"
        )
    return rows


def _comparison(results: dict[str, Any]) -> list[str]:
    ingest, compare, packed = results["ingest"], results["compare"], results["writer"]["writer_packed"]
    ours_edge = ingest["single"]["cpu_us_per_event"]["median"]
    ours_total = ours_edge + packed["cpu_us_per_event"]
    by_design = requests_per_event(results)
    ours_requests = sum(by_design["Triggers (edge + writer)"].values())
    theirs_requests = sum(by_design["FastAPI + PutItem"].values())
    return [
        "| | Triggers (Litestar edge → SQS → writer) | FastAPI + pydantic, PutItem per request |",
        "|---|---|---|",
        f"| events/s on one core, single-event POSTs | {_spread(ingest['single']['events_per_s'])} "
        f"| {_spread(compare['events_per_s'])} |",
        f"| edge CPU per event | {ours_edge} µs | {compare['cpu_us_per_event']['median']} µs |",
        f"| CPU per stored event, whole path | {round(ours_total, 1)} µs (edge + writer) "
        f"| {compare['cpu_us_per_event']['median']} µs |",
        f"| AWS requests per stored event | {round(ours_requests, 4)} | {round(theirs_requests, 4)} |",
        f"| memory of the edge process | {ingest['rss_mib']} MiB | {compare['rss_mib']} MiB |",
        "| what a 2xx means | in SQS; stored exactly once later, deduplicated | in DynamoDB; retries duplicate |",
    ]


def _writer(results: dict[str, Any]) -> list[str]:
    writer = results["writer"]
    packed, single = writer["writer_packed"], writer["writer_single"]
    return [
        f"| writer figure (its DynamoDB: {writer['backend']}) | value |",
        "|---|---|",
        "| CPU per stored event, 20 events a message (target <= 100 µs) "
        f"| {_spread(packed['cpu_us_per_event_runs'])} µs "
        f"({_holds(packed['cpu_us_per_event'] <= 100)}) |",
        f"| CPU per stored event, 1 event a message | {_spread(single['cpu_us_per_event_runs'])} µs |",
        f"| drain rate, 20 / 1 events a message | {packed['events_per_s']:,} / {single['events_per_s']:,} events/s |",
        f"| the DynamoDB endpoint's own BatchWriteItem rate | {writer['batch_write_items_per_s']:,} items/s |",
    ]


def _embedded_table(results: dict[str, Any]) -> list[str]:
    embedded = _embedded(results)
    rows = [
        "| embedded pipeline, unpinned as `triggers up` runs it | " + " | ".join(embedded) + " |",
        "|---|" + "---|" * len(embedded),
    ]

    def row(label: str, value: Callable[[dict[str, Any]], Any]) -> str:
        return f"| {label} | " + " | ".join(str(value(run)) for run in embedded.values()) + " |"

    return [
        *rows,
        row(
            "paced run: offered, achieved events/s",
            lambda r: (
                f"{r['paced_rate_events_per_s']:,}, "
                f"{r.get('paced_achieved_events_per_s', 0):,} ({r['paced_accepted']:,} accepted)"
            ),
        ),
        row("paced run: events the writer logged as stored", lambda r: f"{r['lag_events']:,}"),
        row("lag p50, ms", lambda r: _spread(r["lag_p50_ms"])),
        row("lag p99, ms (target < 1,000)", lambda r: _spread(r["lag_p99_ms"])),
        row(
            "sustained end to end, events/s (a flood of batches; target >= 2,000)",
            lambda r: _spread(r["sustained_events_per_s"]),
        ),
        row(
            "events/s the DynamoDB endpoint stores in the writer's own transactions (45 events, "
            "4 in flight, nothing else running): the ceiling",
            lambda r: f"{r['transact_events_per_s']:,}",
        ),
    ]


def _against_ceiling(backend: str, run: dict[str, Any]) -> str:
    ceiling, sustained = run["transact_events_per_s"], run["sustained_events_per_s"]["median"]
    return f"{backend} {ceiling:,} events/s, where the pipeline sustained {sustained:,} ({sustained / ceiling:.0%})"


def _ceiling(results: dict[str, Any]) -> list[str]:
    """What bounds the sustained rate, said from this run's figures only."""
    embedded, writer = _embedded(results), results.get("writer")
    if not embedded or not writer:
        return []
    writer_us = writer["writer_packed"]["cpu_us_per_event"]
    lines = [
        "**What bounds the sustained rate.** The writer's own CPU is "
        f"{writer_us} µs per stored event (about {round(1e6 / writer_us):,} events/s per core). "
        "Each backend's ceiling is its DynamoDB's rate for the writer's own transactions, "
        "measured alone: "
        + "; ".join(_against_ceiling(backend, run) for backend, run in embedded.items())
        + ". A pipeline that reaches most of its endpoint's ceiling is bound by the endpoint, not by the services.",
    ]
    return [" ".join(lines)]


def _consumers(results: dict[str, Any]) -> list[str]:
    consumers = results["consumers"]
    by_count: dict[str, dict[str, Any]] = consumers["by_consumers"]
    named = [c for c in by_count if c != "0"]
    rows = [
        f"| named consumers per account, besides `default` ({consumers['backend']}) | " + " | ".join(by_count) + " |",
        "|---|" + "---|" * len(by_count),
    ]

    def row(label: str, value: Callable[[dict[str, Any]], Any], counts: list[str] | None = None) -> str:
        cells = [str(value(by_count[c])) if counts is None or c in counts else "" for c in by_count]
        return f"| {label} | " + " | ".join(cells) + " |"

    base = by_count["0"]["cpu_us_per_event"]
    rows += [
        row("writer CPU per stored event, µs", lambda r: _spread(r["cpu_us_per_event_runs"])),
        row("against the default alone", lambda r: f"{r['cpu_us_per_event'] / base:.2f} ×"),
        row(
            "drain rate, events/s (the writer and DynamoDB Local on one core each)", lambda r: f"{r['events_per_s']:,}"
        ),
        row("DynamoDB requests per event", lambda r: r["dynamodb_requests_per_event"]),
        row("of which TransactWriteItems", lambda r: _per_event(r, "dynamodb.TransactWriteItems")),
        row("of which Query (the writer's views of the consumers)", lambda r: _per_event(r, "dynamodb.Query")),
        row("of which UpdateItem (late commits moved)", lambda r: _per_event(r, "dynamodb.UpdateItem")),
        row(
            "TransactWriteItems per event when written again for the write units (against the run's, above)",
            lambda r: r["accounting"]["transactions_per_event"],
        ),
        row(
            "the event itself: items, write units per event",
            lambda r: f"{r['accounting']['event']['items']}, {r['accounting']['event']['write_units']}",
        ),
        row(
            "items written per event per consumer (copy + counter updates)",
            lambda r: f"{_copy(r)['items']} ({_copy(r)['puts']} + {_copy(r)['counter_updates']})",
            named,
        ),
        row(
            "write units per event per consumer (item in the transaction + index entries)",
            lambda r: f"{_copy(r)['write_units']} ({_copy(r)['base_write_units']} + {_copy(r)['index_write_units']})",
            named,
        ),
        row(
            "size of a copy, bytes; index entries per copy",
            lambda r: f"{_copy(r)['put_bytes']:,}; {_copy(r)['index_entries']}",
            named,
        ),
    ]
    return rows


def _copy(run: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = run["accounting"]["copy"]
    return copy


def _per_event(run: dict[str, Any], request: str) -> float:
    count, events = int(run["aws_requests"].get(request, 0)), int(run["events"])
    return round(count / events, 4)


def _consumers_before(results: dict[str, Any]) -> list[str]:
    """The default-only figures against those of the last run before consumers existed."""
    consumers = results["consumers"]
    before, now = consumers["before"], consumers["by_consumers"]["0"]
    speeds = results.get("core_speed_ms", {})
    lines = [
        f"**Before and after.** The code before the consumers work is not run again here: its figures are "
        f"those of the last full run before it ({before['when']}, commit {before['commit']}; "
        "`bench/results/before-consumers.json`): the writer "
        f"{_spread(before['writer_packed']['cpu_us_per_event_runs'])} µs per stored event, inbox CPU "
        f"{_spread(before['inbox_dynamodb_local']['inbox_cpu_ms_per_request_runs'])} ms per page. Today's figure for "
        "the default consumer alone is the 0 column: the same writer path, plus a look-up of each "
        "account's kept view and one Query of the consumers table per account every "
        "`TRIGGERS_CONSUMER_VIEW_S`. The runs are hours apart on a shared machine: the server core's speed "
        f"probe read {before['core_speed_ms']['writer']} ms before that writer part and "
        f"{speeds.get('consumers', '?')} ms before this one ({now['cpu_us_per_event']} µs now).",
    ]
    one = consumers["by_consumers"].get("1")
    if one is not None:
        ratio = one["cpu_us_per_event"] / now["cpu_us_per_event"]
        lines.append(
            f"One named consumer costs the writer {ratio:.2f} × the default alone in this run: each copy is "
            "one more put, in a transaction of its own after the event's, so read as one *named* consumer "
            f"the 10 % target {'holds' if ratio <= WITHIN else 'does not hold'}."
        )
    return [" ".join(lines)]


def _inbox(results: dict[str, Any]) -> list[str]:
    runs = results["inbox"]["runs"]
    rows = [
        "| inbox, 50-event pages | " + " | ".join(r["backend"] for r in runs) + " |",
        "|---|" + "---|" * len(runs),
    ]

    def row(label: str, value: Any) -> str:
        return f"| {label} | " + " | ".join(str(value(r)) for r in runs) + " |"

    rows += [
        row("undelivered events in the account", lambda r: f"{r['undelivered_events']:,}"),
        row(
            "GET /inbox p50 / p95 / p99 ms (wrk, one at a time)",
            lambda r: f"{r['inbox_p50_ms']} / {r['inbox_p95_ms']} / {r['inbox_p99_ms']}",
        ),
        row("p95 spread over runs", lambda r: _spread(r["spread"]["inbox_p95_ms"])),
        row("sampled in turn: GET /inbox p50 ms", lambda r: r["paired_page_p50_ms"]),
        row(
            "sampled in turn: raw Query p50 / p95 ms (same page)",
            lambda r: f"{r['raw_query_p50_ms']} / {r['raw_query_p95_ms']}",
        ),
        row(
            "latency ratio p50, inbox / raw Query (target <= 1.5)",
            lambda r: f"{r['latency_ratio_p50']} ({_holds(r['latency_ratio_p50'] <= 1.5)})",
        ),
        row(
            "sampled in turn: raw Query beside the count, p50 ms (a page's two reads)",
            lambda r: f"{r['raw_reads_p50_ms']} (inbox / these: {r['latency_ratio_p50_to_reads']})",
        ),
        row(
            "sampled in turn: bare Litestar handler, a page's bytes, p50 ms",
            lambda r: f"{r['bare_page_p50_ms']} (floor: (reads + this) / Query = {r['latency_ratio_floor']})",
        ),
        row(
            "inbox CPU per request, ms (target <= 1)",
            lambda r: (
                f"{_spread(r['spread']['inbox_cpu_ms_per_request'])} ({_holds(r['inbox_cpu_ms_per_request'] <= 1)})"
            ),
        ),
        row(
            "inbox CPU per request, ms, 4 requests at a time (1 run)",
            lambda r: f"{r['inbox_cpu_ms_per_request_loaded']} at {r['loaded_requests_per_s']} requests/s",
        ),
        row("kept-alive connections the servers closed (call retried once)", lambda r: r.get("reconnects", 0)),
    ]
    return rows


def _memory(results: dict[str, Any]) -> list[str]:
    rows = ["| process | resident memory after its load |", "|---|---|"]
    if results.get("ingest"):
        rows.append(f"| ingest edge (after the ingest runs) | {results['ingest']['rss_mib']} MiB |")
    for backend, embedded in _embedded(results).items():
        rows += [
            f"| {process} (embedded default, {backend}) | {rss} MiB |" for process, rss in embedded["rss_mib"].items()
        ]
    for run in (results.get("inbox") or {}).get("runs", []):
        rows.append(f"| inbox (on {run['backend']}, {run['undelivered_events']:,} events) | {run['rss_mib']} MiB |")
        rows += [
            f"| {process} (beside that inbox) | {rss} MiB |" for process, rss in run.get("endpoint_rss_mib", {}).items()
        ]
    if results.get("compare"):
        rows.append(f"| FastAPI comparison | {results['compare']['rss_mib']} MiB |")
    return rows


def _speed(results: dict[str, Any]) -> list[str]:
    """The machine's phase before each part, so runs can be read side by side."""
    speeds = results.get("core_speed_ms")
    if not speeds:
        return []
    parts = ", ".join(f"{part} {ms} ms" for part, ms in speeds.items())
    return [
        "**Speed of the server core** before each part (a fixed pure-Python loop, lower is",
        f"faster; `bench/common.py`): {parts}.",
        "",
    ]


def _provenance(results: dict[str, Any]) -> str:
    again = results.get("remeasured")
    if not again:
        return "Every number below comes from that one run."
    parts = ", ".join(f"{part} on {when}" for part, when in again.items())
    return (
        "Every number below comes from the run named below, except the parts measured again "
        f"later into its results (`python -m bench.run --only`): {parts}."
    )


def render(results: dict[str, Any]) -> str:
    versions = ", ".join(f"{name} {v}" for name, v in results["versions"].items())
    mode = "a `--quick` run: one short run per figure" if results["quick"] else "a full run"
    lines = [
        "# Performance",
        "",
        "Generated by `scripts/bench` (`python -m bench.run`) from `bench/results/pipeline.json`;",
        f"edit `bench/report.py`, not this file. {_provenance(results)}",
        "",
        f"**This run**: {results['when']}, {mode}, {results['durations_s'].get('total', '?')} s in all. Machine: "
        f"{results['cpus']} cores ({results['machine']['platform']}), Python {results['python']}; {versions}.",
        "",
        "**How**: each server runs alone on core 0 (`taskset`); wrk (C) and the helpers run on core 1.",
        "The ingest edge enqueues to a minimal SQS endpoint (`bench/fake_aws.py`, the real JSON",
        "protocol, nothing kept), so SQS is not the bottleneck; moto would measure itself. The",
        "comparison service writes to the same fake endpoint. The writer and the embedded default",
        "run as `triggers up` runs them: SQS on moto, DynamoDB on AWS's DynamoDB Local, beside",
        "the fallback without Java (moto for both) in the same run; the inbox on DynamoDB Local,",
        "moto and dynalite (a fast DynamoDB-compatible endpoint; `bench/backends.py`). Figures",
        "are medians of several runs with their range in brackets, unless marked (1 run).",
        "",
        "**Noise**: this is a shared 2-core virtual machine. Back-to-back 5 s runs of the same",
        "server differ by up to ±15 %, and whole runs an hour apart by more: on 2026-11-29 full",
        "runs of nearly the same code gave single-event medians from 4,472 to 6,069 events/s",
        "(the FastAPI comparison moved from 647 to 907 between two of them). Read the ranges,",
        "and compare figures within one run, not across runs.",
        "",
        *_speed(results),
        "## The targets",
        "",
        *_targets(results),
        "",
        "## Ingest edge",
        "",
        *_section(results, ("ingest",), lambda r: _ingest_table(r["ingest"])),
        "",
        "The sweep paces each wrk connection: after every answer it waits a random time,",
        "exponentially distributed, so connections behave as independent producers (Poisson-like",
        "arrivals); the mean wait is set from the latency of a 2 s probe. When latency grows with",
        "load, a connection's period grows with it and",
        "the achieved rate falls below the offered one: above ~3,000 events/s the sweep measures",
        "latency under load, and the closed-loop figure above is the capacity.",
        "",
        f"![throughput]({IMAGES}/throughput_vs_offered_load.png)",
        "",
        f"![latency]({IMAGES}/latency_percentiles.png)",
        "",
        "## Against the usual design",
        "",
        "The service users would otherwise build: FastAPI + pydantic, the same cached key check,",
        "one DynamoDB PutItem per event through aiobotocore (`bench/fastapi_app.py`, served by",
        "uvicorn with uvloop and httptools), measured the same way in the same run.",
        "",
        *_section(results, ("ingest", "compare", "writer"), _comparison),
        "",
        f"![requests per event]({IMAGES}/aws_requests_per_event.png)",
        "",
        "## Writer and end to end",
        "",
        *_section(results, ("writer",), _writer),
        "",
        *_section(results, ("embedded",), _embedded_table),
        "",
        "Lag is measured by the writer when it has stored an event: now minus the time the edge",
        "received it; each event counts with the worst lag of its batch (an upper bound). The lag",
        "runs start after 5 s of the same load (a cold JVM and cold connections are start-up).",
        "",
        *_section(results, ("writer",), _ceiling),
        "",
        f"![lag]({IMAGES}/lag_over_time.png)",
        "",
        "## Consumers",
        "",
        "The writer pinned to its own core as above, with k named consumers of every type on each",
        "of the 10 accounts (created through `ConsumerRegistry` before the queue is filled, starting",
        "then), draining 1 KB events, 20 a message; its CPU counts until every consumer's partition",
        "holds every event (`ConsumerRegistry.undelivered`). The runs of each k take turns, after",
        "one run that is not counted (`bench/consumers.py`).",
        "",
        *_section(results, ("consumers",), _consumers),
        "",
        "**Write units are computed, not metered** (DynamoDB Local meters nothing): the run's",
        "first batches (1,000 events, the sizes the writer's log shows) are written again by the",
        "writer's own store in the bench's process, through a client that keeps every transaction",
        "it sends, attempts that conflicted included. Each item is sized by DynamoDB's rules",
        "(attribute names and values in bytes, numbers about a byte per two digits); a write in a",
        "transaction costs 2 units per KB of the item, rounded up; a new item that holds an",
        "index's key attributes adds one entry to that index, 1 unit per KB of what it projects",
        "(every attribute). A copy holds the keys of all four inbox indexes (the two 0.3 position",
        "indexes and the two 0.2 ones still kept for upgrades), so at these sizes it costs 4 units",
        "in the transaction and 4 × 2 in its indexes; its counter updates are shared by the copies",
        "of one consumer in one transaction. The event's own items are its put, its dedup claim and",
        "its share of the account's counter updates.",
        "",
        *_section(results, ("consumers",), _consumers_before),
        "",
        "## Inbox",
        "",
        *_section(results, ("inbox",), _inbox),
        "",
        "The rows marked *sampled in turn* are measured together, in runs of 20 calls of each",
        "kind in turn, so that the page and its yardstick see the same phase of the machine; the",
        "ratio comes from them. A page makes two storage reads at once, the Query and the",
        "consistent Query of its counter. DynamoDB serves them in parallel; dynalite is one",
        'Node.js thread and serves them one after the other, which the row "raw Query beside the',
        'count" measures from a bare client. The "floor" adds what a bare Litestar handler',
        "returning a page's bytes costs on the same server: no inbox, however lean, could have a",
        "lower ratio on this machine and endpoint. The inbox's own share is its latency over",
        "the reads and that handler. CPU per request is measured under wrk, one request at a",
        "time (the target) and with four at a time: on this",
        "virtual machine a core left idle between requests makes each one pay a cold wake-up,",
        "which is why the figure on moto (300 ms between requests) is the highest.",
        "",
        "## Memory",
        "",
        *_memory(results),
        "",
        "The edge and the inbox run granian with one worker: two processes (server and worker)",
        "counted together, the worker's Rust runtime on its own thread (`shared/web/serving.py`). moto",
        "keeps every item in memory, so its size follows what was stored; DynamoDB Local is a JVM",
        "(`-inMemory`), whose heap grows to what the JVM allows before it collects.",
        "",
        "Memory over a 10-minute steady load (the soak) is in [soak.md](soak.md).",
        "",
        "## Failed parts",
        "",
        *_failures(results),
        "",
        "## Time taken by each part of the run",
        "",
        "| part | seconds |",
        "|---|---|",
        *(f"| {part} | {seconds} |" for part, seconds in results["durations_s"].items()),
        "",
    ]
    return "\n".join(lines)


def write(results_path: Path, docs: Path) -> Path:
    results = json.loads(results_path.read_text())
    (docs / IMAGES).mkdir(parents=True, exist_ok=True)
    for name, (draw, parts) in PLOTS.items():
        if _measured(results, *parts):
            draw(results, docs / IMAGES / name)
    text = render(results)
    target = docs / "performance.md"
    target.write_text(text)
    results_path.with_suffix(".md").write_text(text)
    return target


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results" / "pipeline.json"
    print(write(path, ROOT / "docs"))
