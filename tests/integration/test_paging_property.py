"""Paging forward never skips (property-based, against moto + the real inbox service).

A consumer pages forward with its cursor and never starts again, while events arrive in any
order: new ones, late ones (ids older than the consumer's cursor, as a writer backlog or a
retried message brings them), dead-letter replays of days-old ids, ids from edges whose
clocks are minutes off, writers whose clocks differ by less than half the settle margin,
transactions that commit later than a quarter of it (the writer re-stamps those), and
transactions that commit late while the writer sees a timeout (the message comes back,
finds the event stored, and re-stamps it: the ALREADY_STORED path). The consumer pages
between such a late commit and its re-stamp. Events are also acknowledged meanwhile. When
the arrivals stop and the margin has passed, the consumer finishes its pass: every event
that stayed undelivered was returned, nothing else was, and an event came more than once
only if it was re-stamped (at most once more per re-stamp: docs/api.md, "Paging").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import httpx
import msgspec
import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inbox_api.store import InboxStore
from shared.aws.clients import AwsClients, open_clients
from shared.aws.dynamodb import LeanDynamoDB
from shared.contract.envelope import QueuedEvent, encode_message
from shared.contract.ids import new_event_id
from shared.local import processes
from shared.settings import Settings
from tests.conftest import ApiKey, Service, Stack, make_key, start_service, wait_until
from writer_worker.store import EventWriter

SETTLE_MS = 200
SHARDS = 3
_DAY_US = 86_400 * 1_000_000

# How an arriving event's id was stamped at the edge, relative to now.
EDGE = st.sampled_from(["now", "behind_cursor", "replay", "edge_ahead", "edge_behind"])
# How the writer that stores it behaves: its clock is off by less than half the margin, or
# its transaction commits later than a quarter of the margin after the stamp ("slow"), or
# does and its answer is lost ("timeout": the message comes back).
WRITER = st.one_of(
    st.tuples(st.just("skew"), st.integers(-(SETTLE_MS // 2) + 20, SETTLE_MS // 2 - 20)),
    st.tuples(st.sampled_from(["slow", "timeout"]), st.integers(SETTLE_MS // 4 + 10, 4 * SETTLE_MS)),
)
# Events a consumer's page reads between a late commit and its re-stamp.
INTERLEAVED_PAGE = 2
Step = tuple[str, Any]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.tuples(st.integers(1, 3), EDGE, WRITER)),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("page"), st.integers(1, 4)),
    ),
    min_size=3,
    max_size=16,
)


class _Clock:
    """A writer's clock: the wall clock plus an offset (in microseconds)."""

    def __init__(self, offset_us: int) -> None:
        self.offset_us = offset_us

    def __call__(self) -> int:
        return time.time_ns() // 1000 + self.offset_us


class _LateCommit:
    """A DynamoDB client whose transactions take ``lag`` to commit: when one returns, the
    writer's clock (which read ``lag`` behind at the stamp) jumps to the wall clock. Between
    the commit and its answer, ``meanwhile`` runs (a consumer's page); with ``lost`` the
    writer then sees a timeout."""

    def __init__(
        self, client: LeanDynamoDB, clock: _Clock, meanwhile: Callable[[], Awaitable[None]], lost: bool
    ) -> None:
        self._client, self._clock, self._meanwhile, self._lost = client, clock, meanwhile, lost

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def transact_write_items(self, **params: Any) -> Any:
        answer = await self._client.transact_write_items(**params)
        await self._meanwhile()
        self._clock.offset_us = 0
        if self._lost:
            raise EndpointConnectionError(endpoint_url="dynamodb", error=TimeoutError())
        return answer


class _Restamps:
    """DynamoDB as the writers see it, counting each event's moves to a fresh position."""

    def __init__(self, client: LeanDynamoDB) -> None:
        self._client = client
        self.moves: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def update_item(self, **params: Any) -> Any:
        answer = await self._client.update_item(**params)
        if "inbox_pos" in params["UpdateExpression"]:
            self.moves[params["Key"]["event_id"]["S"]] += 1
        return answer


class Consumer:
    """Pages forward from the start with its cursor, and never starts again."""

    def __init__(self, http: httpx.AsyncClient, inbox: Service, key: ApiKey) -> None:
        self.http, self.inbox, self.key = http, inbox, key
        self.cursor: str | None = None
        self.seen: list[str] = []
        self.finished = False
        self.draining = False  # the arrivals stopped: the pass may end

    async def page(self, limit: int) -> None:
        params: dict[str, str | int] = {"limit": limit, **({"cursor": self.cursor} if self.cursor else {})}
        answer = await self.http.get(f"{self.inbox.url}/inbox", params=params, headers=self.key.headers)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        self.seen += [e["event_id"] for e in page["events"]]
        assert (page["next_cursor"] is not None) == page["has_more"]
        self.finished = not page["has_more"]
        self.cursor = page["next_cursor"] or self.cursor
        assert self.draining or not self.finished, "the backlog outlasts the program"


