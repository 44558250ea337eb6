"""Small helpers that tests of several behaviours share."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from inbox_api.store import InboxStore
from shared.contract.envelope import QueuedEvent
from shared.contract.ids import new_event_id
from writer_worker.worker import QueueUrls, Worker


class ManualClock:
    """A clock that moves only when a test sets ``now``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def sweep(
    store: InboxStore, account_id: str, event_type: str | None = None, *, descending: bool = False, limit: int = 200
) -> list[str]:
    """Every undelivered event id of the account, page after page from the start."""
    seen: list[str] = []
    after = None
    while True:
        page, has_more = await store.page(account_id, event_type, descending, limit, after)
        seen += [e.event_id for e in page]
        if not has_more:
            return seen
        after = page[-1].position


def queued_event(
    account: str,
    event_type: str,
    payload: dict[str, Any] | bytes,
    *,
    at_us: int | None = None,
    idempotency_key: str | None = None,
) -> QueuedEvent:
    """An event as the edge would queue it (now, or received at ``at_us``), for tests that put
    messages on SQS or hand events to the store directly."""
    received_us = time.time_ns() // 1000 if at_us is None else at_us
    raw = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    return QueuedEvent(
        event_id=new_event_id(received_us // 1000),
        account_id=account,
        event_type=event_type,
        payload=msgspec.Raw(raw),
        received_at_us=received_us,
        idempotency_key=idempotency_key,
    )


def fake_worker(sqs: Any, processor: Any, **options: Any) -> Worker:
    """A writer ``Worker`` on fakes: queues "events" and "dlq", one receiver, a 20 s long poll,
    2 s of shutdown grace and a 30 s visibility timeout, unless ``options`` say otherwise
    (``receivers``, ``grace_s``, ``visibility_s``; ``probe`` and ``probe_policy`` pass through)."""
    return Worker(
        sqs,
        QueueUrls("events", "dlq"),
        processor,
        receivers=options.pop("receivers", 1),
        wait_time_s=20,
        shutdown_grace_s=options.pop("grace_s", 2),
        visibility_timeout_s=options.pop("visibility_s", 30),
        **options,
    )
