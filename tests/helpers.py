"""Small helpers that tests of several behaviours share."""

from __future__ import annotations

from inbox_api.store import InboxStore


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
