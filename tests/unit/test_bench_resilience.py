"""The benchmark run survives its parts: a failed part is recorded and the next one runs, every
finished part is on disk at once, and a kept-alive connection the server drops is retried once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from bench import backends, report
from bench.common import KeptAlive
from bench.run import Run, measure, part_names

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def test_a_failed_part_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    run = Run(quick=True, directory=tmp_path)

    def broken() -> None:
        raise RuntimeError("the endpoint closed the connection")

    run.part("first", lambda: {"figure": 1}, run.keep_as("first"))
    run.part("second", broken, run.keep_as("second"))
    run.part("third", lambda: {"figure": 3}, run.keep_as("third"))

    saved = json.loads((tmp_path / "pipeline.json").read_text())
    assert (saved["first"], saved["third"]) == ({"figure": 1}, {"figure": 3})
    assert "second" not in saved
    assert saved["failures"]["second"]["error"] == "RuntimeError: the endpoint closed the connection"
    assert "Traceback" in Path(saved["failures"]["second"]["log"]).read_text()
    assert set(saved["durations_s"]) == {"first", "second", "third"}


def test_each_finished_part_is_on_disk_before_the_next_one_starts(tmp_path: Path) -> None:
    run = Run(quick=True, directory=tmp_path)
    run.part("first", lambda: {"figure": 1}, run.keep_as("first"))

    def second() -> None:
        on_disk = json.loads((tmp_path / "pipeline.json").read_text())
        assert on_disk["first"] == {"figure": 1}
        raise KeyboardInterrupt  # a run stopped in the middle of a part

    with pytest.raises(KeyboardInterrupt):
        run.part("second", second, run.keep_as("second"))
    assert json.loads((tmp_path / "pipeline.json").read_text())["first"] == {"figure": 1}


async def _server(answers: list[int]) -> tuple[asyncio.Server, str]:
    """The n-th connection answers ``answers[n]`` requests (0 after the list), then closes."""
    connections = iter(answers)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(next(connections, 0)):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(OK)
            await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/inbox?limit=50"


async def test_a_connection_the_server_dropped_is_retried_once_on_a_new_one() -> None:
    server, url = await _server([1, 1])
    async with server:
        client = KeptAlive(url, {"Authorization": "Bearer key"})
        assert await client.get_checked() is False
        assert await client.get_checked() is True  # the first connection was dropped: a new one answered
        assert client.reconnects == 1
        client.close()


async def test_a_second_drop_in_a_row_is_an_error() -> None:
    server, url = await _server([1])
    async with server:
        client = KeptAlive(url, {})
        await client.get_checked()
        with pytest.raises(asyncio.IncompleteReadError):
            await client.get_checked()
        client.close()


async def test_a_first_connection_that_fails_is_not_a_reconnect() -> None:
    server, url = await _server([0])
    async with server:
        client = KeptAlive(url, {})
        with pytest.raises(asyncio.IncompleteReadError):
            await client.get_checked()
        assert client.reconnects == 0
        client.close()


def test_the_report_of_a_run_stopped_after_its_first_part_names_what_was_not_measured() -> None:
    results = {
        "when": "2026-12-02T06:00:00Z",
        "python": "3.11",
        "cpus": 2,
        "quick": True,
        "machine": {"platform": "linux", "processor": "x86_64"},
        "versions": {},
        "durations_s": {"ingest": 1.0},  # no total: the run was stopped
        "core_speed_ms": {},
        "failures": {"ingest": {"error": "RuntimeError: wrk exited", "log": "failed-ingest.txt"}},
    }

    text = report.render(results)

    for backend in backends.INBOX:
        assert f"| GET /inbox p95 < 200 ms, 10,000 undelivered ({backend}) | not measured" in text
    for backend in backends.EMBEDDED:
        assert f"end to end on the embedded pipeline ({backend}) | not measured" in text
    assert "| ingest | RuntimeError: wrk exited (`failed-ingest.txt`) |" in text


def test_only_measures_the_parts_named_and_keeps_every_other_figure(tmp_path: Path) -> None:
    first = Run(quick=True, directory=tmp_path)
    first.part("first", lambda: {"figure": 1}, first.keep_as("first"))
    first.part("second", lambda: {"figure": 2}, first.keep_as("second"))
    when = json.loads((tmp_path / "pipeline.json").read_text())["when"]

    again = Run(quick=True, directory=tmp_path, only={"second"})
    again.part("first", lambda: {"figure": 10}, again.keep_as("first"))
    again.part("second", lambda: {"figure": 20}, again.keep_as("second"))

    saved = json.loads((tmp_path / "pipeline.json").read_text())
    assert (saved["first"], saved["second"]) == ({"figure": 1}, {"figure": 20})
    assert saved["when"] == when  # the run's own date; the part measured again has its own
    assert set(saved["remeasured"]) == {"second"}
    assert "measured again later" in report._provenance(saved)


def test_only_refuses_to_mix_a_quick_part_into_a_full_run(tmp_path: Path) -> None:
    Run(quick=False, directory=tmp_path).save()
    with pytest.raises(SystemExit, match="full"):
        Run(quick=True, directory=tmp_path, only={"writer"})


def test_every_part_a_run_measures_can_be_named_to_only() -> None:
    class Names(Run):
        def __init__(self) -> None:
            self.results, self.logs = {}, Path("logs")  # the parts are named, never run
            self.names: list[str] = []

        def part(self, name: str, step: object, keep: object) -> None:
            self.names.append(name)

    names = Names()
    measure(names, quick=True)
    assert names.names == part_names()
