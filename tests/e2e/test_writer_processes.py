"""`triggers run writer --processes N`: N writer processes under one supervisor, as operators run it.

Each test has its own queues and tables (``private_stack``) and its own edge and inbox on them,
so the only writers that can store its events are the supervised ones.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.local import processes
from tests.conftest import Service, Stack, make_key, private_stack, start_service, wait_until

WRITERS = 2
EVENTS = 24


@pytest.fixture
def own(stack: Stack) -> Stack:
    return private_stack(stack)


@pytest.fixture
def own_ingest(own: Stack) -> Iterator[Service]:
    service = start_service(own, "ingest")
    yield service
    processes.stop([service.process])


@pytest.fixture
def own_inbox(own: Stack) -> Iterator[Service]:
    service = start_service(own, "inbox")
    yield service
    processes.stop([service.process])


@pytest.fixture
def supervisor(own: Stack, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The supervising `triggers run writer --processes 2`, and the file its output goes to."""
    output = tmp_path / "writers.log"
    with output.open("ab") as log:
        process = processes.spawn(
            [sys.executable, "-m", "shared.ops.cli", "run", "writer", "--processes", str(WRITERS)], own.env, output=log
        )
    yield process, output
    processes.stop([process])


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _writers(supervisor: subprocess.Popen[bytes]) -> list[int]:
    writers = wait_until(lambda: len(found := _children(supervisor.pid)) == WRITERS and found)
    assert isinstance(writers, list), f"the supervisor never had {WRITERS} writer processes"
    return writers


def _whole_inbox(http: httpx.Client, inbox: Service, headers: dict[str, str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = http.get(f"{inbox.url}/inbox", params=params, headers=headers).json()
        events += page["events"]
        if not page["has_more"]:
            return events
        params["cursor"] = page["next_cursor"]


def test_supervised_writers_store_every_event_once_and_stop_together_on_sigterm(
    http: httpx.Client,
    own: Stack,
    own_ingest: Service,
    own_inbox: Service,
    supervisor: tuple[subprocess.Popen[bytes], Path],
) -> None:
    process, _ = supervisor
    writers = _writers(process)
    key = make_key(own)
    sent = {}
    for n in range(EVENTS):
        answer = http.post(
            f"{own_ingest.url}/events",
            json={"event_type": "supervised", "payload": {"n": n}},
            headers={**key.headers, "Idempotency-Key": f"k{n}"},
        )
        assert answer.status_code == 202, answer.text
        sent[answer.json()["event_id"]] = n

    def total() -> int:
        page = http.get(f"{own_inbox.url}/inbox", params={"limit": 1}, headers=key.headers).json()
        count: int = page["total_undelivered"]
        return count

    assert wait_until(lambda: total() == EVENTS)
    stored = _whole_inbox(http, own_inbox, key.headers)
    assert {e["event_id"]: e["payload"]["n"] for e in stored} == sent
    assert len(stored) == EVENTS

    # A producer's retry of a stored event: one of the writers finds the duplicate and makes
    # its new id an alias of the original.
    again = http.post(
        f"{own_ingest.url}/events",
        json={"event_type": "supervised", "payload": {"n": 0}},
        headers={**key.headers, "Idempotency-Key": "k0"},
    )
    assert again.status_code == 202
    original = next(event_id for event_id, n in sent.items() if n == 0)

    def resolved() -> object:
        answer = http.get(f"{own_inbox.url}/events/{again.json()['event_id']}", headers=key.headers)
        return answer.status_code == 200 and answer.json()["event_id"]

    assert wait_until(resolved) == original

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert not any(_alive(pid) for pid in writers)
    assert total() == EVENTS  # stopping lost nothing and stored nothing twice


def test_a_writer_that_dies_stops_the_others_and_the_supervisor_fails(
    supervisor: tuple[subprocess.Popen[bytes], Path],
) -> None:
    process, output = supervisor
    first, second = _writers(process)
    os.kill(first, signal.SIGKILL)  # a crash, not a request to stop
    assert process.wait(timeout=30) == 1
    assert not _alive(second), "the surviving writer was left running without its supervisor"
    assert "a child process exited with -9; stopping" in output.read_text()