class Scenario:
    def __init__(self, writing: Settings, clients: AwsClients, key: ApiKey) -> None:
        self.writing, self.clients, self.key = writing, clients, key
        self.storage = _Restamps(clients.dynamodb)
        self.stored: dict[str, int] = {}  # event id -> received_at_us
        self.undelivered: list[str] = []
        self.counter = 0

    def _event(self, received_us: int) -> QueuedEvent:
        self.counter += 1
        return QueuedEvent(
            event_id=new_event_id(received_us // 1000),
            account_id=self.key.account_id,
            event_type="prop",
            payload=msgspec.Raw(msgspec.json.encode({"n": self.counter})),
            received_at_us=received_us,
        )

    def _received(self, edge: str, consumer: Consumer) -> int:
        now = time.time_ns() // 1000
        if edge == "behind_cursor" and consumer.seen:  # an id older than what the consumer passed
            return self.stored[consumer.seen[-1]] - random.randint(1, 5_000_000)
        if edge == "replay":  # a dead letter replayed days later
            return now - random.randint(1, 5) * _DAY_US
        if edge == "edge_ahead":
            return now + random.randint(1, 600) * 1_000_000
        if edge == "edge_behind":
            return now - random.randint(1, 600) * 1_000_000
        return now

    async def arrive(self, count: int, edge: str, writer: tuple[str, int], consumer: Consumer) -> None:
        events = [self._event(self._received(edge, consumer)) for _ in range(count)]
        kind, ms = writer
        clock = _Clock(ms * 1000 if kind == "skew" else -ms * 1000)
        storage = cast(LeanDynamoDB, self.storage)
        if kind != "skew":
            storage = cast(
                LeanDynamoDB, _LateCommit(storage, clock, lambda: consumer.page(INTERLEAVED_PAGE), kind == "timeout")
            )
        # The same clock times the commit: it jumps by the lag when the late commit answers.
        results = await EventWriter(storage, self.writing, clock_us=clock, monotonic_us=clock).write(events)
        prompt = EventWriter(cast(LeanDynamoDB, self.storage), self.writing)
        while unsettled := [e for e in events if results[e.event_id].outcome.value not in ("stored", "already_stored")]:
            assert {results[e.event_id].outcome.value for e in unsettled} <= {"unavailable", "retry"}
            results.update(await prompt.write(unsettled))  # the message comes back (SQS)
        if kind == "timeout":
            assert {r.outcome.value for r in results.values()} == {"already_stored"}
        self.stored.update({e.event_id: e.received_at_us for e in events})
        self.undelivered += [e.event_id for e in events]

    async def ack(self, http: httpx.AsyncClient, inbox: Service, pick: int) -> str | None:
        if not self.undelivered:
            return None
        event_id = self.undelivered.pop(pick % len(self.undelivered))
        response = await http.delete(f"{inbox.url}/events/{event_id}", headers=self.key.headers)
        assert response.status_code == 204
        return event_id


def _settling_inbox(stack: Stack, shards: int) -> Service:
    env = {"TRIGGERS_INBOX_SETTLE_MS": str(SETTLE_MS), "TRIGGERS_INBOX_SHARDS": str(shards)}
    return start_service(stack, "inbox", env)


@pytest.fixture(scope="module")
def settling_inbox(stack: Stack) -> Iterator[Service]:
    service = _settling_inbox(stack, 1)
    yield service
    processes.stop([service.process])


@pytest.fixture(scope="module")
def sharded_inbox(stack: Stack) -> Iterator[Service]:
    service = _settling_inbox(stack, SHARDS)
    yield service
    processes.stop([service.process])


def _settings(stack: Stack, shards: int) -> Settings:
    return msgspec.structs.replace(stack.settings, inbox_settle_ms=SETTLE_MS, inbox_shards=shards)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=steps)
def test_paging_forward_never_skips_nor_repeats(stack: Stack, settling_inbox: Service, program: list[Step]) -> None:
    asyncio.run(_run(_settings(stack, 1), stack, settling_inbox, program))


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=steps)
def test_paging_forward_over_a_sharded_inbox_never_skips_nor_repeats(
    stack: Stack, sharded_inbox: Service, program: list[Step]
) -> None:
    asyncio.run(_run(_settings(stack, SHARDS), stack, sharded_inbox, program))


