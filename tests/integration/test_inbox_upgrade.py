"""0.2 → 0.3: a 0.2 table gains the position indexes, its events a position, its cursors still work."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any

import httpx
import msgspec

from inbox_api.cursor import CursorCodec
from inbox_api.store import InboxStore
from shared.aws.clients import open_clients
from shared.contract.ids import is_event_id
from shared.keys.admin import new_account_id
from shared.ops.migrate import migrate_inbox_positions
from shared.ops.resources import ensure_resources, table_specs
from shared.settings import inbox_cursor_secret, settings_from_env
from shared.storage.layout import INBOX_BY_TYPE_POS_INDEX, INBOX_POS_INDEX
from tests.conftest import Service, Stack, make_key, run_triggers
from tests.helpers import sweep
from tests.integration.test_exactly_once_store import event
from writer_worker.store import EventWriter, event_item


def _v02_events_table(spec: dict[str, Any]) -> dict[str, Any]:
    """The events table as 0.2 created it: no inbox_pos, no position indexes."""
    spec = {k: v for k, v in spec.items() if k != "ttl"}
    spec["AttributeDefinitions"] = [a for a in spec["AttributeDefinitions"] if a["AttributeName"] != "inbox_pos"]
    spec["GlobalSecondaryIndexes"] = [
        i for i in spec["GlobalSecondaryIndexes"] if i["IndexName"] not in (INBOX_POS_INDEX, INBOX_BY_TYPE_POS_INDEX)
    ]
    return spec


def _v02_item(account: str, n: int) -> dict[str, Any]:
    item = event_item(event(account, msgspec.json.encode({"v02": n})))
    del item["inbox_pos"]
    return item


async def test_init_upgrades_a_02_table_and_the_migration_positions_its_events(data_stack: Stack) -> None:
    env = {**data_stack.env, "TRIGGERS_RESOURCE_PREFIX": f"u{uuid.uuid4().hex[:8]}"}
    settings = settings_from_env(env)
    account = new_account_id()
    async with open_clients(settings) as clients:
        dynamodb = clients.dynamodb
        await dynamodb.admin.create_table(BillingMode="PAY_PER_REQUEST", **_v02_events_table(table_specs(settings)[0]))
        old = [_v02_item(account, n) for n in range(3)]
        acknowledged = {**_v02_item(account, 9), "delivered": {"BOOL": True}}
        del acknowledged["inbox_pk"], acknowledged["inbox_type_pk"]
        for item in [*old, acknowledged]:
            await dynamodb.put_item(TableName=settings.events_table, Item=item)

        await ensure_resources(settings, clients)
        await ensure_resources(settings, clients)  # idempotent
        described = (await dynamodb.admin.describe_table(TableName=settings.events_table))["Table"]
        indexes = {i["IndexName"] for i in described.get("GlobalSecondaryIndexes", [])}
        assert {INBOX_POS_INDEX, INBOX_BY_TYPE_POS_INDEX} <= indexes
        store = InboxStore(dynamodb, settings)
        assert await sweep(store, account) == []  # not positioned yet: the 0.3 inbox waits for the migration

        new = event(account, b'{"v03": 1}')
        await EventWriter(dynamodb, settings).write([new])  # a 0.3 writer meanwhile
        # ... and a 0.3 inbox (one image): a consumer's cursor passes what it shows.
        handed_out = (await store.page_from(account, None, False, 10, None)).events[-1].position
        progress: list[str] = []
        assert await migrate_inbox_positions(settings, clients, progress.append) == 3
        assert progress
        assert await migrate_inbox_positions(settings, clients) == 0  # again: nothing left to do

        # Positioned at the migration's clock: after every cursor handed out before it, so the
        # consumer paging on from its cursor gets them (at their time of receipt it would not).
        old_ids = {i["event_id"]["S"] for i in old}
        rest = await store.page_from(account, None, False, 10, handed_out)
        assert {e.event_id for e in rest.events} == old_ids
        assert len(rest.events) == len(old_ids)
        for event_type in (None, "t"):
            swept = await sweep(store, account, event_type, limit=2)
            assert swept[0] == new.event_id
            assert sorted(swept[1:]) == sorted(old_ids)
        stamped = await dynamodb.get_item(
            TableName=settings.events_table, Key={"account_id": {"S": account}, "event_id": acknowledged["event_id"]}
        )
        assert "inbox_pos" not in stamped["Item"]  # acknowledged events are left alone


def test_the_migration_command_reports_progress(stack: Stack) -> None:
    result = run_triggers(stack, "migrate-inbox-positions")
    assert "scanned" in result.stdout
    assert "given an inbox position" in result.stdout


def _v02_cursor(secret: str, account: str, last_event_id: str) -> str:
    """A cursor exactly as 0.2 made it: (account, filter, order, last event id)."""
    data = msgspec.msgpack.encode([account, None, "asc", last_event_id])
    mac = CursorCodec(secret)._mac(data)  # the same signature 0.2 made

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{b64(data)}.{b64(mac)}"


def test_a_02_cursor_starts_the_pass_again(stack: Stack, inbox: Service, http: httpx.Client) -> None:
    """A 0.2 cursor (the last event id it returned) restarts the pass: every undelivered event
    comes, once, in this pass, including those stored after the cursor's event although
    that event's id came from an edge clock 10 minutes ahead (continuing from the id's time
    would skip them). A signed 0.2 cursor whose id is not an id (a trailing newline) is a 400."""
    key = make_key(stack)
    ahead_us = time.time_ns() // 1000 + 600 * 1_000_000

    async def store() -> list[str]:
        async with open_clients(stack.settings) as clients:
            events = [event(key.account_id, b'{"ahead": 1}', at_us=ahead_us)]
            events += [event(key.account_id, msgspec.json.encode({"n": n})) for n in range(5)]
            for e in events:  # one at a time: positions in this order
                await EventWriter(clients.dynamodb, stack.settings).write([e])
            return [e.event_id for e in events]

    ids = asyncio.run(store())
    secret = inbox_cursor_secret(stack.settings)
    cursor: str | None = _v02_cursor(secret, key.account_id, ids[0])  # its pass had reached the edge-ahead event
    seen: list[str] = []
    for _ in range(len(ids)):  # 2 a page: more pages than that would be a pass that never ends
        if cursor is None:
            break
        answer = http.get(f"{inbox.url}/inbox", params={"limit": 2, "cursor": cursor}, headers=key.headers)
        assert answer.status_code == 200, answer.text
        seen += [e["event_id"] for e in answer.json()["events"]]
        cursor = answer.json()["next_cursor"]
    assert seen == ids  # from the start: all of them, once each
    for bad in (
        _v02_cursor("another secret", key.account_id, ids[1]),
        _v02_cursor(secret, key.account_id, ids[1] + "\n"),
    ):
        refused = http.get(f"{inbox.url}/inbox", params={"cursor": bad}, headers=key.headers)
        assert refused.status_code == 400, refused.text
    assert not is_event_id(ids[1] + "\n")
