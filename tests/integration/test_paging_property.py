"""Paging while events arrive and are acknowledged (property-based, against moto + the inbox).

The rule: a sweep (pages from no cursor to has_more=false) never returns an event twice,
and returns every event that stayed undelivered from the sweep's start to its end. Hypothesis
draws random interleavings of arrivals, acknowledgements and page reads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import processes
from shared.aws import open_clients
from shared.envelope import QueuedEvent
from shared.ids import new_event_id
from shared.settings import Settings
from tests.conftest import ApiKey, Service, Stack, make_key, start_service
from writer_worker.store import EventWriter

Step = tuple[str, int]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.integers(1, 3)),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("page"), st.integers(1, 4)),
    ),
    min_size=3,
    max_size=25,
)


class Scenario:
    def __init__(self, stack: Stack, inbox: Service, key: ApiKey, writer: EventWriter) -> None:
        self.stack, self.inbox, self.key, self.writer = stack, inbox, key, writer
        self.undelivered: list[str] = []
        self.counter = 0

    async def arrive(self, count: int) -> None:
        events = []
        for _ in range(count):
            self.counter += 1
            now_us = time.time_ns() // 1000
            events.append(
                QueuedEvent(
                    event_id=new_event_id(now_us // 1000),
                    account_id=self.key.account_id,
                    event_type="prop",
                    payload=msgspec.Raw(msgspec.json.encode({"n": self.counter})),
                    received_at_us=now_us,
                )
            )
        await self.writer.write(events)
        self.undelivered += [e.event_id for e in events]

    async def ack(self, http: httpx.AsyncClient, pick: int) -> str | None:
        if not self.undelivered:
            return None
        event_id = self.undelivered.pop(pick % len(self.undelivered))
        response = await http.delete(f"{self.inbox.url}/events/{event_id}", headers=self.key.headers)
        assert response.status_code == 204
        return event_id


SHARDS = 3


@pytest.fixture(scope="module")
def sharded_inbox(stack: Stack) -> Iterator[Service]:
    """An inbox whose accounts are spread over SHARDS index partitions."""
    service = start_service(stack, "inbox", {"TRIGGERS_INBOX_SHARDS": str(SHARDS)})
    yield service
    processes.stop([service.process])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=steps)
def test_a_sweep_neither_repeats_nor_skips(stack: Stack, inbox: Service, program: list[Step]) -> None:
    asyncio.run(_run(stack.settings, stack, inbox, program))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=steps)
def test_a_sweep_over_a_sharded_inbox_neither_repeats_nor_skips(
    stack: Stack, sharded_inbox: Service, program: list[Step]
) -> None:
    writing = msgspec.structs.replace(stack.settings, inbox_shards=SHARDS)
    asyncio.run(_run(writing, stack, sharded_inbox, program))


async def _run(writing: Settings, stack: Stack, inbox: Service, program: list[Step]) -> None:
    """``writing``: the settings the events are stored with (the inbox shards among them)."""
    key = make_key_async(stack)
    async with open_clients(stack.settings) as clients, httpx.AsyncClient(timeout=10) as http:
        scenario = Scenario(stack, inbox, await key, EventWriter(clients.dynamodb, writing))
        await scenario.arrive(3)
        at_start = set(scenario.undelivered)
        acked_during: set[str] = set()
        seen: list[str] = []
        cursor: str | None = None
        finished = False
        for action, value in program:
            if action == "arrive":
                await scenario.arrive(value)
            elif action == "ack":
                acked = await scenario.ack(http, value)
                if acked is not None:
                    acked_during.add(acked)
            elif not finished:
                params: dict[str, str | int] = {"limit": value}
                if cursor:
                    params["cursor"] = cursor
                page = (await http.get(f"{inbox.url}/inbox", params=params, headers=scenario.key.headers)).json()
                seen += [e["event_id"] for e in page["events"]]
                cursor = page["next_cursor"]
                finished = not page["has_more"]
        while not finished:  # finish the sweep
            params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
            page = (await http.get(f"{inbox.url}/inbox", params=params, headers=scenario.key.headers)).json()
            seen += [e["event_id"] for e in page["events"]]
            cursor = page["next_cursor"]
            finished = not page["has_more"]
    assert len(seen) == len(set(seen)), "an event was returned twice in one sweep"
    stayed = at_start - acked_during
    assert stayed <= set(seen), f"skipped: {sorted(stayed - set(seen))}"
    assert seen == sorted(seen), "a sweep returns events in order"


async def make_key_async(stack: Stack) -> ApiKey:
    return await asyncio.to_thread(make_key, stack)
