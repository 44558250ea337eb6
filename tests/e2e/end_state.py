"""Following sent events to their end state: what the inbox holds, byte for byte.

A 2xx means the event is in the inbox and reads back as sent; a 4xx means nothing was
stored. ``sqs_safe`` is the one change the pipeline makes to a payload's text (U+FFFE and
U+FFFF travel as escapes, which mean the same), so a stored payload must equal it exactly.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import msgspec

from shared.contract.envelope import sqs_safe
from tests.conftest import ApiKey, Service, wait_until


class StoredEvent(msgspec.Struct):
    event_id: str
    event_type: str
    payload: msgspec.Raw  # the bytes the inbox sent, not re-encoded by this test


class _Page(msgspec.Struct):
    events: list[StoredEvent]
    next_cursor: str | None
    has_more: bool
    total_undelivered: int


class SentEvent(msgspec.Struct):
    event_type: str
    payload: msgspec.Raw


@dataclass(frozen=True)
class Post:
    key: ApiKey
    path: str
    body: bytes


def expected_payload(body: bytes) -> bytes:
    """The payload of an accepted event as the inbox must return it."""
    return sqs_safe(bytes(msgspec.json.decode(body, type=SentEvent).payload))


def warm_up(http: httpx.Client, ingest: Service, key: ApiKey) -> None:
    """Have the edge verify the key once (an empty body: 400, nothing stored), so that a
    burst of first uses of many keys does not meet the edge's cap on concurrent bcrypt checks."""
    answer = http.post(
        f"{ingest.url}/events", content=b"{}", headers={**key.headers, "Content-Type": "application/json"}
    )
    assert answer.status_code == 400, answer.text


def post_all(ingest: Service, posts: Sequence[Post]) -> list[httpx.Response]:
    """Every post at the same moment (one event loop, many connections), answers in order."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(posts))
        async with httpx.AsyncClient(base_url=ingest.url, timeout=30.0, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post(p.path, content=p.body, headers={**p.key.headers, "Content-Type": "application/json"})
                    for p in posts
                )
            )

    return asyncio.run(run())


def inbox_events(http: httpx.Client, inbox: Service, key: ApiKey) -> dict[str, StoredEvent]:
    """Every undelivered event of the key's account, paged with the cursor; none twice."""
    events: dict[str, StoredEvent] = {}
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        response = http.get(f"{inbox.url}/inbox", params=params, headers=key.headers)
        assert response.status_code == 200, response.text
        page = msgspec.json.decode(response.content, type=_Page)
        for event in page.events:
            assert event.event_id not in events, "an event was returned twice"
            events[event.event_id] = event
        if not page.has_more:
            return events
        cursor = page.next_cursor


def settled_inbox(
    http: httpx.Client,
    ingest: Service,
    inbox: Service,
    key: ApiKey,
    accepted: Sequence[str] = (),
    timeout_s: float = 30.0,
) -> dict[str, StoredEvent]:
    """The account's inbox once the writer has caught up: every ``accepted`` id and a
    sentinel event sent now, after everything else of the account, are stored (SQS does not
    keep order, so the sentinel alone would not prove it). The sentinel is left out."""
    sentinel = http.post(
        f"{ingest.url}/events",
        json={"event_type": "sentinel", "payload": {"s": uuid.uuid4().hex}},
        headers=key.headers,
    )
    assert sentinel.status_code == 202, sentinel.text
    wanted = {sentinel.json()["event_id"], *accepted}
    wait_until(lambda: wanted <= inbox_events(http, inbox, key).keys(), timeout_s)
    missing = wanted - inbox_events(http, inbox, key).keys()
    assert not missing, f"accepted but not stored within {timeout_s:g} s: {sorted(missing)}"
    events = inbox_events(http, inbox, key)
    del events[sentinel.json()["event_id"]]
    return events
