"""How the HTTP services are served: granian, options in one place.

``triggers run ingest|inbox`` serves with ``serve()``; the benchmarks start the services,
and the bare handlers they are compared with, with ``command()``: the same server, options
and all, on granian's command line.
"""

from __future__ import annotations

import sys

from granian import Granian
from granian.constants import Interfaces, Loops, RuntimeModes

LOOP = Loops.uvloop
# Granian's Rust runtime on the worker's own thread. The default for ASGI gives it a thread
# of its own, and each request crosses between the two threads. Measured on the inbox, one
# request at a time against dynalite, three alternating runs: p50 2.14 / 2.46 / 1.93 ms
# against 2.57 / 3.12 / 2.36, CPU per page 0.89 / 1.03 / 0.75 ms against 1.05 / 1.12 /
# 0.83. Pages per second with the storage answered from memory (5,257 / 5,494 / 5,286
# against 5,090 / 5,460 / 5,382) and the edge's single-event throughput (5,960 / 6,796 /
# 6,497 against 6,408 / 5,515 / 6,275) were the same within the machine's noise.
RUNTIME_MODE = RuntimeModes.st


def serve(factory: str, host: str, port: int, workers: int) -> None:
    Granian(
        factory,
        factory=True,
        interface=Interfaces.ASGI,
        address=host,
        port=port,
        workers=workers,
        loop=LOOP,
        runtime_mode=RUNTIME_MODE,
        log_enabled=False,  # structlog writes the canonical request line; no access log
    ).serve()


def command(factory: str, port: int) -> list[str]:
    """``serve(factory, "127.0.0.1", port, 1)`` as a command line."""
    options = ["--interface", "asgi", "--loop", LOOP.value, "--runtime-mode", RUNTIME_MODE.value, "--no-log"]
    return [sys.executable, "-m", "granian", "--factory", *options, "--port", str(port), factory]
