"""``triggers send`` and ``triggers tail``: the developer's two ends of the pipeline, over HTTP.

They speak to the services exactly as any client does, through triggers_client (send,
send_batch, inbox_page, ack_many), so what they show is what a consumer would see.

``tail`` polls: the inbox has no long poll yet (issue 19), so it sweeps the undelivered
events from the start every ``interval`` seconds. It remembers the ids it printed (a set
that grows with what it printed: this is a developer's tool, not a consumer) and prints each
event once; with ``--ack`` it acknowledges each page once printed, so the next sweep reads
only what is new.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from shared.aws.clients import open_clients
from shared.keys.admin import create_key
from shared.keys.model import KeyStatus, Scope
from shared.keys.store import DynamoKeyStore
from shared.settings import Settings
from triggers_client import AsyncTriggersClient, Event

BATCH_EVENTS = 500  # POST /events/batch takes at most this many (ingest_api/schemas.py)
PAGE_EVENTS = 100  # an inbox page, and POST /inbox/ack's most ids (inbox_api/schemas.py)
TAIL_WAIT_S = 20  # how long an empty inbox's page waits for an event (the contract's longest)
TEMPORARY_KEY_NAME = "triggers-cli (temporary)"


class EventLineError(ValueError):
    """A line of an events file that is not an event object; nothing was sent."""


@dataclass(frozen=True, slots=True)
class Sent:
    """The outcome of one event of a file: its line and the service's answer for it."""

    line: int
    answer: dict[str, Any]

    @property
    def refused(self) -> bool:
        return "error" in self.answer


def read_events(lines: Iterable[str], default_type: str | None) -> list[tuple[int, dict[str, Any]]]:
    """(line number, event) of every non-blank line; EventLineError on the first bad one."""
    events = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            event = msgspec.json.decode(text)
        except msgspec.DecodeError:
            raise EventLineError(f"line {number} is not JSON") from None
        if not isinstance(event, dict):
            raise EventLineError(f"line {number} is not a JSON object")
        if default_type is not None:
            event.setdefault("event_type", default_type)
        events.append((number, event))
    return events


async def send_all(client: AsyncTriggersClient, events: Sequence[tuple[int, dict[str, Any]]]) -> AsyncIterator[Sent]:
    """Each event's outcome, in file order, sent in batches of up to 500."""
    for start in range(0, len(events), BATCH_EVENTS):
        chunk = events[start : start + BATCH_EVENTS]
        result = await client.send_batch([event for _, event in chunk])
        for (number, _), item in zip(chunk, result.results, strict=True):
            answer = msgspec.to_builtins(item)
            yield Sent(number, {k: v for k, v in answer.items() if v is not None})


async def tail(
    client: AsyncTriggersClient,
    emit: Callable[[Event], None],
    *,
    event_type: str | None,
    ack: bool,
    interval_s: float,
    count: int | None = None,
) -> int:
    """Print undelivered events as they arrive: forever, or until ``count`` are printed (and
    acknowledged, with ``ack``). How many it printed."""
    printed: set[str] = set()
    wait_s = 0
    while True:
        empty = await _sweep(client, emit, printed, event_type=event_type, ack=ack, count=count, wait_s=wait_s)
        if count is not None and len(printed) >= count:
            return len(printed)
        # An empty inbox: the next sweep's first page waits for an event (long polling). Events
        # printed but not acknowledged keep the inbox non-empty: then a pause between sweeps.
        wait_s = TAIL_WAIT_S if empty else 0
        if not empty:
            await asyncio.sleep(interval_s)


async def _sweep(
    client: AsyncTriggersClient,
    emit: Callable[[Event], None],
    printed: set[str],
    *,
    event_type: str | None,
    ack: bool,
    count: int | None,
    wait_s: int,
) -> bool:
    """One pass over the inbox; whether it was empty."""
    cursor = None
    first = True
    while count is None or len(printed) < count:
        page = await client.inbox_page(limit=PAGE_EVENTS, cursor=cursor, event_type=event_type, wait_s=wait_s)
        if first and not page.events and not page.has_more:
            return True
        first, wait_s = False, 0
        new = [event for event in page.events if event.event_id not in printed]
        if count is not None:
            new = new[: count - len(printed)]
        for event in new:
            emit(event)
        if ack and new:
            # Printed (emit flushes) before acknowledged: an event is never acknowledged unseen.
            await client.ack_many([event.event_id for event in new])
        # Remembered with --ack too: a page read just after an acknowledgement may still
        # show the event (the inbox indexes are eventually consistent).
        printed.update(event.event_id for event in new)
        if not page.has_more or page.next_cursor is None:
            return False
        cursor = page.next_cursor
    return False


@contextlib.asynccontextmanager
async def temporary_key(settings: Settings, account: str, scope: Scope) -> AsyncIterator[str]:
    """A key of ``account`` with ``scope`` for the command's life, revoked when it ends.

    For developers with AWS access to the stack (as `triggers keys` needs): no key to copy
    around. The revoked record stays in the keys table, as every revoked key does; a revoked
    key may still pass an instance's verified-key cache for TRIGGERS_KEY_CACHE_TTL_S.
    """
    async with open_clients(settings, pool_size=2) as clients:
        store = DynamoKeyStore(clients.dynamodb, settings.keys_table)
        key, record = await create_key(
            store,
            account_id=account,
            scopes=frozenset({scope}),
            rate_limit_per_minute=settings.default_rate_limit_per_minute,
            bcrypt_rounds=settings.bcrypt_rounds,
            name=TEMPORARY_KEY_NAME,
        )
        try:
            yield key
        finally:
            await store.update(record.key_id, status=KeyStatus.REVOKED)
