"""The local AWS endpoints the benchmarks run against, started as `triggers up` starts them.

``dynamodb-local`` is the embedded default (SQS on moto, DynamoDB on AWS's DynamoDB Local),
``moto`` its fallback without Java (both on moto): `triggers up`'s backends
(shared.local.embedded). ``dynalite`` is a fast DynamoDB-compatible endpoint from npm (no
transactions, no TTL API; no SQS) for the inbox only. With ``cpu``, every process of a
backend (and every thread, the JVM's included) runs on that core.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bench.common import pinned, rss_mib
from shared.local import dynamodb_local, embedded, processes

Backend = embedded.Backend | Literal["dynalite"]
# The DynamoDB of the embedded default first: what users get when Java is there.
EMBEDDED: tuple[embedded.Backend, ...] = embedded.BACKENDS
# The inbox on the embedded default's DynamoDB, its fallback, and a fast DynamoDB-compatible yardstick.
INBOX: tuple[Backend, ...] = (*EMBEDDED, "dynalite")
UNREACHABLE = "http://127.0.0.1:9"  # dynalite has no SQS; nothing that calls it is measured there


@dataclass
class Endpoints:
    """What runs for one backend: its processes by role, and the settings that reach them."""

    backend: Backend
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def rss_mib(self) -> dict[str, float]:
        return {role: rss_mib(process.pid) for role, process in self.processes.items()}


def _prefix(cpu: str | None) -> list[str]:
    return pinned(cpu, []) if cpu is not None else []


def _start_dynamodb(endpoints: Endpoints, cpu: str | None) -> str:
    """DynamoDB Local or dynalite, registered before it is waited for (so a start that times
    out is stopped with the rest)."""
    if endpoints.backend == "dynamodb-local":
        why = dynamodb_local.missing()
        if why is not None:
            raise RuntimeError(f"DynamoDB Local cannot run here: {why}")
        process, url = dynamodb_local.launch(_prefix(cpu))
        endpoints.processes["dynamodb-local"] = process
        dynamodb_local.ready(process, url)
        return url
    home = Path(__file__).resolve().parent / ".node"
    binary = processes.npm_installed("dynalite@3", home, ".bin/dynalite")
    port = processes.free_port()
    process = processes.spawn([*_prefix(cpu), str(binary), "--port", str(port)], quiet=True)
    endpoints.processes["dynalite"] = process
    url = f"http://127.0.0.1:{port}"
    processes.wait_http(f"{url}/", 30, process)
    return url


@contextmanager
def running(backend: Backend, cpu: str | None = None) -> Iterator[Endpoints]:
    """Start the backend's endpoints; stop them on the way out, whatever happened."""
    endpoints = Endpoints(backend)
    try:
        sqs = UNREACHABLE
        if backend != "dynalite":
            moto, sqs = processes.start_moto(prefix=_prefix(cpu))  # stops its child if it does not start
            endpoints.processes["moto"] = moto
        endpoints.env["TRIGGERS_SQS_ENDPOINT_URL"] = sqs
        endpoints.env["TRIGGERS_DYNAMODB_ENDPOINT_URL"] = sqs if backend == "moto" else _start_dynamodb(endpoints, cpu)
        yield endpoints
    finally:
        processes.stop(list(endpoints.processes.values()))
