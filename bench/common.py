"""What every benchmark needs: pinned processes, CPU accounting, wrk runs, result files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.aws.clients import open_clients
from shared.keys.admin import create_key, new_account_id
from shared.keys.model import Scope
from shared.keys.store import DynamoKeyStore
from shared.local import processes
from shared.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
SERVER_CPU = "0"  # the measured server gets core 0 alone
LOAD_CPU = "1"  # load generator and helpers share core 1


def ensure_wrk() -> str:
    """wrk is the load generator (a C program: it does not steal the measured core's time)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
        found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is needed: apt-get install wrk")
    return found


def pinned(cpu: str, args: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *args] if shutil.which("taskset") else args


def spawn_pinned(cpu: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return processes.spawn(pinned(cpu, args), env, quiet=True)


def _descendants(pid: int) -> list[int]:
    """The process and all its descendants; threads and processes may end while we look."""
    found = [pid]
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                for child in (task / "children").read_text().split():
                    found += _descendants(int(child))
    return found


# A fixed pure-Python loop, timed on the server core: this shared machine has slow and fast
# phases (±20 % for the same loop within an hour), and the figures of a run move with them.
_SPEED_PROBE = "import time\nt = time.perf_counter()\nfor i in range(3_000_000): pass\nprint(time.perf_counter() - t)"


def core_speed_ms() -> float:
    """Milliseconds the probe loop takes on the server core now (median of three; lower is faster)."""
    timings = []
    for _ in range(3):
        command = pinned(SERVER_CPU, [sys.executable, "-c", _SPEED_PROBE])
        timings.append(float(subprocess.run(command, capture_output=True, text=True, check=True).stdout))
    return round(statistics.median(timings) * 1000, 1)


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants (server workers), every thread.

    Summed from each thread's schedstat, in nanoseconds: /proc/<pid>/stat counts in clock
    ticks of 10 ms, as coarse as a whole run of the inbox on moto (15 pages of about a
    millisecond each, so its figure jumped between 1.43 and 2.0 ms: two ticks over 14 or
    10 pages). A thread that ends during a measurement takes its time with it; the
    servers' threads live as long as their process.
    """
    total_ns = 0
    for member in _descendants(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for task in Path(f"/proc/{member}/task").iterdir():
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    total_ns += int((task / "schedstat").read_text().split()[0])
    return total_ns / 1e9


def rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (server workers), in MiB."""
    total_kib = 0
    for member in _descendants(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
    return round(total_kib / 1024, 1)


_LUA_TEMPLATE = """
wrk.method = "{method}"
{body}
{headers}
{delay}
done = function(summary, latency, requests)
  local out = io.open("{out}", "w")
  out:write(string.format('{{"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, '
    .. '"p50_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}}',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99), latency.max))
  out:close()
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    non2xx: int
    errors: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def run_wrk(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    connections: int,
    seconds: float,
    delay_ms: float | None = None,
    method: str = "POST",
) -> WrkResult:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        script = Path(tmp) / "script.lua"
        lua_headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
        # Exponential waits (mean delay_ms) make the connections independent producers, as in
        # production: with a fixed wait, connections answered by the same SQS batch come back
        # in lockstep and the edge sees waves of simultaneous requests that no real load has.
        # wrk truncates the wait to whole milliseconds: rounding keeps the mean.
        wait = f"math.floor(-math.log(1 - math.random()) * {delay_ms} + 0.5)"
        delay = f"function delay() return {wait} end" if delay_ms else ""
        lua_body = f"wrk.body = [==[{body.decode()}]==]" if body else ""
        script.write_text(_LUA_TEMPLATE.format(method=method, body=lua_body, headers=lua_headers, delay=delay, out=out))
        subprocess.run(
            pinned(
                LOAD_CPU,
                [ensure_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(script), url],
            ),
            check=True,
            capture_output=True,
        )
        data = json.loads(out.read_text())
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        non2xx=data["non2xx"],
        errors=data["errors"],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p95_ms=data["p95_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )


def summarize(values: list[float]) -> dict[str, float]:
    """Median of repeated runs, with their spread."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "runs": len(values),
    }


def create_key_for(settings: Settings, account_id: str | None = None) -> str:
    """A key with both scopes and a limit no benchmark reaches (cheap bcrypt: not measured)."""

    async def create() -> str:
        async with open_clients(settings) as clients:
            key, _ = await create_key(
                DynamoKeyStore(clients.dynamodb, settings.keys_table),
                account_id=account_id or new_account_id(),
                scopes=frozenset(Scope),
                rate_limit_per_minute=1_000_000_000,
                bcrypt_rounds=4,
            )
            return key

    return asyncio.run(create())


class KeptAlive:
    """Requests to one URL on one kept-alive HTTP/1.1 connection, each answer read whole:
    a client that costs the measured servers' load core next to nothing (httpx costs a
    millisecond of CPU a request, which capped a paced sender at about 150 requests/s here).

    A server may close a connection it kept alive (seen on moto after minutes:
    ``IncompleteReadError`` in the middle of a run): the request is then made once more on a
    new connection (the benchmarks' requests are GETs, or POSTs whose events are unique and
    deduplicated by the service), and only a second failure in a row is an error.
    """

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname, parts.port)
        self._target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "bench", **headers}.items())
        self._url = url
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.reconnects = 0

    async def get_checked(self) -> bool:
        """GET, raising unless 200; whether it had to be made again on a new connection."""
        status, redone = await self.request("GET")
        if status != 200:
            raise RuntimeError(f"GET {self._url} answered {status}")
        return redone

    async def request(self, method: str, body: bytes = b"") -> tuple[int, bool]:
        """The answer's status, and whether the request was made again on a new connection."""
        had_connection = self._streams is not None
        try:
            return await self._request(method, body), False
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if not had_connection:  # not a kept-alive connection dropped: the server is not there
                raise
            self.reconnects += 1
            return await self._request(method, body), True

    async def _request(self, method: str, body: bytes) -> int:
        if self._streams is None:
            self._streams = await asyncio.open_connection(*self._address)
        reader, writer = self._streams
        length = f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n" if body else ""
        writer.write(f"{method} {self._target} HTTP/1.1\r\n{self._head}{length}\r\n".encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        fields = dict(line.partition(b":")[::2] for line in head.lower().split(b"\r\n")[1:])
        await reader.readexactly(int(fields.get(b"content-length", b"0")))
        return int(head[9:12])

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def write_results(name: str, results: dict[str, Any], markdown: str, directory: Path = RESULTS) -> Path:
    directory.mkdir(exist_ok=True)
    meta = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    path = directory / f"{name}.json"
    path.write_text(json.dumps({**meta, **results}, indent=2) + "\n")
    (directory / f"{name}.md").write_text(markdown)
    return path
