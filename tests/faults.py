"""Fault injection for end-to-end tests: a link to an AWS endpoint that a test can cut or
make throttle, a producer that streams numbered events through the faults, and readers of
what the inbox then holds (the account's own inbox, or a named consumer's).

``FaultyLink`` is a TCP proxy in a thread of its own. The services under test reach moto
through it (``TRIGGERS_SQS_ENDPOINT_URL`` / ``TRIGGERS_DYNAMODB_ENDPOINT_URL``), so a test
breaks one AWS service for its own processes only. Modes:

- ``pass``: bytes flow both ways;
- ``down``: open connections are reset and new ones are reset on accept (unreachable);
- ``throttle``: every HTTP request is answered with DynamoDB's ``ThrottlingException``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

Mode = Literal["pass", "down", "throttle"]

_THROTTLED_BODY = (
    b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException",'
    b'"message":"Rate of requests exceeds the allowed throughput."}'
)
_THROTTLED = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\n"
    b"x-amzn-RequestId: faulty-link\r\nContent-Length: " + str(len(_THROTTLED_BODY)).encode() + b"\r\n\r\n"
) + _THROTTLED_BODY


class FaultyLink:
    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        self._target = (target.hostname or "127.0.0.1", target.port or 80)
        self._mode: Mode = "pass"
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faulty-link", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultyLink:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def set_mode(self, mode: Mode) -> None:
        """Switch, and drop every open connection so clients meet the new mode at once."""

        def apply() -> None:
            self._mode = mode
            for writer in list(self._open):
                writer.transport.abort()

        self._loop.call_soon_threadsafe(apply)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "down":
            writer.transport.abort()
            return
        self._open.add(writer)
        try:
            if self._mode == "throttle":
                await _throttle(reader, writer)
            else:
                await self._pipe(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self._open.discard(writer)
            writer.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._open.add(up_writer)
        try:
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        finally:
            self._open.discard(up_writer)
            up_writer.transport.abort()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()
    writer.transport.abort()


async def _throttle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        await reader.readexactly(length)
        writer.write(_THROTTLED)
        await writer.drain()


@dataclass
class StreamReport:
    """What a producer saw: per sequence number, the event ids of its 2xx answers."""

    accepted: dict[int, list[str]] = field(default_factory=dict)
    attempts: int = 0
    refused: Counter[int] = field(default_factory=Counter)  # by status; 0 = no answer at all


class Producer:
    """Streams numbered events (``payload.seq``) to the ingest edges, round robin.

    Every event carries an ``Idempotency-Key``, and the producer retries what was not
    answered 2xx (503, 429, a dropped connection) as a real client would, and sends every
    tenth event a second time after its 2xx: the pipeline must store each once.
    """

    def __init__(self, edges: list[str], key: str, run: str, per_second: float = 150) -> None:
        self.edges = edges  # tests replace entries while it runs (restarted edges)
        self._headers = {"Authorization": f"Bearer {key}"}
        self._run = run
        self.event_type = f"fault.{run}"
        self._interval = 1 / per_second
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"producer-{run}", daemon=True)
        self.report = StreamReport()
        self._next_seq = 0
        self._retry: list[int] = []

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def finish(self, deadline_s: float = 60) -> None:
        """Stop new events; keep retrying the unanswered until each got a 2xx (or time is up)."""
        self._stop.set()
        self._thread.join(30)
        with httpx.Client(timeout=10) as client:
            end = time.monotonic() + deadline_s
            while self._retry and time.monotonic() < end:
                self._send(client, self._retry.pop(0))
                time.sleep(0.02)
        assert not self._retry, f"{len(self._retry)} events never got a 2xx"

    def _loop(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                if self._retry and self._next_seq % 3 == 0:
                    seq = self._retry.pop(0)
                else:
                    seq, self._next_seq = self._next_seq, self._next_seq + 1
                self._send(client, seq)
                if seq % 10 == 0 and seq in self.report.accepted and len(self.report.accepted[seq]) == 1:
                    self._send(client, seq)  # a deliberate copy
                time.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    def _send(self, client: httpx.Client, seq: int) -> None:
        self.report.attempts += 1
        edge = self.edges[seq % len(self.edges)]
        event = {"event_type": self.event_type, "payload": {"seq": seq, "pad": "x" * 200}}
        headers = {**self._headers, "Idempotency-Key": f"{self._run}-{seq}"}
        try:
            response = client.post(f"{edge}/events", json=event, headers=headers)
        except httpx.TransportError:
            self.report.refused[0] += 1
            self._retry.append(seq)
            return
        if response.status_code == 202:
            self.report.accepted.setdefault(seq, []).append(response.json()["event_id"])
            return
        assert response.status_code in (429, 503), (response.status_code, response.text)
        self.report.refused[response.status_code] += 1
        if seq not in self.report.accepted:
            self._retry.append(seq)


def read_inbox(
    client: httpx.Client, inbox: str, key: str, event_type: str, consumer: str | None = None
) -> tuple[list[int], int]:
    """Every undelivered event of ``event_type`` (their ``seq``), paged, and the total the inbox
    reports; of the account's own inbox, or of a named ``consumer``."""
    events, total = read_events(client, inbox, key, event_type, consumer)
    return [event["payload"]["seq"] for event in events], total