async def _run(writing: Settings, stack: Stack, inbox: Service, program: list[Step]) -> None:
    key = await asyncio.to_thread(make_key, stack)
    async with open_clients(stack.settings) as clients, httpx.AsyncClient(timeout=10) as http:
        scenario = Scenario(writing, clients, key)
        consumer = Consumer(http, inbox, key)
        # Enough events at the start that the pass cannot reach the end before the arrivals
        # stop: the consumer never has to start again.
        late = sum(1 for a, v in program if a == "arrive" and v[2][0] != "skew")
        backlog = sum(v for a, v in program if a == "page") + sum(1 for a, _ in program if a == "ack") + 1
        backlog += late * INTERLEAVED_PAGE
        for start in range(0, backlog, 40):
            await scenario.arrive(min(40, backlog - start), "now", ("skew", 0), consumer)
        await asyncio.sleep(SETTLE_MS / 1000)
        acked: set[str] = set()
        for action, value in program:
            if action == "arrive":
                count, edge, writer = value
                await scenario.arrive(count, edge, writer, consumer)
            elif action == "ack":
                if (event_id := await scenario.ack(http, inbox, value)) is not None:
                    acked.add(event_id)
            else:
                await consumer.page(value)
        # The arrivals settle: the margin, after the latest stamp (a writer clock half a margin ahead).
        await asyncio.sleep(1.5 * SETTLE_MS / 1000)
        consumer.draining = True
        while not consumer.finished:
            await consumer.page(4)
    times = Counter(consumer.seen)
    repeats = {e: n for e, n in times.items() if n > 1 + scenario.storage.moves[e]}
    assert not repeats, f"returned more often than re-stamped: {repeats}"
    assert set(consumer.seen) <= set(scenario.stored)
    stayed = set(scenario.stored) - acked
    assert stayed <= set(consumer.seen), f"skipped: {sorted(stayed - set(consumer.seen))}"


def test_a_message_with_an_id_behind_the_cursor_reaches_a_forward_pager(
    stack: Stack, settling_inbox: Service, writer: Service, http: httpx.Client
) -> None:
    """The issue's reproduction, through SQS and the writer service."""
    key = make_key(stack)

    async def send(received_us: list[int]) -> list[str]:
        events = [
            QueuedEvent(
                event_id=new_event_id(us // 1000),
                account_id=key.account_id,
                event_type="late",
                payload=msgspec.Raw(msgspec.json.encode({"received_us": us})),  # distinct: not duplicates
                received_at_us=us,
            )
            for us in received_us
        ]
        async with open_clients(stack.settings) as clients:
            url = (await clients.sqs.admin.get_queue_url(QueueName=stack.settings.events_queue))["QueueUrl"]
            await clients.sqs.admin.send_message(QueueUrl=url, MessageBody=encode_message(events))
        return [e.event_id for e in events]

    now = time.time_ns() // 1000
    first = asyncio.run(send([now - 2_000_000, now - 1_000_000]))
    headers, url = key.headers, f"{settling_inbox.url}/inbox"
    page = wait_until(lambda: http.get(url, params={"limit": 1}, headers=headers).json()["has_more"])
    assert page
    answer = http.get(url, params={"limit": 1}, headers=headers).json()
    assert [e["event_id"] for e in answer["events"]] == first[:1]
    cursor = answer["next_cursor"]
    late = asyncio.run(send([now - 60_000_000]))  # a minute older than the cursor's event

    def rest() -> list[str]:
        seen, at = [], cursor
        while at:
            body = http.get(url, params={"limit": 10, "cursor": at}, headers=headers).json()
            seen += [e["event_id"] for e in body["events"]]
            at = body["next_cursor"]
        return seen

    assert wait_until(lambda: late[0] in rest()), "the late event was never returned past the cursor"
    assert rest() == [first[1], late[0]]


def _fixed(us: int) -> Callable[[], int]:
    return lambda: us


async def test_desc_with_a_cursor_from_an_inbox_whose_clock_is_ahead_skips_nothing(stack: Stack) -> None:
    """F5: inbox A (clock ahead) hands out a desc cursor above inbox B's settled point; B
    continues below the cursor: everything under a cursor handed out is settled already."""
    key = await asyncio.to_thread(make_key, stack)
    settings = _settings(stack, 1)
    base = time.time_ns() // 1000 - 3600 * 1_000_000  # stamps in the past: no waiting
    events = [
        QueuedEvent(
            event_id=new_event_id(base // 1000 + n),
            account_id=key.account_id,
            event_type="desc",
            payload=msgspec.Raw(msgspec.json.encode({"n": n})),
            received_at_us=base + n * 1000,
        )
        for n in range(6)
    ]
    async with open_clients(stack.settings) as clients:
        for n, e in enumerate(events):  # stamped 50 ms apart
            stamp = base + n * 50_000
            assert await EventWriter(clients.dynamodb, settings, clock_us=_fixed(stamp)).write([e])
        margin = SETTLE_MS * 1000
        ahead = InboxStore(clients.dynamodb, settings, clock_us=lambda: base + 5 * 50_000 + margin)
        behind = InboxStore(clients.dynamodb, settings, clock_us=lambda: base + 2 * 50_000 + margin)
        first = await ahead.page_from(key.account_id, None, True, 2, None)
        assert [e.event_id for e in first.events] == [events[5].event_id, events[4].event_id]
        rest = await behind.page_from(key.account_id, None, True, 10, first.after)
    assert [e.event_id for e in rest.events] == [e.event_id for e in reversed(events[:4])]
    assert not rest.has_more
