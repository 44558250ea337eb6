"""Running the whole thing: `triggers up` end to end on each backend, and an ingest edge whose SQS
goes away."""

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
import msgspec
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
    """Running: gone or a zombie is not. An orphan is reaped by PID 1, which here polls about
    once a second and under load far less often (a CI run still listed an exited worker 10 s on)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def _up_env(tmp_path_factory: pytest.TempPathFactory, **extra: str) -> dict[str, str]:
    """What a user's shell gives `triggers up`: no TRIGGERS_* of the test stack's."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("TRIGGERS_")},
        "TRIGGERS_INGEST_PORT": str(processes.free_port()),
        "TRIGGERS_INBOX_PORT": str(processes.free_port()),
        "TRIGGERS_BCRYPT_ROUNDS": "4",
        "TRIGGERS_WRITER_WAIT_TIME_S": "1",
        "TRIGGERS_INBOX_SETTLE_MS": "500",  # the page shows the event sooner than the default 3 s
        "TRIGGERS_STATE_DIR": str(tmp_path_factory.mktemp("state")),
        **extra,
    }


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "shared.ops.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


# What `triggers up` says when it falls back to moto, by the Java it found.
FALLBACK_LINES = {
    "none": "no Java on PATH: DynamoDB runs on moto too",
    "old": "DynamoDB Local needs Java 17 or later (java -version: 11): DynamoDB runs on moto too",
}
_JAVA_11 = "#!/bin/sh\necho 'openjdk version \"11.0.21\" 2023-10-17' >&2\n"


@pytest.mark.parametrize(
    ("args", "java", "backend"),
    [
        ((), "this machine's", "dynamodb-local"),
        (("--backend", "moto"), "this machine's", "moto"),
        ((), "none", "moto"),
        ((), "old", "moto"),
    ],
    ids=["default", "backend-moto", "no-java", "java-11"],
)
def test_up_runs_the_curl_tour_and_stops_cleanly(
    tmp_path_factory: pytest.TempPathFactory, args: tuple[str, ...], java: str, backend: str
) -> None:
    """The README's tour on what `triggers up` starts: by default DynamoDB Local (Java 17 is on
    this machine's PATH), moto when asked, when there is no Java, or when it is older than
    DynamoDB Local needs (one line says so)."""
    env = _up_env(tmp_path_factory)
    if java != "this machine's":
        bin_dir = tmp_path_factory.mktemp("path")  # no npm either
        env["PATH"] = str(bin_dir)
        if java == "old":
            (bin_dir / "java").write_text(_JAVA_11)
            (bin_dir / "java").chmod(0o755)
    ingest, inbox = f"http://127.0.0.1:{env['TRIGGERS_INGEST_PORT']}", f"http://127.0.0.1:{env['TRIGGERS_INBOX_PORT']}"
    up = subprocess.Popen(
        [sys.executable, "-m", "shared.ops.cli", "up", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert up.stdout is not None
        printed, key = [], None
        for line in up.stdout:
            printed.append(line)
            if "export TRIGGERS_KEY=" in line:
                key = line.split("=", 1)[1].strip()
                break
        assert key, f"triggers up never printed a key: {printed}"
        said = [line for line in printed if "Java" in line]
        assert len(said) == (1 if java in FALLBACK_LINES else 0), printed
        assert all(line.startswith(FALLBACK_LINES[java]) for line in said)
        children = _descendants(up.pid)
        assert len(children) >= 4  # moto, ingest, inbox, writer, and the servers' workers
        javas = [pid for pid in children if "DynamoDBLocal.jar" in _cmdline(pid)]
        assert len(javas) == (1 if backend == "dynamodb-local" else 0)

        # The state file and `up --status` say which backend runs.
        status = _cli(env, "up", "--status")
        assert status.returncode == 0
        assert f"backend {backend}" in status.stdout
        state = msgspec.json.decode(Path(env["TRIGGERS_STATE_DIR"], "embedded.json").read_bytes())
        assert state["backend"] == backend
        assert (state.get("dynamodb_endpoint_url") is not None) == (backend == "dynamodb-local")

        # Another `triggers` command finds the embedded endpoints on its own (the keys table
        # is on DynamoDB Local by default: it is found only if both endpoints are handed on).
        other = _cli(env, "keys", "list")
        assert other.returncode == 0, other.stderr
        assert key.split("_")[1] in other.stdout

        headers = {"Authorization": f"Bearer {key}"}
        sent_event = {"event_type": "order.created", "payload": {"order_id": 42, "tour": backend}}
        sent = httpx.post(f"{ingest}/events", json=sent_event, headers=headers)
        assert sent.status_code == 202
        event_id = sent.json()["event_id"]
        started = time.monotonic()
        page = wait_until(
            lambda: (p := httpx.get(f"{inbox}/inbox", headers=headers).json())["events"] and p, timeout_s=15
        )
        assert isinstance(page, dict), "the event never showed on the inbox's page"
        print(f"{backend}: event on the inbox's page {time.monotonic() - started:.2f} s after its 202")
        assert page["total_undelivered"] == 1
        assert [(e["event_id"], e["event_type"], e["payload"]) for e in page["events"]] == [
            (event_id, "order.created", sent_event["payload"])
        ]
        assert httpx.delete(f"{inbox}/events/{event_id}", headers=headers).status_code == 204
        after = httpx.get(f"{inbox}/inbox", headers=headers).json()
        assert (after["events"], after["total_undelivered"]) == ([], 0)

        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=30) == 0
        assert not [pid for pid in children if _alive(pid)]
        assert _port_is_free(int(env["TRIGGERS_INGEST_PORT"]))
        assert _port_is_free(int(env["TRIGGERS_INBOX_PORT"]))
        assert not os.path.exists(os.path.join(env["TRIGGERS_STATE_DIR"], "embedded.json"))
        assert _cli(env, "up", "--status").returncode == 1
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_up_on_dynamodb_local_without_java_says_why_and_starts_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = _up_env(tmp_path_factory, PATH=str(tmp_path_factory.mktemp("no-java")))
    refused = _cli(env, "up", "--backend", "dynamodb-local")
    assert refused.returncode == 1
    assert "--backend dynamodb-local: no Java on PATH" in refused.stderr
    assert not os.path.exists(os.path.join(env["TRIGGERS_STATE_DIR"], "embedded.json"))
    assert _port_is_free(int(env["TRIGGERS_INGEST_PORT"]))


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
    assert wait_until(lambda: not any(_alive(worker) for worker in workers), timeout_s=10)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{service.url}/status", timeout=2)