def read_events(
    client: httpx.Client, inbox: str, key: str, event_type: str | None = None, consumer: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Every undelivered event (of ``event_type``, or all), as the inbox pages them, and the total it reports."""
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    total = -1
    while True:
        params: dict[str, str | int] = {"limit": 200}
        if event_type is not None:
            params["event_type"] = event_type
        if consumer is not None:
            params["consumer"] = consumer
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"{inbox}/inbox", params=params, headers={"Authorization": f"Bearer {key}"})
        assert page.status_code == 200, page.text
        body = page.json()
        if total < 0:
            total = body["total_undelivered"]
        events += body["events"]
        if not body["has_more"]:
            return events, total
        cursor = body["next_cursor"]


def create_consumer(client: httpx.Client, inbox: str, key: str, name: str, **body: Any) -> dict[str, Any]:
    """A named consumer of the key's account (``POST /consumers``), as the inbox describes it."""
    answer = client.post(f"{inbox}/consumers", json={"name": name, **body}, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def consumer_of(client: httpx.Client, inbox: str, key: str, name: str) -> dict[str, Any]:
    """``GET /consumers/{name}``: its count and its backfill's progress."""
    answer = client.get(f"{inbox}/consumers/{name}", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


ACK_MAX_IDS = 100  # POST /inbox/ack takes this many ids at most


def acknowledge(client: httpx.Client, inbox: str, key: str, event_ids: list[str], consumer: str) -> None:
    """Acknowledge every id for ``consumer``; each must be found."""
    for start in range(0, len(event_ids), ACK_MAX_IDS):
        chunk = event_ids[start : start + ACK_MAX_IDS]
        answer = client.post(
            f"{inbox}/inbox/ack",
            params={"consumer": consumer},
            json={"event_ids": chunk},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"acknowledged": chunk, "not_found": []}


@dataclass(frozen=True)
class FaultSummary:
    fault: str
    sent: int  # distinct events
    attempts: int  # requests, retries and deliberate copies included
    accepted: int  # 2xx answers
    refused_503: int
    refused_other: int  # 429s and dropped connections
    stored: int
    duplicates_suppressed: int  # 2xx answers beyond the first for an event
    lost: int  # events answered 2xx and not in the inbox

    def line(self) -> str:
        return (
            f"{self.fault:<22} sent {self.sent:>5}  attempts {self.attempts:>5}  2xx {self.accepted:>5}  "
            f"503 {self.refused_503:>4}  other {self.refused_other:>3}  stored {self.stored:>5}  "
            f"duplicates suppressed {self.duplicates_suppressed:>4}  lost {self.lost}"
        )


SUMMARIES: list[FaultSummary] = []  # printed at the end of the test run (tests/conftest.py)


def summarize(fault: str, report: StreamReport, stored: list[int]) -> FaultSummary:
    answers = sum(len(ids) for ids in report.accepted.values())
    summary = FaultSummary(
        fault=fault,
        sent=len(report.accepted),
        attempts=report.attempts,
        accepted=answers,
        refused_503=report.refused[503],
        refused_other=report.refused[429] + report.refused[0],
        stored=len(stored),
        duplicates_suppressed=answers - len(set(stored) & set(report.accepted)),
        lost=len(set(report.accepted) - set(stored)),
    )
    SUMMARIES.append(summary)
    return summary
