"""Running the whole thing: `triggers up` end to end, and an ingest edge whose SQS goes away."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.local import processes
from shared.settings import settings_from_env
from tests.conftest import Stack, init_resources, make_key, start_service, wait_until


@pytest.fixture
def private_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], Stack]]:
    """A moto server of this test's own, so stopping it harms no other test."""
    process, endpoint = processes.start_moto()
    env = {
        "TRIGGERS_AWS_ENDPOINT_URL": endpoint,
        "TRIGGERS_BCRYPT_ROUNDS": "4",
        "TRIGGERS_KEY_CACHE_TTL_S": "300",  # the key stays verified: what fails is SQS
        "TRIGGERS_ENQUEUE_TIMEOUT_S": "3",
        "TRIGGERS_STATE_DIR": str(tmp_path_factory.mktemp("state")),
        "TRIGGERS_LOG_LEVEL": "WARNING",
    }
    settings = settings_from_env(env)
    init_resources(settings)
    yield process, Stack(settings, env, Path(env["TRIGGERS_STATE_DIR"]))
    processes.stop([process])


def test_sqs_unreachable_gives_503_with_retry_after_never_2xx(
    private_moto: tuple[subprocess.Popen[bytes], Stack], http: httpx.Client
) -> None:
    moto, stack = private_moto
    key = make_key(stack)
    ingest = start_service(stack, "ingest")
    try:
        event = {"event_type": "x", "payload": {}}
        assert http.post(f"{ingest.url}/events", json=event, headers=key.headers).status_code == 202
        processes.stop([moto])
        for _ in range(3):
            response = http.post(f"{ingest.url}/events", json=event, headers=key.headers)
            assert response.status_code == 503
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["error_code"] == "SERVICE_UNAVAILABLE"
        batch = http.post(f"{ingest.url}/events/batch", json={"events": [event, event]}, headers=key.headers)
        assert batch.status_code in (207, 503)
        assert all("error" in r for r in batch.json().get("results", [{"error": {}}]))
        assert http.get(f"{ingest.admin_url}/ready").status_code == 503
        assert http.get(f"{ingest.url}/status").status_code == 200
    finally:
        processes.stop([ingest.process])


def _port_is_free(port: int) -> bool:
    """Nothing listens, and a new server could bind it (with SO_REUSEADDR, as servers do)."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (servers fork workers of their own)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_up_runs_the_pipeline_and_stops_cleanly(tmp_path_factory: pytest.TempPathFactory) -> None:
    ingest_port, inbox_port = processes.free_port(), processes.free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")},
        "TRIGGERS_INGEST_PORT": str(ingest_port),
        "TRIGGERS_INBOX_PORT": str(inbox_port),
        "TRIGGERS_BCRYPT_ROUNDS": "4",
        "TRIGGERS_WRITER_WAIT_TIME_S": "1",
        "TRIGGERS_STATE_DIR": str(tmp_path_factory.mktemp("state")),
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "shared.ops.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert up.stdout is not None
        key = None
        for line in up.stdout:
            if "export TRIGGERS_KEY=" in line:
                key = line.split("=", 1)[1].strip()
                break
        assert key, "triggers up never printed a key"
        children = _descendants(up.pid)
        assert len(children) >= 4  # moto, ingest, inbox, writer, and the servers' workers

        # Another `triggers` command finds the embedded endpoint on its own.
        other = subprocess.run(
            [sys.executable, "-m", "shared.ops.cli", "keys", "list"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert key.split("_")[1] in other.stdout

        headers = {"Authorization": f"Bearer {key}"}
        sent = httpx.post(
            f"http://127.0.0.1:{ingest_port}/events",
            json={"event_type": "up", "payload": {"ok": True}},
            headers=headers,
        )
        assert sent.status_code == 202
        started = time.monotonic()
        arrived = wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{inbox_port}/inbox", headers=headers).json()["total_undelivered"] == 1,
            timeout_s=10,
        )
        assert arrived
        print(f"event visible in the inbox {time.monotonic() - started:.2f} s after its 202")

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        assert not [pid for pid in children if _alive(pid)]
        assert _port_is_free(ingest_port)
        assert _port_is_free(inbox_port)
        assert not os.path.exists(os.path.join(env["TRIGGERS_STATE_DIR"], "embedded.json"))
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


@pytest.mark.parametrize("part", ["ingest", "inbox"])
def test_a_server_killed_hard_leaves_no_worker_serving_its_port(stack: Stack, part: str) -> None:
    """granian forks its workers; without a death signal they would outlive a SIGKILLed server."""
    service = start_service(stack, part)
    workers = [
        int(pid) for pid in Path(f"/proc/{service.process.pid}/task/{service.process.pid}/children").read_text().split()
    ]
    assert workers
    service.process.send_signal(signal.SIGKILL)
    service.process.wait(10)
    assert wait_until(lambda: not any(Path(f"/proc/{worker}").exists() for worker in workers), timeout_s=10)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{service.url}/status", timeout=2)
