"""Load test with realistic producers and consumers (locust).

Users:
- ``SingleSender``: a backend sending one event per request, ~10 a second each;
- ``BatchSender``: a backend flushing 50 buffered events a request, about once a second;
- ``Poller``: a consumer that pages through its inbox, reads an event now and then, and
  acknowledges what it handled (``POST /inbox/ack``), then waits before the next sweep.

All users of one run share one account, so pollers see what senders send.

Where it points (environment):
- ``TRIGGERS_KEY``: an API key with both scopes (``scripts/load`` makes one on the
  embedded default);
- ``TRIGGERS_INGEST_URL`` / ``TRIGGERS_INBOX_URL``: default ``http://127.0.0.1:8000`` / ``:8001``.
  For a deployment, the ALB's address for both (the paths do not overlap).

Headless: ``scripts/load`` (embedded default), or
``locust -f bench/locustfile.py --headless -u 50 -r 10 -t 2m``. With a UI: drop ``--headless``.

locust runs on gevent, so its users speak HTTP through locust's own FastHttpUser (and get
its statistics) rather than through the asyncio client ``triggers_client``.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from typing import Any

from locust import FastHttpUser, between, constant_throughput, task

INGEST_URL = os.environ.get("TRIGGERS_INGEST_URL", "http://127.0.0.1:8000")
INBOX_URL = os.environ.get("TRIGGERS_INBOX_URL", "http://127.0.0.1:8001")
PAGE = 100
_sequence = itertools.count()


def _headers() -> dict[str, str]:
    key = os.environ.get("TRIGGERS_KEY")
    if not key:
        raise RuntimeError("Set TRIGGERS_KEY to an API key with the ingest and inbox scopes (scripts/load does).")
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _event() -> dict[str, Any]:
    """An order-like event of ~1 KB, with a key of its own as a careful producer sends it."""
    return {
        "event_type": random.choice(("order.created", "order.paid", "user.signed_up")),
        "payload": {"seq": next(_sequence), "customer": {"id": f"c_{random.randrange(10_000)}"}, "note": "x" * 800},
        "idempotency_key": uuid.uuid4().hex,
    }


class SingleSender(FastHttpUser):
    host = INGEST_URL
    weight = 6
    wait_time = constant_throughput(10)

    @task
    def send(self) -> None:
        self.client.post("/events", json=_event(), headers=_headers())


class BatchSender(FastHttpUser):
    host = INGEST_URL
    weight = 1
    wait_time = constant_throughput(1)

    @task
    def send_batch(self) -> None:
        with self.client.post(
            "/events/batch", json={"events": [_event() for _ in range(50)]}, headers=_headers(), catch_response=True
        ) as response:
            if response.status_code != 202:  # 207: some events refused, which this load never causes
                response.failure(f"batch answered {response.status_code}")


class Poller(FastHttpUser):
    host = INBOX_URL
    weight = 2
    wait_time = between(0.5, 1.5)

    @task
    def sweep(self) -> None:
        cursor: str | None = None
        for _ in range(5):  # a sweep reads at most five pages, then rests
            path = f"/inbox?limit={PAGE}" + (f"&cursor={cursor}" if cursor else "")
            page = self.client.get(path, headers=_headers(), name="/inbox").json()
            ids = [event["event_id"] for event in page["events"]]
            if ids and random.random() < 0.1:
                self.client.get(f"/events/{ids[0]}", headers=_headers(), name="/events/{id}")
            if ids:
                self.client.post("/inbox/ack", json={"event_ids": ids}, headers=_headers())
            if not page["has_more"]:
                return
            cursor = page["next_cursor"]
