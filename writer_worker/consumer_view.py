"""The writer's view of each account's named consumers: what its events are copied into.

A view is one consistent Query of the account's items in the consumers table
(``consumers.view_query``, every page), kept for at most ``consumer_view_s`` measured from
when the read was SENT (monotonic clock): a consumer committed at T is in every view read
after T, so in every view used after T + view_s, which is what the backfill's start counts
on (docs/architecture.md, "Consumers"). Only active consumers are kept: writers skip
deleting ones.

Concurrent callers for one account share one read. Memory is bounded: the least recently
used accounts are forgotten first. A failed read is not kept (the next caller reads again)
and raises ``ViewUnavailable``: the events of that account are not settled until their
copies are.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from shared.aws.dynamodb import LeanDynamoDB
from shared.settings import Settings
from shared.storage.consumers import Consumer, Status, consumers_of, view_query
from shared.storage.transactions import unavailable

log = structlog.get_logger()

# Accounts whose views one writer process keeps: a few hundred bytes each for accounts
# without consumers, the common case.
VIEWS_REMEMBERED = 100_000


class ViewUnavailable(Exception):
    """The account's consumers could not be read: its events wait (UNAVAILABLE or RETRY)."""

    def __init__(self, reason: str, *, outage: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.outage = outage  # storage as a whole did not answer


@dataclass(frozen=True, slots=True)
class _View:
    sent_at: float  # monotonic seconds when its read was sent
    consumers: tuple[Consumer, ...]  # active ones only


class ConsumerViews:
    def __init__(
        self,
        client: LeanDynamoDB,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        remembered: int = VIEWS_REMEMBERED,
    ) -> None:
        self._client = client
        self._table = settings.consumers_table
        self._max_age_s = settings.consumer_view_s
        self._clock = clock
        self._remembered = remembered
        self._views: OrderedDict[str, _View] = OrderedDict()
        self._reading: dict[str, asyncio.Future[_View]] = {}

    def cached(self, account_id: str) -> tuple[Consumer, ...] | None:
        """The account's active consumers if a view younger than ``consumer_view_s`` is kept:
        no read, no await (the hot path of accounts without consumers); else None."""
        view = self._views.get(account_id)
        if view is None or self._clock() - view.sent_at >= self._max_age_s:
            return None
        self._views.move_to_end(account_id)
        return view.consumers

    async def active(self, account_id: str) -> tuple[Consumer, ...]:
        """The account's active consumers, from a view younger than ``consumer_view_s`` now."""
        consumers = self.cached(account_id)
        if consumers is not None:
            return consumers
        reading = self._reading.get(account_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read(account_id))
            self._reading[account_id] = reading
            reading.add_done_callback(lambda done: self._done(account_id, done))
        view = await asyncio.shield(reading)  # one caller cancelled leaves the read to the others
        if self._clock() - view.sent_at >= self._max_age_s:
            # The read took longer than a view may be used: nothing it says can be relied on.
            raise ViewUnavailable("consumer view read too slow", outage=False)
        return view.consumers

    async def _read(self, account_id: str) -> _View:
        sent_at = self._clock()  # before the first page is asked for: the age counts from here
        query = view_query(self._table, account_id)
        items: list[dict[str, Any]] = []
        try:
            while True:
                answer = await self._client.query(**query)
                items += answer.get("Items", [])
                last = answer.get("LastEvaluatedKey")
                if not last:
                    break
                query = {**query, "ExclusiveStartKey": last}
            consumers = tuple(c for c in consumers_of(items) if c.status is Status.ACTIVE)
        except (ClientError, BotoCoreError) as exc:
            code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
            log.warning("consumer_view_failed", error=code)
            raise ViewUnavailable(code, outage=unavailable(exc)) from exc
        except (KeyError, ValueError) as exc:  # an item this release cannot read: copies cannot be decided
            log.error("consumer_view_unreadable", error=f"{type(exc).__name__}: {exc}")
            raise ViewUnavailable("consumer item unreadable", outage=False) from exc
        view = _View(sent_at, consumers)
        self._views[account_id] = view
        self._views.move_to_end(account_id)
        while len(self._views) > self._remembered:
            self._views.popitem(last=False)
        return view

    def _done(self, account_id: str, done: asyncio.Future[_View]) -> None:
        if self._reading.get(account_id) is done:
            del self._reading[account_id]
        if not done.cancelled():
            done.exception()  # retrieved: its waiters have it, or none is left to
