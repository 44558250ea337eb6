"""Competing claimers of one consumer over HTTP against the real services.

- A property test: three claimers interleave claims, acks, nacks and extensions at random,
  with leases that end while they run. A model says what each event is (available, leased
  by a token until a time, delivered); every answer is checked against it: no claim returns
  an event another token holds, a token acknowledges or extends only while its event was not
  claimed again, and the counts are exact after every step.
- Workers of the client's helper (``triggers_client.work``) drain a consumer together: each
  event handled once, none lost.
- A claimer SIGKILLed mid-lease loses nothing: its events come back when the leases end.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.conftest import ApiKey, Service, Stack, make_key, wait_until
from tests.e2e.leasing import call, claim, consumer_counts, send, stored
from triggers_client import ClaimedEvent, TriggersClient, work

pytestmark = pytest.mark.usefixtures("writer")

LEASE_S = 2
# How far the model's clock and the inbox's may disagree about when a lease ends: within it,
# the model does not say whether the lease holds.
UNSURE_S = 0.6
EVENTS = 6


@dataclass
class Lease:
    token: str
    claimer: int
    until: float  # the model's monotonic clock


class Claimers(RuleBasedStateMachine):
    """Three claimers of one account's default consumer, checked against a model."""

    http: httpx.Client
    inbox: Service
    ingest: Service
    stack: Stack

    @initialize()
    def send_events(self) -> None:
        self.key = make_key(self.stack)
        self.ids = [send(self.http, self.ingest, self.key, n) for n in range(EVENTS)]
        stored(self.http, self.inbox, self.key, EVENTS)
        self.leases: dict[str, Lease] = {}  # event id -> its latest lease (ended or not)
        self.released: set[str] = set()  # given back (nacked) since its latest lease
        self.delivered: set[str] = set()
        self.old_tokens: dict[str, str] = {}  # token -> its event, for leases claimed again since

    def _holds(self, event_id: str, now: float) -> bool:
        """Does a lease surely hold the event now?"""
        lease = self.leases.get(event_id)
        return lease is not None and event_id not in self.released and now < lease.until - UNSURE_S

    @rule(claimer=st.integers(0, 2), limit=st.integers(1, 4))
    def claim(self, claimer: int, limit: int) -> None:
        before = time.monotonic()
        answer = claim(self.http, self.inbox, self.key, limit=limit, lease_s=LEASE_S)
        for event in answer["events"]:
            event_id = event["event_id"]
            assert event_id not in self.delivered, event
            assert not self._holds(event_id, before), (event, self.leases.get(event_id))
            if (old := self.leases.get(event_id)) is not None:
                self.old_tokens[old.token] = event_id
            self.leases[event_id] = Lease(event["lease_token"], claimer, before + LEASE_S)
            self.released.discard(event_id)
        assert len(answer["events"]) <= limit

    def _token(self, data: st.DataObject) -> tuple[str, Lease] | None:
        live = sorted((e, lease) for e, lease in self.leases.items() if e not in self.delivered)
        return data.draw(st.sampled_from(live)) if live else None

    @rule(data=st.data())
    def ack_latest(self, data: st.DataObject) -> None:
        picked = self._token(data)
        if picked is None:
            return
        event_id, lease = picked
        answer = call(self.http, self.inbox, self.key, "/inbox/ack", {"lease_tokens": [lease.token]})
        # The latest lease's token: nobody claimed the event since, ended or not, given back or not.
        assert answer["acknowledged"] == [event_id], answer
        self.delivered.add(event_id)

    @rule(data=st.data())
    def ack_old_token(self, data: st.DataObject) -> None:
        if not self.old_tokens:
            return
        token = data.draw(st.sampled_from(sorted(self.old_tokens)))
        event_id = self.old_tokens[token]
        answer = call(self.http, self.inbox, self.key, "/inbox/ack", {"lease_tokens": [token]})
        assert answer["acknowledged"] == [], answer  # claimed again since: never its to acknowledge
        assert answer["refused"] == [{"lease_token": token, "reason": "lease_lost"}], (answer, event_id)

    @rule(data=st.data())
    def nack(self, data: st.DataObject) -> None:
        picked = self._token(data)
        if picked is None:
            return
        event_id, lease = picked
        answer = call(self.http, self.inbox, self.key, "/inbox/nack", {"lease_tokens": [lease.token]})
        if event_id in self.released:  # given back already: no lease to give back
            assert answer["refused"][0]["reason"] in {"lease_ended", "lease_lost"}, answer
        elif answer["nacked"] == [event_id]:
            self.released.add(event_id)
        else:  # its lease had ended and a page or claim took it back meanwhile
            assert time.monotonic() > lease.until - UNSURE_S, answer
            self.released.add(event_id)

    @rule(data=st.data())
    def extend(self, data: st.DataObject) -> None:
        picked = self._token(data)
        if picked is None:
            return
        event_id, lease = picked
        before = time.monotonic()
        answer = call(
            self.http, self.inbox, self.key, "/inbox/extend", {"lease_tokens": [lease.token], "lease_s": LEASE_S}
        )
        if answer["extended"] == [event_id]:
            lease.until = before + LEASE_S
        else:
            assert event_id in self.released or before > lease.until - UNSURE_S, answer

    @rule()
    def let_leases_end(self) -> None:
        time.sleep(LEASE_S + UNSURE_S)

    @invariant()
    def counts_are_exact(self) -> None:
        if not hasattr(self, "key"):
            return
        available, in_flight, failed = consumer_counts(self.http, self.inbox, self.key)
        assert failed == 0
        assert available + in_flight == EVENTS - len(self.delivered)
        now = time.monotonic()
        surely_held = {e for e in self.leases if e not in self.delivered and self._holds(e, now)}
        never_claimed = set(self.ids) - self.leases.keys()
        assert in_flight >= len(surely_held)
        assert available >= len(never_claimed | (self.released - self.delivered))


