"""Faults while a stream of events flows: nothing answered 2xx is lost, nothing is doubled.

Two ingest edges, two writers and an inbox run as real processes. The edges and writers
reach SQS and DynamoDB through ``FaultyLink`` proxies, which each test cuts or throttles
while a producer streams numbered events (with idempotency keys and retries, as a real
client). After each fault the inbox must hold every event that got a 2xx exactly once, the
exact count, and nothing in the dead-letter queue. So must a named consumer of the stream's
type, created before the stream: the writers copy each event into it through the same faults
(and its backfill, due within a couple of seconds here, the few the writers' views missed);
acknowledging all of its events leaves the account's own inbox as it was. A summary line per
fault is printed at the end of the run.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from shared.local import processes
from tests.conftest import ApiKey, Service, Stack, make_key, private_stack, queue_counts, start_service, wait_until
from tests.faults import (
    FaultSummary,
    FaultyLink,
    Producer,
    acknowledge,
    consumer_of,
    create_consumer,
    read_events,
    read_inbox,
    summarize,
)

LEAD_IN_S = 2.0  # the stream runs this long before a fault and after it heals
# A new consumer's backfill comes due view + margin after its creation: a couple of seconds
# here, so the events stored before the writers' views held the consumer reach it early in
# the stream, and the rest of the stream is the writers' copies alone.
CONSUMER_TIMING = {"consumer_view_s": "1", "consumer_margin_s": "1", "job_poll_s": "0.2"}


@dataclass
class Rig:
    stack: Stack
    key: ApiKey
    sqs: FaultyLink
    dynamodb: FaultyLink
    edges: list[Service]
    writers: list[Service]
    inbox: Service
    link_env: dict[str, str]

    def restart(self, services: list[Service], index: int, part: str, sig: signal.Signals) -> Service:
        services[index].process.send_signal(sig)
        services[index].process.wait(30)
        services[index] = start_service(self.stack, part, self.link_env)
        return services[index]


@contextlib.contextmanager
def open_rig(
    stack: Stack, *, edges: int, writers: int, edge_env: dict[str, str] | None = None, **overrides: str
) -> Iterator[Rig]:
    """Edges and writers of a stack of their own, behind faulty links; an inbox that checks."""
    own = private_stack(stack, **{**CONSUMER_TIMING, **overrides})
    moto = own.settings.aws_endpoint_url or ""
    with FaultyLink(moto) as sqs, FaultyLink(own.settings.dynamodb_endpoint_url or moto) as dynamodb:
        link_env = {
            "TRIGGERS_SQS_ENDPOINT_URL": sqs.url,
            "TRIGGERS_DYNAMODB_ENDPOINT_URL": dynamodb.url,
            "TRIGGERS_ENQUEUE_TIMEOUT_S": "2",
            "TRIGGERS_AWS_MAX_ATTEMPTS": "2",
        }
        rig = Rig(
            stack=own,
            key=make_key(own),
            sqs=sqs,
            dynamodb=dynamodb,
            edges=[start_service(own, "ingest", {**link_env, **(edge_env or {})}) for _ in range(edges)],
            writers=[start_service(own, "writer", link_env) for _ in range(writers)],
            inbox=start_service(own, "inbox"),  # reads moto directly: it checks, it is not under test
            link_env=link_env,
        )
        try:
            yield rig
        finally:
            processes.stop([s.process for s in (*rig.edges, *rig.writers, rig.inbox)])


@pytest.fixture(scope="module")
def rig(stack: Stack) -> Iterator[Rig]:
    # Short visibility: a killed writer's messages come back quickly. A high receive count:
    # the outages here are short, and nothing should reach the dead-letter queue.
    with open_rig(stack, edges=2, writers=2, queue_visibility_timeout_s="4", queue_max_receive_count="50") as opened:
        yield opened


def stream_through(rig: Rig, fault: str, inject: Callable[[Producer], None], per_second: float = 150) -> FaultSummary:
    """Stream events, inject the fault, heal, then check the inbox, and a consumer of the
    stream's type, against what was answered."""
    producer = Producer([e.url for e in rig.edges], rig.key.key, fault, per_second)
    event_type = producer.event_type
    with httpx.Client(timeout=30) as client:
        # Over HTTP, as a user would: the writers learn of it from their views.
        consumer = create_consumer(client, rig.inbox.url, rig.key.key, _consumer_name(fault), event_types=[event_type])
    name = consumer["name"]
    with producer:
        time.sleep(LEAD_IN_S)
        inject(producer)
        time.sleep(LEAD_IN_S)
    producer.finish()
    accepted = set(producer.report.accepted)
    with httpx.Client(timeout=30) as client:
        assert wait_until(lambda: accepted <= set(read_inbox(client, rig.inbox.url, rig.key.key, event_type)[0]), 90)
        assert wait_until(lambda: accepted <= set(read_inbox(client, rig.inbox.url, rig.key.key, event_type, name)[0]))
        events_queue, dead_letters = rig.stack.settings.events_queue, rig.stack.settings.dead_letter_queue
        assert wait_until(lambda: queue_counts(rig.stack, events_queue) == (0, 0), 60)  # no late copy pending
        events, total = read_events(client, rig.inbox.url, rig.key.key, event_type)
        stored = [e["payload"]["seq"] for e in events]
        copies, copies_total = read_events(client, rig.inbox.url, rig.key.key, event_type, name)
        for seq, ids in list(producer.report.accepted.items())[:: max(1, len(accepted) // 40)]:
            for event_id in ids:  # every id an answer gave resolves to the one stored event, and its copy
                for params in ({}, {"consumer": name}):
                    found = client.get(f"{rig.inbox.url}/events/{event_id}", params=params, headers=rig.key.headers)
                    assert found.status_code == 200, (params, found.text)
                    assert found.json()["payload"]["seq"] == seq
        summary = summarize(fault, producer.report, stored)
        assert summary.sent >= 50  # the stream really flowed through the fault (150+ seen here)
        doubled = [seq for seq, n in Counter(stored).items() if n > 1]
        assert summary.lost == 0, sorted(accepted - set(stored))[:20]
        assert doubled == []
        assert set(stored) == accepted  # and nothing stored that was never answered 2xx at last
        assert total == len(stored)  # the exact count
        assert queue_counts(rig.stack, dead_letters) == (0, 0)
        _check_consumer(client, rig, name, copies, copies_total, events)
        # Acknowledged in the consumer, and the account's own inbox is as it was.
        acknowledge(client, rig.inbox.url, rig.key.key, [e["event_id"] for e in copies], name)
        assert read_events(client, rig.inbox.url, rig.key.key, event_type, name) == ([], 0)
        assert consumer_of(client, rig.inbox.url, rig.key.key, name)["total_undelivered"] == 0
        after, total_after = read_inbox(client, rig.inbox.url, rig.key.key, event_type)
        assert (sorted(after), total_after) == (sorted(stored), total)
    return summary


def _consumer_name(fault: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", fault)  # "dynamodb-down+throttle": "+" is not in a name


def _check_consumer(
    client: httpx.Client, rig: Rig, name: str, copies: list[dict[str, Any]], total: int, events: list[dict[str, Any]]
) -> None:
    """The consumer holds a copy of each of the inbox's events (checked exact: every accepted
    event once), none twice, under the same ids, and counts them exactly."""
    seqs = [e["payload"]["seq"] for e in copies]
    assert [seq for seq, n in Counter(seqs).items() if n > 1] == []
    expected = {e["event_id"]: e["payload"]["seq"] for e in events}
    got = {e["event_id"]: e["payload"]["seq"] for e in copies}
    assert got == expected, (sorted(expected.items() - got.items())[:20], sorted(got.items() - expected.items())[:20])
    assert total == len(copies)
    described = consumer_of(client, rig.inbox.url, rig.key.key, name)
    assert described["total_undelivered"] == len(copies)
    assert described["backfill"]["done"]


def test_writers_killed_repeatedly(rig: Rig) -> None:
    def kill_writers(_: Producer) -> None:
        for round_ in range(4):
            rig.restart(rig.writers, round_ % 2, "writer", signal.SIGKILL)
            time.sleep(1.0)

    stream_through(rig, "writers-killed", kill_writers)


def test_sqs_unreachable_for_a_while(rig: Rig) -> None:
    def cut_sqs(_: Producer) -> None:
        rig.sqs.set_mode("down")
        time.sleep(4)
        rig.sqs.set_mode("pass")

    summary = stream_through(rig, "sqs-down", cut_sqs)
    assert summary.refused_503 > 0  # the edges said so instead of taking events they could not queue


def test_dynamodb_unreachable_then_throttling(rig: Rig) -> None:
    def break_dynamodb(_: Producer) -> None:
        rig.dynamodb.set_mode("down")
        time.sleep(3)
        rig.dynamodb.set_mode("throttle")
        time.sleep(3)
        rig.dynamodb.set_mode("pass")

    stream_through(rig, "dynamodb-down+throttle", break_dynamodb)


def test_ingest_edges_restarted(rig: Rig) -> None:
    def restart_edges(producer: Producer) -> None:
        for index, sig in ((0, signal.SIGKILL), (1, signal.SIGTERM), (0, signal.SIGTERM)):
            producer.edges[index] = rig.restart(rig.edges, index, "ingest", sig).url
            time.sleep(1.0)

    summary = stream_through(rig, "ingest-restarted", restart_edges)
    assert summary.refused_other > 0  # requests did meet the restarts


# The writer's retry delays after 1 and 2 receives (1 s, 2 s) sum to 3 s: with a receive count
# of 2, a writer that kept receiving through this outage would dead-letter healthy messages.
OUTAGE_S = 6.0


def test_dynamodb_unreachable_longer_than_the_retry_delays_dead_letters_nothing(stack: Stack) -> None:
    # The edge keeps its verified key for the whole outage, so events keep flowing into the
    # queue while the writer cannot store them.
    edge_env = {"TRIGGERS_KEY_CACHE_TTL_S": "120"}
    with open_rig(
        stack, edges=1, writers=1, edge_env=edge_env, queue_visibility_timeout_s="4", queue_max_receive_count="2"
    ) as strict:

        def cut_dynamodb(_: Producer) -> None:
            strict.dynamodb.set_mode("down")
            time.sleep(OUTAGE_S)
            strict.dynamodb.set_mode("pass")

        # stream_through: every 2xx stored once, exact count, and the dead-letter queue empty.
        # A slower stream: the backlog the outage leaves is what the writer then has to store.
        summary = stream_through(strict, "dynamodb-down-long", cut_dynamodb, per_second=60)
    assert summary.refused_503 == 0  # the edge took events all through the outage: the writer met them
