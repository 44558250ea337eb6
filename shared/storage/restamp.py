"""Moving items that reached the inbox late to a fresh position: the writer's events and the
copies of named consumers (``shared.storage.copies``) settle the same way, here.

An inbox shows positions at least the settle margin old; an item whose commit came later
than that after its stamp may sit behind a cursor handed out meanwhile. A fresh position is
after every such cursor (docs/architecture.md, "Inbox: paging and counts"). So:
- after a commit that took longer than a quarter of the margin (``late``), every item it
  put moves (``move_written``);
- an item met already stored (redelivery, a retry after a timeout) whose stamp is older
  than that moves too (``move_stale``): the earlier attempt may have committed late, after
  its writer stopped waiting, and so never moved it.
A move applies only while the item is undelivered where it was put: a pager that saw it at
its old position sees it once more (a repeat, never a skip). A move that fails leaves the
item unsettled (``Unsettled``): its caller's message must come back and move it then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from shared.observability.metrics import WRITER_RESTAMP_FAILURES, WRITER_RESTAMPS
from shared.storage.events import Placement, placement, restamp_update
from shared.storage.layout import inbox_position, position_stamp_us
from shared.storage.transactions import unavailable

log = structlog.get_logger()

# Moves of one late-committed item to a fresh position before giving up.
RESTAMP_ATTEMPTS = 3
# The share of the settle margin a commit may take before its items are re-stamped: the
# rest is for the index's propagation and clock differences between hosts (the budget in
# docs/architecture.md, "Inbox: paging and counts").
RESTAMP_FRACTION = 4


@dataclass(frozen=True, slots=True)
class Unsettled:
    """A move that failed: the item may sit behind a cursor, so its message must come back."""

    unavailable: bool  # storage as a whole did not answer (the caller's UNAVAILABLE); else RETRY
    reason: str


def late_commit_us(settle_ms: int) -> int:
    """How long after its stamp a commit may answer before its items are moved (0: never)."""
    return settle_ms * 1000 // RESTAMP_FRACTION


class Restamper:
    def __init__(
        self,
        client: Any,  # LeanDynamoDB, or a test's wrapper of it: update_item is all it calls
        events_table: str,
        settle_ms: int,
        clock_us: Callable[[], int],
        monotonic_us: Callable[[], int],
    ) -> None:
        self._client = client
        self._table = events_table
        self._clock_us = clock_us
        self._monotonic_us = monotonic_us
        self.late_commit_us = late_commit_us(settle_ms)

    def late(self, took_us: int) -> bool:
        """Did a commit that took this long (monotonic) come too late? Never with a margin of 0,
        which shows items at once: nothing to settle."""
        return bool(self.late_commit_us) and took_us > self.late_commit_us

    async def move_written(self, items: Iterable[dict[str, Any]], cause: str) -> list[tuple[Placement, Unsettled]]:
        """Move every item a late commit put (the items as written); the moves that failed."""
        return await self._move_all([p for item in items if (p := placement(item)) is not None], cause)

    async def move_stale(self, stored: Iterable[dict[str, Any]], cause: str) -> list[tuple[Placement, Unsettled]]:
        """Move the items met already stored (as stored: ALL_OLD) whose stamp is older than the
        late-commit threshold and that are still undelivered; the moves that failed."""
        if not self.late_commit_us:
            return []
        now_us = self._clock_us()
        places = [p for item in stored if (p := placement(item)) is not None]
        stale = [p for p in places if now_us - position_stamp_us(p.position) > self.late_commit_us]
        return await self._move_all(stale, cause)

    async def _move_all(self, moves: list[Placement], cause: str) -> list[tuple[Placement, Unsettled]]:
        if not moves:
            return []
        outcomes = await asyncio.gather(*(self._move(move) for move in moves))
        failed = []
        for move, failure in zip(moves, outcomes, strict=True):
            if failure is None:
                WRITER_RESTAMPS.labels(cause).inc()
            else:
                failed.append((move, failure))
        return failed

    async def _move(self, place: Placement) -> Unsettled | None:
        """Move one item to a fresh position, if it is still undelivered where it was put.

        None when that is done (or it was acknowledged, or moved by another writer,
        meanwhile); else why it is not settled.
        """
        for _ in range(RESTAMP_ATTEMPTS):
            new = inbox_position(self._clock_us(), place.event_id)
            started_us = self._monotonic_us()
            try:
                await self._client.update_item(**restamp_update(self._table, place, new))
            except ClientError as exc:
                if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                    return None  # acknowledged or moved meanwhile: nothing left behind
                return _failed(Unsettled(unavailable(exc), exc.response["Error"]["Code"]))
            except BotoCoreError as exc:
                return _failed(Unsettled(True, type(exc).__name__))
            if self._monotonic_us() - started_us <= self.late_commit_us:
                return None
            place = msgspec.structs.replace(place, position=new)  # this write was late too: move it once more
        return _failed(Unsettled(False, "restamp late again"))


def _failed(failure: Unsettled) -> Unsettled:
    WRITER_RESTAMP_FAILURES.labels("unavailable" if failure.unavailable else "retry").inc()
    log.warning("restamp_failed", error=failure.reason)
    return failure