def test_competing_claimers_never_share_an_event_while_a_lease_holds(
    http: httpx.Client, ingest: Service, inbox: Service, stack: Stack
) -> None:
    Claimers.http, Claimers.ingest, Claimers.inbox, Claimers.stack = http, ingest, inbox, stack
    Claimers.TestCase.settings = settings(
        max_examples=6,
        stateful_step_count=14,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    Claimers.TestCase().runTest()


def test_four_workers_drain_a_consumer_each_event_handled_once(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    total = 300
    batch = [{"event_type": "job.run", "payload": {"n": n}} for n in range(total)]
    sent: list[str] = []
    for start in range(0, total, 100):
        answer = http.post(
            f"{ingest.url}/events/batch", json={"events": batch[start : start + 100]}, headers=api_key.headers
        )
        assert answer.status_code == 202, answer.text
        sent += [r["event_id"] for r in answer.json()["results"]]
    stored(http, inbox, api_key, total)
    handled: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def handler(event: ClaimedEvent) -> None:
        with lock:
            handled[event.event_id] += 1
            if len(handled) == total:
                stop.set()

    summaries = []

    def worker() -> None:
        with TriggersClient(api_key.key, ingest_url=ingest.url, inbox_url=inbox.url) as client:
            summaries.append(work(client, handler, limit=10, lease_s=30, wait_s=1, stop=stop))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert set(handled) == set(sent)  # none lost
    assert [e for e, n in handled.items() if n > 1] == []  # none handled twice
    assert sum(s.handled for s in summaries) == total
    assert all(s.handled for s in summaries), summaries  # the four shared the work
    assert consumer_counts(http, inbox, api_key) == (0, 0, 0)


_KILLED_CLAIMER = textwrap.dedent(
    """
    import sys, time
    from triggers_client import TriggersClient
    key, inbox = sys.argv[1], sys.argv[2]
    with TriggersClient(key, inbox_url=inbox) as client:
        claimed = client.claim(limit=5, lease_s=2)
        print(" ".join(e.event_id for e in claimed.events), flush=True)
        time.sleep(600)  # handling them, until SIGKILL
    """
)


def test_a_claimer_killed_mid_lease_loses_nothing(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    sent = {send(http, ingest, api_key, n) for n in range(5)}
    stored(http, inbox, api_key, 5)
    claimer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CLAIMER, api_key.key, inbox.url], stdout=subprocess.PIPE, text=True
    )
    assert claimer.stdout is not None
    held = set(claimer.stdout.readline().split())
    claimer.kill()  # SIGKILL: no nack, no goodbye
    claimer.wait()
    assert held == sent
    assert claim(http, inbox, api_key, limit=10)["events"] == []  # still its, until the leases end
    back: dict[str, Any] = {}

    def returned() -> bool:
        back.update({e["event_id"]: e for e in claim(http, inbox, api_key, limit=10, lease_s=60)["events"]})
        return back.keys() == sent

    assert wait_until(returned, timeout_s=10)
    assert {e["deliveries"] for e in back.values()} == {2}
    assert consumer_counts(http, inbox, api_key) == (0, 5, 0)
