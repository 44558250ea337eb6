"""Worker helpers: claim, run a handler per event, keep the leases alive while it runs, ack
what it handled, nack with backoff what it failed (``work`` for the sync client, ``awork``
for the async one).

Several workers (threads, processes, hosts) may run on one consumer: a claim leases its
events, so no two get the same event while its lease holds. Events of one claim are handled
one after the other; a keeper extends the leases of every event of the claim not settled yet
every third of ``lease_s``, so a slow handler keeps its events, and a worker that dies
(SIGKILL included) stops extending: its events come back when their leases end. A handler
that raises gets its event nacked with ``NackBackoff`` (the delay doubling with each
delivery); after the consumer's ``max_deliveries`` the service moves it to the failed list.
Stopping (``stop`` set) gives back, with no delay, the events claimed but not handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from triggers_client._async import AsyncTriggersClient
from triggers_client._errors import TriggersError
from triggers_client._models import ClaimedEvent
from triggers_client._sync import TriggersClient

_IDLE_S = 1.0


@dataclass(frozen=True, slots=True)
class NackBackoff:
    """How long a failed event waits before it may be claimed again: ``base_s`` doubled with
    each delivery it has had, at most ``cap_s``."""

    base_s: int = 1
    cap_s: int = 600

    def delay_s(self, deliveries: int) -> int:
        return min(self.cap_s, self.base_s << min(max(0, deliveries - 1), 30))


@dataclass(slots=True)
class WorkSummary:
    handled: int = 0  # acknowledged after the handler returned
    failed: int = 0  # the handler raised: nacked
    lost: int = 0  # handled, but the lease had been lost (claimed again elsewhere) before the ack
    given_back: int = 0  # claimed, not handled before the stop: nacked with no delay
    unsettled: int = 0  # its ack or nack failed (after the client's retries): back when its lease ends


@dataclass(slots=True)
class _Claimed:
    """The events of one claim that are not settled yet (what the keeper extends)."""

    pending: dict[str, ClaimedEvent] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tokens(self) -> list[str]:
        with self.lock:
            return [e.lease_token for e in self.pending.values()]

    def settle(self, event: ClaimedEvent) -> None:
        with self.lock:
            self.pending.pop(event.event_id, None)


def work(
    client: TriggersClient,
    handler: Callable[[ClaimedEvent], object],
    *,
    consumer: str | None = None,
    limit: int = 10,
    lease_s: int = 30,
    wait_s: int = 20,
    stop: threading.Event | None = None,
    backoff: NackBackoff = NackBackoff(),
) -> WorkSummary:
    """Handle the consumer's events until ``stop`` is set; what became of them."""
    stop = stop or threading.Event()
    summary = WorkSummary()
    while not stop.is_set():
        try:
            events = client.claim(limit=limit, lease_s=lease_s, wait_s=wait_s, consumer=consumer).events
        except TriggersError as exc:  # an outage, a 429: wait, and claim again
            if not exc.retryable:
                raise
            stop.wait(_IDLE_S)
            continue
        if not events and not wait_s:  # no long poll: a pause, not a tight loop of claims
            stop.wait(_IDLE_S)
        claimed = _Claimed({e.event_id: e for e in events})
        done = threading.Event()
        keeper = threading.Thread(target=_keep, args=(client, claimed, lease_s, consumer, done), daemon=True)
        keeper.start()
        try:
            for event in events:
                if stop.is_set():
                    break
                _handle(client, handler, event, consumer=consumer, backoff=backoff, summary=summary)
                claimed.settle(event)
        finally:
            done.set()
            keeper.join()
            if left := claimed.tokens():
                summary.given_back += len(client.nack(left, consumer=consumer).nacked)
    return summary


def _handle(
    client: TriggersClient,
    handler: Callable[[ClaimedEvent], object],
    event: ClaimedEvent,
    *,
    consumer: str | None,
    backoff: NackBackoff,
    summary: WorkSummary,
) -> None:
    try:
        handler(event)
    except Exception:  # noqa: BLE001 - any failure of the handler is the event's: it is nacked
        summary.failed += 1
        with _unsettled(summary):
            client.nack([event], delay_s=backoff.delay_s(event.deliveries), consumer=consumer)
        return
    with _unsettled(summary):
        if client.ack_claimed([event], consumer=consumer).refused:
            summary.lost += 1
        else:
            summary.handled += 1


@contextlib.contextmanager
def _unsettled(summary: WorkSummary) -> Iterator[None]:
    """An ack or nack that failed after the client's retries: its event comes back when its
    lease ends (handled again then), which is no reason to stop working."""
    try:
        yield
    except TriggersError:
        summary.unsettled += 1


def _keep(client: TriggersClient, claimed: _Claimed, lease_s: int, consumer: str | None, done: threading.Event) -> None:
    while not done.wait(lease_s / 3):
        if tokens := claimed.tokens():
            try:
                client.extend(tokens, lease_s=lease_s, consumer=consumer)
            except Exception:  # noqa: BLE001, S112 - the next round tries again; a lease lost shows at the ack
                continue


async def awork(
    client: AsyncTriggersClient,
    handler: Callable[[ClaimedEvent], Awaitable[object]],
    *,
    consumer: str | None = None,
    limit: int = 10,
    lease_s: int = 30,
    wait_s: int = 20,
    stop: asyncio.Event | None = None,
    backoff: NackBackoff = NackBackoff(),
) -> WorkSummary:
    """``work`` for the async client: handle the consumer's events until ``stop`` is set."""
    stop = stop or asyncio.Event()
    summary = WorkSummary()
    while not stop.is_set():
        try:
            events = (await client.claim(limit=limit, lease_s=lease_s, wait_s=wait_s, consumer=consumer)).events
        except TriggersError as exc:  # an outage, a 429: wait, and claim again
            if not exc.retryable:
                raise
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _IDLE_S)
            continue
        if not events and not wait_s:  # no long poll: a pause, not a tight loop of claims
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _IDLE_S)
        claimed = _Claimed({e.event_id: e for e in events})
        keeper = asyncio.create_task(_akeep(client, claimed, lease_s, consumer))
        try:
            for event in events:
                if stop.is_set():
                    break
                await _ahandle(client, handler, event, consumer=consumer, backoff=backoff, summary=summary)
                claimed.settle(event)
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            if left := claimed.tokens():
                summary.given_back += len((await client.nack(left, consumer=consumer)).nacked)
    return summary


async def _ahandle(
    client: AsyncTriggersClient,
    handler: Callable[[ClaimedEvent], Awaitable[object]],
    event: ClaimedEvent,
    *,
    consumer: str | None,
    backoff: NackBackoff,
    summary: WorkSummary,
) -> None:
    try:
        await handler(event)
    except Exception:  # noqa: BLE001 - any failure of the handler is the event's: it is nacked
        summary.failed += 1
        with _unsettled(summary):
            await client.nack([event], delay_s=backoff.delay_s(event.deliveries), consumer=consumer)
        return
    with _unsettled(summary):
        if (await client.ack_claimed([event], consumer=consumer)).refused:
            summary.lost += 1
        else:
            summary.handled += 1


async def _akeep(client: AsyncTriggersClient, claimed: _Claimed, lease_s: int, consumer: str | None) -> None:
    while True:
        await asyncio.sleep(lease_s / 3)
        if tokens := claimed.tokens():
            try:
                await client.extend(tokens, lease_s=lease_s, consumer=consumer)
            except Exception:  # noqa: BLE001, S112 - the next round tries again; a lease lost shows at the ack
                continue
