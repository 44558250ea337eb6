"""Faults while a stream of events flows: nothing answered 2xx is lost, nothing is doubled.

Two ingest edges, two writers and an inbox run as real processes. The edges and writers
reach SQS and DynamoDB through ``FaultyLink`` proxies, which each test cuts or throttles
while a producer streams numbered events (with idempotency keys and retries, as a real
client). After each fault the inbox must hold every event that got a 2xx exactly once, the
exact count, and nothing in the dead-letter queue. A summary line per fault is printed at
the end of the run.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from shared import processes
from tests.conftest import ApiKey, Service, Stack, make_key, private_stack, queue_counts, start_service, wait_until
from tests.faults import FaultSummary, FaultyLink, Producer, read_inbox, summarize

LEAD_IN_S = 2.0  # the stream runs this long before a fault and after it heals


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


@pytest.fixture(scope="module")
def rig(stack: Stack) -> Iterator[Rig]:
    # Short visibility: a killed writer's messages come back quickly. A high receive count:
    # the outages here are short, and nothing should reach the dead-letter queue.
    own = private_stack(stack, queue_visibility_timeout_s="4", queue_max_receive_count="50")
    moto = own.settings.aws_endpoint_url or ""
    with FaultyLink(moto) as sqs, FaultyLink(moto) as dynamodb:
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
            edges=[start_service(own, "ingest", link_env) for _ in range(2)],
            writers=[start_service(own, "writer", link_env) for _ in range(2)],
            inbox=start_service(own, "inbox"),  # reads moto directly: it checks, it is not under test
            link_env=link_env,
        )
        try:
            yield rig
        finally:
            processes.stop([s.process for s in (*rig.edges, *rig.writers, rig.inbox)])


def stream_through(rig: Rig, fault: str, inject: Callable[[Producer], None]) -> FaultSummary:
    """Stream events, inject the fault, heal, then check the inbox against what was answered."""
    producer = Producer([e.url for e in rig.edges], rig.key.key, fault)
    with producer:
        time.sleep(LEAD_IN_S)
        inject(producer)
        time.sleep(LEAD_IN_S)
    producer.finish()
    accepted = set(producer.report.accepted)
    with httpx.Client(timeout=30) as client:
        event_type = f"fault.{fault}"
        assert wait_until(lambda: accepted <= set(read_inbox(client, rig.inbox.url, rig.key.key, event_type)[0]), 90)
        events_queue, dead_letters = rig.stack.settings.events_queue, rig.stack.settings.dead_letter_queue
        assert wait_until(lambda: queue_counts(rig.stack, events_queue) == (0, 0), 60)  # no late copy pending
        stored, total = read_inbox(client, rig.inbox.url, rig.key.key, event_type)
        for seq, ids in list(producer.report.accepted.items())[:: max(1, len(accepted) // 40)]:
            for event_id in ids:  # every id an answer gave resolves to the one stored event
                found = client.get(f"{rig.inbox.url}/events/{event_id}", headers=rig.key.headers)
                assert found.status_code == 200
                assert found.json()["payload"]["seq"] == seq
    summary = summarize(fault, producer.report, stored)
    assert summary.sent >= 50  # the stream really flowed through the fault (150+ seen here)
    doubled = [seq for seq, n in Counter(stored).items() if n > 1]
    assert summary.lost == 0, sorted(accepted - set(stored))[:20]
    assert doubled == []
    assert set(stored) == accepted  # and nothing stored that was never answered 2xx at last
    assert total == len(stored)  # the exact count
    assert queue_counts(rig.stack, dead_letters) == (0, 0)
    return summary


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
