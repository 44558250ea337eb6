"""The DynamoDB requests of the writer, the inbox and acknowledgements, pinned byte for byte.

Moving where items are built and read must not change what goes on the wire: this test runs
a fixed story (a first batch of typed events on a 3-shard inbox, a duplicate and a
redelivery, pages, a count, a lookup through an alias, an acknowledgement, the writer's
storage probe) against moto through a client that records every call's parameters as the
lean client encodes them, and compares them with tests/integration/golden/storage_wire.json,
recorded from the code as it was before the storage owners existed. The items then stored
are pinned too. ``TRIGGERS_REGEN_GOLDEN=1`` records the file again (only for a deliberate
change of the wire, reviewed as such).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from inbox_api.acks import Acknowledger, AckOutcome
from inbox_api.store import InboxStore
from shared.aws.clients import AwsClients, open_clients
from shared.contract.envelope import QueuedEvent
from shared.keys.admin import new_account_id
from shared.storage.layout import counter_id, dedup_id
from tests.conftest import Stack
from writer_worker.store import EventWriter, Outcome

GOLDEN = Path(__file__).parent / "golden" / "storage_wire.json"
RECEIVED_US = 1_900_000_000_000_000  # 2030: claims' and acknowledged events' TTLs stay ahead
STAMP_US = RECEIVED_US + 5_000_000  # the writer's clock: every inbox position
ACK_NS = (RECEIVED_US + 60_000_000) * 1000  # the clock of the acknowledgement


class Recorder:
    """Forwards every call to the real client and records its parameters, encoded as sent.

    ``x_decoded(answer, **params)`` is recorded as ``x``: the same request, a typed answer.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[tuple[str, bytes]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        async def call(*answer: Any, **params: Any) -> Any:
            self.calls.append((name.removesuffix("_decoded"), msgspec.json.encode(params)))
            return await method(*answer, **params)

        return call


def _event(account: str, n: int, event_type: str, payload: bytes, **extra: Any) -> QueuedEvent:
    return QueuedEvent(
        event_id=f"01JAAAAAAAAAAAAAAAAAAAAA{n:02d}",
        account_id=account,
        event_type=event_type,
        payload=msgspec.Raw(payload),
        received_at_us=RECEIVED_US + n * 1_000_000,
        **extra,
    )


@pytest.fixture
async def clients(stack: Stack) -> AsyncIterator[AwsClients]:
    async with open_clients(stack.settings) as opened:
        yield opened


def _normal(text: str, account: str, prefix: str) -> str:
    """The recorded text with what differs from run to run (account, table prefix) named."""
    return text.replace(account, "ACCOUNT").replace(prefix, "PREFIX")


def _probe_normal(text: str) -> str:
    """The probe's item carries a fresh id (so any shard) and the wall clock: named away."""
    found = re.search(r'"event_id":\{"S":"([^"]+)"\}', text)
    assert found is not None
    text = text.replace(found.group(1), "PROBE_ID")
    return re.sub(r"probe#\d", "probe", re.sub(r"\d{10,16}", "NUMBER", text))


async def _story(stack: Stack, clients: AwsClients, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    settings = msgspec.structs.replace(stack.settings, inbox_shards=3)
    account = new_account_id()
    recorder = Recorder(clients.dynamodb)
    client: Any = recorder
    writer = EventWriter(client, settings, clock_us=lambda: STAMP_US, monotonic_us=lambda: 0)
    inbox = InboxStore(client, settings, clock_us=lambda: STAMP_US + 10_000_000)
    acks = Acknowledger(client, settings)
    first = _event(account, 1, "order.created", b'{"a": 1, "b": [true, null]}', idempotency_key="k1", request_id="r-1")
    second = _event(account, 2, "user.signup", '{"name": "Zoë", "n": 1.50}'.encode())
    third = _event(account, 3, "order.created", b'{"a": 2}')
    copy = _event(account, 4, "order.created", b'{"other": 1}', idempotency_key="k1")

    results = await writer.write([first, second, third])
    assert {r.outcome for r in results.values()} == {Outcome.STORED}
    results = await writer.write([copy, first])
    assert results[copy.event_id].outcome is Outcome.DUPLICATE
    assert results[first.event_id].outcome is Outcome.ALREADY_STORED
    page, has_more = await inbox.page(account, None, False, 2, None)
    assert [e.event_id for e in page] == [first.event_id, second.event_id]
    assert has_more
    typed, _ = await inbox.page(account, "order.created", True, 10, None)
    assert [e.event_id for e in typed] == [third.event_id, first.event_id]
    assert await inbox.count(account, None) == 3
    assert (await inbox.get(account, copy.event_id)).payload == first.payload
    with monkeypatch.context() as patched:
        patched.setattr(time, "time_ns", lambda: ACK_NS)
        outcomes = await acks.ack(account, [copy.event_id, second.event_id])
    assert outcomes == {copy.event_id: AckOutcome.ACKNOWLEDGED, second.event_id: AckOutcome.ACKNOWLEDGED}
    calls = [[op, _normal(body.decode(), account, settings.resource_prefix)] for op, body in recorder.calls]

    recorder.calls.clear()
    assert await writer.probe()
    probe = [
        [op, _probe_normal(body.decode().replace(settings.resource_prefix, "PREFIX"))] for op, body in recorder.calls
    ]

    stored = {"events": await _query(clients, settings.events_table, "account_id", account)}
    claims = [dedup_id(account, e.dedup_key()) for e in (first, second, third)]
    stored["dedup"] = [await _get(clients, settings.dedup_table, {"dedup_id": {"S": c}}) for c in claims]
    counters = [counter_id(account, t) for t in (None, "order.created", "user.signup")]
    stored["counts"] = [i for c in counters for i in await _query(clients, settings.counters_table, "counter_id", c)]
    stored = json.loads(_normal(json.dumps(stored, sort_keys=True), account, settings.resource_prefix))
    return {"calls": calls, "probe": probe, "stored": stored}


async def _query(clients: AwsClients, table: str, key: str, value: str) -> list[dict[str, Any]]:
    answer = await clients.dynamodb.query(
        TableName=table,
        KeyConditionExpression=f"{key} = :v",
        ExpressionAttributeValues={":v": {"S": value}},
        ConsistentRead=True,
    )
    return list(answer["Items"])


async def _get(clients: AwsClients, table: str, key: dict[str, Any]) -> dict[str, Any]:
    return dict((await clients.dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True))["Item"])


async def test_the_wire_is_what_it_was(stack: Stack, clients: AwsClients, monkeypatch: pytest.MonkeyPatch) -> None:
    recorded = await _story(stack, clients, monkeypatch)
    if os.environ.get("TRIGGERS_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(recorded, indent=1, ensure_ascii=False) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for n, (got, want) in enumerate(zip(recorded["calls"], golden["calls"], strict=False)):
        assert got == want, f"call {n} differs"
    assert len(recorded["calls"]) == len(golden["calls"])
    assert recorded["probe"] == golden["probe"]
    assert recorded["stored"] == golden["stored"]
