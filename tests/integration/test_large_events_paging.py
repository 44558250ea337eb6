"""Large events page like small ones: DynamoDB answers a Query with at most 1 MB.

Events near the 256 KiB payload limit, more of them than fit in a few 1 MB answers, through
the real inbox service (one partition, and an inbox spread over shards), and on the data
layer alone on moto and DynamoDB Local. Every event comes back exactly once across pages,
has_more and next_cursor say whether more follow, and total_undelivered matches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from inbox_api.store import PAGE_EXTRA_QUERIES, InboxStore
from shared.aws.clients import open_clients
from shared.contract.envelope import QueuedEvent
from shared.keys.admin import new_account_id
from shared.local import processes
from shared.settings import Settings
from tests.conftest import ApiKey, Service, Stack, make_key, start_service
from tests.helpers import sweep
from tests.integration.test_exactly_once_store import event
from writer_worker.store import EventWriter

# 40 events of 250 KB: a 1 MB answer holds 3 to 5 of them (moto stops before 10^6 bytes,
# DynamoDB Local after the item that crosses 2^20), so one page reads at most
# 5 x (S + PAGE_EXTRA_QUERIES) = 25 of one partition, 35 of 3 shards, and ends early.
COUNT = 40
# Most items of this size one answer of at most 1 MB (and the item crossing it) holds.
PER_ANSWER = 1_048_576 // 250_000 + 1
PAYLOAD_BYTES = 250_000
SHARDS = 3


def _large(account: str, n: int) -> QueuedEvent:
    payload = msgspec.json.encode({"n": n, "blob": chr(ord("a") + n % 26) * PAYLOAD_BYTES})
    return event(account, payload, event_type=f"big{n % 2}")


async def _store(settings: Settings, events: list[QueuedEvent]) -> None:
    async with open_clients(settings) as clients:
        await EventWriter(clients.dynamodb, settings).write(events)


@pytest.fixture(scope="module")
def sharded_inbox(stack: Stack) -> Iterator[Service]:
    service = start_service(stack, "inbox", {"TRIGGERS_INBOX_SHARDS": str(SHARDS)})
    yield service
    processes.stop([service.process])


def _page_through(http: httpx.Client, inbox: Service, key: ApiKey, **params: Any) -> list[dict[str, Any]]:
    """Every page of one forward pass, checking each page's has_more, cursor and total."""
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {"limit": 50, **params, **({"cursor": cursor} if cursor else {})}
        answer = http.get(f"{inbox.url}/inbox", params=query, headers=key.headers)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        pages.append(page)
        assert (page["next_cursor"] is not None) == page["has_more"]
        if not page["has_more"]:
            return pages
        assert page["events"], "a page that says more follow returns something"
        cursor = page["next_cursor"]
        assert len(pages) < COUNT, "paging does not advance"


@pytest.mark.parametrize("sharded", [False, True], ids=["one-partition", "3-shards"])
def test_large_events_page_across_answers_of_1_mb(
    stack: Stack, inbox: Service, sharded_inbox: Service, http: httpx.Client, sharded: bool
) -> None:
    key = make_key(stack)
    writing = msgspec.structs.replace(stack.settings, inbox_shards=SHARDS if sharded else 1)
    events = [_large(key.account_id, n) for n in range(COUNT)]
    asyncio.run(_store(writing, events))
    service = sharded_inbox if sharded else inbox

    pages = _page_through(http, service, key)

    returned = [e for page in pages for e in page["events"]]
    assert sorted(e["event_id"] for e in returned) == sorted(e.event_id for e in events)
    assert len(pages) > 1, f"{COUNT} events of 250 KB do not fit the reads one page may make"
    assert all(page["total_undelivered"] == COUNT for page in pages)
    sent = {e.event_id: bytes(e.payload) for e in events}
    for e in returned:  # read back as sent, whole
        assert msgspec.json.encode(e["payload"]) == msgspec.json.encode(msgspec.json.decode(sent[e["event_id"]]))
    # The filtered pass, and newest first, hold the same events.
    by_type = [e["event_id"] for page in _page_through(http, service, key, event_type="big1") for e in page["events"]]
    assert sorted(by_type) == sorted(e.event_id for e in events if e.event_type == "big1")
    newest_first = [e["event_id"] for page in _page_through(http, service, key, order="desc") for e in page["events"]]
    assert newest_first == [e["event_id"] for e in returned][::-1]


@pytest.mark.parametrize("shards", [1, SHARDS])
async def test_a_page_of_large_events_is_bounded_and_resumes(data_stack: Stack, shards: int) -> None:
    settings = msgspec.structs.replace(data_stack.settings, inbox_shards=shards)
    key_account = new_account_id()
    events = [_large(key_account, n) for n in range(COUNT)]
    await _store(settings, events)
    async with open_clients(settings) as clients:
        store = InboxStore(clients.dynamodb, settings)
        first = await store.page_from(key_account, None, False, 50, None)
        # At most 1 MB per Query, at most S + PAGE_EXTRA_QUERIES Queries; more follow iff cut.
        assert len(first.events) <= (shards + PAGE_EXTRA_QUERIES) * PER_ANSWER
        assert first.has_more is (len(first.events) < COUNT)
        assert first.after == first.events[-1].position
        assert first.has_more
        everything = await sweep(store, key_account, limit=50)
        assert sorted(everything) == sorted(e.event_id for e in events)
        assert len(set(everything)) == COUNT
        assert await sweep(store, key_account, descending=True, limit=50) == everything[::-1]
