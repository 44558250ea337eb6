"""Paging forward through a named consumer (property-based, DynamoDB Local + the real inbox).

An account has three named consumers with different filters besides its default. Events
of several types arrive, stored by the writer (which copies each into the consumers that
take it), while the other consumers and the default acknowledge events of theirs, the pager
acknowledges some of its own, and the pager pages forward with its cursor, with any page
size and with or without an ``event_type``. On every page: each event returned is one of the
pager's undelivered events (of that type), the total is exactly how many it has, and every
consumer's count in ``GET /consumers`` is exact; the pager's cursor is refused for every
other consumer. At the end of each pass (``has_more`` false): no event came twice, every
event still undelivered came, and they came in the consumer's own order (its positions).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.aws.clients import open_clients
from shared.aws.dynamodb import LeanDynamoDB
from shared.contract.envelope import QueuedEvent
from shared.contract.ids import new_event_id
from shared.local import processes
from shared.settings import Settings
from shared.storage.consumers import DEFAULT
from shared.storage.registry import ConsumerRegistry
from tests.conftest import ApiKey, Service, Stack, make_key, start_service
from writer_worker.consumer_view import ConsumerViews
from writer_worker.store import EventWriter

SHARDS = 3
TYPES = ("order.created", "order.shipped", "invoice.paid", "user.deleted")
# The account's named consumers and their filters (the default takes every type).
FILTERS: dict[str, tuple[str, ...] | None] = {
    "all": None,
    "orders": ("order.*",),
    "picked": ("invoice.paid", "order.shipped"),
}
CONSUMERS = (DEFAULT, *FILTERS)

Step = tuple[str, Any]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.lists(st.sampled_from(TYPES), min_size=1, max_size=5)),
        # (whose, which of its undelivered events, one by one or in a batch)
        st.tuples(st.just("ack"), st.tuples(st.sampled_from(CONSUMERS), st.integers(0, 50), st.booleans())),
        st.tuples(st.just("page"), st.integers(1, 5)),
    ),
    min_size=3,
    max_size=24,
)


def _takes(patterns: tuple[str, ...] | None, event_type: str) -> bool:
    """The contract's filter rule, written out here: the product's own would agree with any bug of its."""
    if patterns is None:
        return True
    return any(p == event_type or (p.endswith(".*") and event_type.startswith(p[:-1])) for p in patterns)


class Model:
    """What each consumer of the account must hold: the events it takes, less its acks."""

    def __init__(self) -> None:
        self.arrived: list[tuple[str, str]] = []  # (event id, type), as stored
        self.acked: dict[str, set[str]] = {c: set() for c in CONSUMERS}

    def undelivered(self, consumer: str, event_type: str | None = None) -> list[str]:
        taken = FILTERS.get(consumer) if consumer != DEFAULT else None
        return [
            event_id
            for event_id, kind in self.arrived
            if _takes(taken, kind) and event_id not in self.acked[consumer] and event_type in (None, kind)
        ]


class Account:
    """One account's consumers over HTTP, its writer in process, and the model they must match."""

    def __init__(self, http: httpx.AsyncClient, inbox: Service, key: ApiKey, writer: EventWriter) -> None:
        self.http, self.inbox, self.key, self.writer = http, inbox, key, writer
        self.model = Model()

    async def arrive(self, types: list[str]) -> None:
        events = [
            QueuedEvent(
                event_id=new_event_id(),
                account_id=self.key.account_id,
                event_type=kind,
                payload=msgspec.Raw(msgspec.json.encode({"n": len(self.model.arrived) + n})),
                received_at_us=_now_us(),
            )
            for n, kind in enumerate(types)
        ]
        results = await self.writer.write(events)
        assert {r.outcome.value for r in results.values()} == {"stored"}, results
        self.model.arrived += [(e.event_id, e.event_type) for e in events]

    async def ack(self, consumer: str, pick: int, one_by_one: bool) -> None:
        undelivered = self.model.undelivered(consumer)
        if not undelivered:
            return
        event_id = undelivered[pick % len(undelivered)]
        params = {"consumer": consumer}
        if one_by_one:
            answer = await self.http.delete(
                f"{self.inbox.url}/events/{event_id}", params=params, headers=self.key.headers
            )
            assert answer.status_code == 204, answer.text
        else:
            answer = await self.http.post(
                f"{self.inbox.url}/inbox/ack", params=params, json={"event_ids": [event_id]}, headers=self.key.headers
            )
            assert answer.json() == {"acknowledged": [event_id], "not_found": []}, answer.text
        self.model.acked[consumer].add(event_id)

    async def counts_are_exact(self) -> None:
        answer = await self.http.get(f"{self.inbox.url}/consumers", headers=self.key.headers)
        listed = {c["name"]: c["total_undelivered"] for c in answer.json()["consumers"]}
        assert listed == {c: len(self.model.undelivered(c)) for c in CONSUMERS}


