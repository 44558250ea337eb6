"""What the storage owners build, their readers read back (against moto and DynamoDB Local).

Property: for any event the edge can accept (any type text, payload bytes, request id,
shard count, position stamp), the items built by shared.storage (event, alias, claim,
counters), written in one transaction, read back through the inbox (GET by id and by
alias, a page, the counts), the acknowledgements' read and DLQ replay's claim read exactly
as built; acknowledging through the alias then marks the event delivered, takes it out of
the page and the counts, and changes nothing else about it.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inbox_api.acks import Acknowledger, AckOutcome
from inbox_api.store import InboxStore
from shared.aws.clients import open_clients
from shared.contract.envelope import QueuedEvent
from shared.contract.ids import new_event_id
from shared.keys.admin import new_account_id
from shared.settings import Settings
from shared.storage.claims import claim_exists_answer, claim_item, claim_key, claim_put, claimant
from shared.storage.counters import counter_add
from shared.storage.events import StoredEvent, alias_put, event_item, event_put
from shared.storage.layout import counter_id, dedup_id, inbox_position
from shared.storage.reads import batch_get
from shared.storage.transactions import Role, TxItem, transact
from tests.conftest import Stack

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_payloads = st.dictionaries(st.text(max_size=8), _json, max_size=5).map(msgspec.json.encode)
_types = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)
_request_ids = st.none() | st.from_regex(r"[A-Za-z0-9._:\-]{1,40}", fullmatch=True)
_NOW_US = time.time_ns() // 1000


async def _round_trip(
    base: Settings, payload: bytes, event_type: str, request_id: str | None, shards: int, stamp_us: int, shard: int
) -> None:
    settings = msgspec.structs.replace(base, inbox_shards=shards)
    account = new_account_id()
    received_us = stamp_us - 1000
    event = QueuedEvent(
        event_id=new_event_id(received_us // 1000),
        account_id=account,
        event_type=event_type,
        payload=msgspec.Raw(payload),
        received_at_us=received_us,
        request_id=request_id,
    )
    copy = msgspec.structs.replace(event, event_id=new_event_id(received_us // 1000))
    claim_id = dedup_id(account, event.dedup_key())
    claim = claim_item(claim_id, event, settings.dedup_window_s * 1_000_000, 3600)
    items: list[TxItem[None]] = [
        TxItem(Role.EVENT_PUT, {"Put": event_put(settings.events_table, event_item(event, shards, stamp_us))}, None),
        TxItem(Role.ALIAS, {"Put": alias_put(settings.events_table, copy, event.event_id)}, None),
        TxItem(Role.CLAIM, {"Put": claim_put(settings.dedup_table, claim, received_us)}, None),
    ]
    for counter in (counter_id(account), counter_id(account, event_type)):
        items.append(TxItem(Role.COUNTER, {"Update": counter_add(settings.counters_table, counter, shard, 1)}, None))
    stored = StoredEvent(
        event.event_id,
        event_type,
        msgspec.Raw(payload),
        received_us,
        False,
        None,
        inbox_position(stamp_us, event.event_id),
    )
    async with open_clients(settings) as clients:
        client = clients.dynamodb
        await transact(client, items)
        inbox = InboxStore(client, settings, clock_us=lambda: _NOW_US)
        assert await inbox.get(account, event.event_id) == stored
        assert await inbox.get(account, copy.event_id) == stored
        assert await inbox.page(account, None, False, 5, None) == ([stored], False)
        assert await inbox.page(account, event_type, True, 5, None) == ([stored], False)
        assert [await inbox.count(account, t) for t in (None, event_type)] == [1, 1]
        read = await Acknowledger(client, settings)._read(account, {event.event_id, copy.event_id})
        assert (read[event.event_id].type, read[event.event_id].is_delivered, read[event.event_id].original) == (
            event_type,
            False,
            None,
        )
        assert read[copy.event_id].original == event.event_id
        claims = await batch_get(client, settings.dedup_table, [claim_key(claim_id)], "dedup_id", claim_exists_answer)
        assert [c.dedup_id.S for c in claims] == [claim_id]
        got = await client.get_item(TableName=settings.dedup_table, Key=claim_key(claim_id), ConsistentRead=True)
        assert claimant(got["Item"]) == event.event_id

        assert await Acknowledger(client, settings).ack(account, [copy.event_id]) == {
            copy.event_id: AckOutcome.ACKNOWLEDGED
        }
        delivered = await inbox.get(account, event.event_id)
        assert delivered.delivered
        assert delivered.delivered_at_us is not None
        assert msgspec.structs.replace(delivered, delivered=False, delivered_at_us=None) == stored
        assert await inbox.page(account, None, False, 5, None) == ([], False)
        assert [await inbox.count(account, t) for t in (None, event_type)] == [0, 0]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=_payloads,
    event_type=_types,
    request_id=_request_ids,
    shards=st.integers(1, 4),
    stamp_us=st.integers(10**15, _NOW_US),
    shard=st.integers(0, 7),
)
def test_what_the_owners_build_their_readers_read_back(
    data_stack: Stack, payload: bytes, event_type: str, request_id: str | None, shards: int, stamp_us: int, shard: int
) -> None:
    asyncio.run(_round_trip(data_stack.settings, payload, event_type, request_id, shards, stamp_us, shard))