class Pager:
    """A consumer paging forward with its cursor; a pass ends where ``has_more`` is false."""

    def __init__(self, account: Account, name: str, event_type: str | None) -> None:
        self.account, self.name, self.event_type = account, name, event_type
        self.cursor: str | None = None
        self.seen: list[str] = []  # this pass's events, in the order returned
        self.passes: list[list[str]] = []
        self._others = [c for c in CONSUMERS if c != name]

    def _params(self, limit: int, consumer: str, cursor: str | None) -> dict[str, str | int]:
        params: dict[str, str | int] = {"limit": limit, "consumer": consumer}
        if self.event_type is not None:
            params["event_type"] = self.event_type
        if cursor is not None:
            params["cursor"] = cursor
        return params

    async def page(self, limit: int) -> None:
        account = self.account
        if self.cursor is not None:  # first: the cursor is this consumer's alone
            other = self._others[len(self.seen) % len(self._others)]
            refused = await account.http.get(
                f"{account.inbox.url}/inbox",
                params=self._params(limit, other, self.cursor),
                headers=account.key.headers,
            )
            assert refused.status_code == 400, (other, refused.text)
            assert refused.json()["error_code"] == "INVALID_CURSOR"
        answer = await account.http.get(
            f"{account.inbox.url}/inbox",
            params=self._params(limit, self.name, self.cursor),
            headers=account.key.headers,
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        ids = [e["event_id"] for e in page["events"]]
        undelivered = account.model.undelivered(self.name, self.event_type)
        assert len(ids) <= limit
        assert set(ids) <= set(undelivered), f"not the pager's undelivered: {set(ids) - set(undelivered)}"
        assert page["total_undelivered"] == len(undelivered)
        assert (page["next_cursor"] is not None) == page["has_more"]
        self.seen += ids
        if page["has_more"]:
            self.cursor = page["next_cursor"]
            return
        assert len(self.seen) == len(set(self.seen)), f"returned twice in one pass: {self.seen}"
        missed = set(undelivered) - set(self.seen)
        assert not missed, f"skipped in the pass: {sorted(missed)}"
        self.passes.append(self.seen)
        self.cursor, self.seen = None, []


@pytest.fixture(scope="module")
def sharded_inbox(stack: Stack) -> Iterator[Service]:
    """An inbox over 3 shards; the session's settle margin (0): pages show events at once."""
    service = start_service(stack, "inbox", {"TRIGGERS_INBOX_SHARDS": str(SHARDS)})
    yield service
    processes.stop([service.process])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(program=steps, pager=st.sampled_from(tuple(FILTERS)), event_type=st.sampled_from([None, *TYPES]))
def test_a_consumer_paging_forward_sees_each_of_its_events_once_per_pass(
    stack: Stack, sharded_inbox: Service, program: list[Step], pager: str, event_type: str | None
) -> None:
    asyncio.run(_run(stack, sharded_inbox, program, pager, event_type))


async def _run(stack: Stack, inbox: Service, program: list[Step], name: str, event_type: str | None) -> None:
    writing = msgspec.structs.replace(stack.settings, inbox_shards=SHARDS)
    key = await asyncio.to_thread(make_key, stack)
    async with open_clients(stack.settings) as clients, httpx.AsyncClient(timeout=10) as http:
        for consumer, types in FILTERS.items():
            body = {"name": consumer, "event_types": list(types) if types is not None else None}
            made = await http.post(f"{inbox.url}/consumers", json=body, headers=key.headers)
            assert made.status_code == 201, made.text
        # Made after the consumers: its first view of the account holds all three.
        writer = EventWriter(clients.dynamodb, writing, views=ConsumerViews(clients.dynamodb, writing))
        account = Account(http, inbox, key, writer)
        pager = Pager(account, name, event_type)
        for action, value in program:
            if action == "arrive":
                await account.arrive(value)
            elif action == "ack":
                await account.ack(*value)
            else:
                await pager.page(value)
                await account.counts_are_exact()
        while pager.cursor is not None:  # the pass under way ends
            await pager.page(3)
        await pager.page(200)  # and one whole pass more
        positions = await _positions(clients.dynamodb, writing, key.account_id, name)
    for seen in pager.passes:
        assert seen == sorted(seen, key=positions.__getitem__), "a pass out of the consumer's order"
    assert pager.passes[-1] == sorted(account.model.undelivered(name, event_type), key=positions.__getitem__)


async def _positions(client: LeanDynamoDB, settings: Settings, account_id: str, name: str) -> dict[str, str]:
    """Each copy's inbox position in the consumer's partition (kept when acknowledged)."""
    partition = (await ConsumerRegistry(client, settings).get(account_id, name)).partition
    query: dict[str, Any] = {
        "TableName": settings.events_table,
        "KeyConditionExpression": "account_id = :p",
        "ExpressionAttributeValues": {":p": {"S": partition}},
        "ConsistentRead": True,
    }
    positions: dict[str, str] = {}
    while True:
        answer = await client.query(**query)
        positions.update({i["event_id"]["S"]: i["inbox_pos"]["S"] for i in answer.get("Items", [])})
        if "LastEvaluatedKey" not in answer:
            return positions
        query["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def _now_us() -> int:
    return time.time_ns() // 1000
