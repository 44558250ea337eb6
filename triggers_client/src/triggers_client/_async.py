"""The asynchronous client: ``AsyncTriggersClient``, the same surface as ``TriggersClient`` (_sync.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from itertools import count
from types import TracebackType
from typing import Any, TypeVar

import httpx

from triggers_client._calls import Call, Calls, Order, Start, base_headers
from triggers_client._calls import lease_tokens as _tokens
from triggers_client._calls import timeout_of as _timeout
from triggers_client._errors import HTTPX_ERRORS, TriggersError, error_from_exception, error_from_response, undecodable
from triggers_client._models import (
    Accepted,
    AckResult,
    BatchResult,
    Claim,
    ClaimedEvent,
    ConsumerInfo,
    Event,
    ExtendResult,
    Health,
    InboxPage,
    NackResult,
    NewEvent,
)
from triggers_client._retry import DEFAULT_RETRY, RetryPolicy

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 10.0
_sleep = asyncio.sleep  # a module attribute, so the tests can watch the waits


class AsyncTriggersClient:
    """Send events, page through the inbox, acknowledge; retries as ``retry`` says.

    Every inbox call takes ``consumer``: a named consumer's own inbox (None, the default, is
    the ``default`` consumer, the inbox as it was before named consumers).
    ``ingest_url`` and ``inbox_url`` may be the same (both services behind one load balancer).
    Use it as a context manager, or call ``aclose()``; share one client among the tasks of one event loop.
    """

    def __init__(
        self,
        api_key: str,
        *,
        ingest_url: str = "http://127.0.0.1:8000",
        inbox_url: str = "http://127.0.0.1:8001",
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._calls = Calls(ingest_url, inbox_url)
        self._retry = retry
        self._http = httpx.AsyncClient(headers=base_headers(api_key), timeout=timeout_s, transport=transport)

    async def __aenter__(self) -> AsyncTriggersClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- producers ---------------------------------------------------------------------

    async def send(
        self, event_type: str, payload: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Accepted:
        """One event; without ``idempotency_key`` the client makes one (kept across retries)."""
        return await self._run(self._calls.send(event_type, payload, idempotency_key))

    async def send_batch(self, events: Sequence[NewEvent | Mapping[str, Any]]) -> BatchResult:
        """1 to 500 events; one result per event, in order (``BatchItem.accepted``)."""
        return await self._run(self._calls.send_batch(events))

    # --- inbox (of the default consumer, or of ``consumer``) ---------------------------------

    async def inbox_page(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        event_type: str | None = None,
        order: Order = "asc",
        consumer: str | None = None,
        wait_s: int = 0,
    ) -> InboxPage:
        """One page; with ``wait_s`` (up to 20) and nothing to show, the answer waits that long
        for an event (long polling)."""
        return await self._run(self._calls.inbox_page(limit, cursor, event_type, order, consumer, wait_s))

    async def iter_pages(
        self, *, limit: int = 50, event_type: str | None = None, order: Order = "asc", consumer: str | None = None
    ) -> AsyncIterator[InboxPage]:
        """One sweep through the undelivered events, page by page, following the cursors."""
        cursor = None
        while True:
            page = await self.inbox_page(
                limit=limit, cursor=cursor, event_type=event_type, order=order, consumer=consumer
            )
            yield page
            if not page.has_more or page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def iter_events(
        self, *, limit: int = 50, event_type: str | None = None, order: Order = "asc", consumer: str | None = None
    ) -> AsyncIterator[Event]:
        """The events of ``iter_pages``, one by one (acknowledging them meanwhile is fine)."""
        async for page in self.iter_pages(limit=limit, event_type=event_type, order=order, consumer=consumer):
            for event in page.events:
                yield event

    async def get(self, event_id: str, *, consumer: str | None = None) -> Event:
        return await self._run(self._calls.get(event_id, consumer))

    async def ack(self, event_id: str, *, consumer: str | None = None) -> None:
        """Acknowledge for ``consumer`` only: the event stays undelivered for the others."""
        await self._run(self._calls.ack(event_id, consumer))

    async def ack_many(self, event_ids: Sequence[str], *, consumer: str | None = None) -> AckResult:
        """1 to 100 ids: which were acknowledged, which the consumer has no event of."""
        return await self._run(self._calls.ack_many(event_ids, consumer))

    # --- leases: several workers on one consumer (docs/api.md, "Leases") ------------------

    async def claim(self, *, limit: int = 10, lease_s: int = 30, wait_s: int = 0, consumer: str | None = None) -> Claim:
        """Lease up to ``limit`` events nobody holds, for ``lease_s``; with ``wait_s`` (up to 20),
        wait that long for one when there is none. Nobody else gets them until the lease ends:
        ``ack_claimed`` them once handled, ``nack`` to give them back, ``extend`` to keep them."""
        return await self._run(self._calls.claim(limit, lease_s, wait_s, consumer))

    async def ack_claimed(self, events: Sequence[ClaimedEvent | str], *, consumer: str | None = None) -> AckResult:
        """Acknowledge claimed events (or their lease tokens); ``refused`` lists the tokens whose
        event was claimed again since (its lease had ended): someone else handles it now."""
        return await self._run(self._calls.ack_leases(_tokens(events), consumer))

    async def nack(
        self, events: Sequence[ClaimedEvent | str], *, delay_s: int = 0, consumer: str | None = None
    ) -> NackResult:
        """Give claimed events back, claimable again after ``delay_s`` (or, claimed ``max_deliveries``
        times, to the consumer's failed list)."""
        return await self._run(self._calls.nack(_tokens(events), delay_s, consumer))

    async def extend(
        self, events: Sequence[ClaimedEvent | str], *, lease_s: int = 30, consumer: str | None = None
    ) -> ExtendResult:
        """Make the leases of claimed events end ``lease_s`` from now."""
        return await self._run(self._calls.extend(_tokens(events), lease_s, consumer))

    # --- named consumers ----------------------------------------------------------------

    async def create_consumer(
        self, name: str, event_types: Sequence[str] | None = None, start: Start = "now"
    ) -> ConsumerInfo:
        """A consumer of the events of ``event_types`` (exact or ``prefix.*``; None: all) from ``start`` on.

        ``start``: "now", "earliest" (as far back as retention keeps events) or a time (an aware
        datetime or RFC 3339 text). ``Conflict`` if the name is taken (CONSUMER_EXISTS) or the
        account has its most consumers (CONSUMER_LIMIT).
        """
        return await self._run(self._calls.create_consumer(name, event_types, start))

    async def consumers(self) -> list[ConsumerInfo]:
        """The account's consumers: ``default`` first, then by name."""
        return (await self._run(self._calls.consumers())).consumers

    async def consumer(self, name: str) -> ConsumerInfo:
        """One consumer, with its count of undelivered events and its backfill's progress."""
        return await self._run(self._calls.consumer(name))

    async def update_consumer(self, name: str, event_types: Sequence[str] | None) -> ConsumerInfo:
        """Replace its filter (None: every type), for events stored from then on; copies made stay."""
        return await self._run(self._calls.update_consumer(name, event_types))

    async def delete_consumer(self, name: str) -> None:
        """Delete it and, soon after, its events; the name is free at once. ``default``: ``Conflict``."""
        await self._run(self._calls.delete_consumer(name))

    async def status(self) -> Health:
        """Both services' ``GET /status`` (no key needed)."""
        return Health(
            ingest=await self._run(self._calls.status("ingest")), inbox=await self._run(self._calls.status("inbox"))
        )

    # --- plumbing ----------------------------------------------------------------------

    async def _run(self, call: Call[T]) -> T:
        for retry in count():
            cause: Exception | None = None
            error: TriggersError
            try:
                response = await self._send(call)
            except HTTPX_ERRORS as exc:
                cause, error = exc, error_from_exception(exc)
            else:
                if response.status_code in call.ok:
                    return call.result(response)
                error = error_from_response(response)
            wait = self._retry.delay_s(retry, error)
            if wait is None:
                raise error from cause
            await _sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, call: Call[T]) -> httpx.Response:
        # Streamed, then read: a body that cannot be decoded still leaves its status and request id.
        request = self._http.build_request(
            call.method,
            call.url,
            content=call.content,
            params=call.params,
            headers=call.wire_headers(),
            **_timeout(call),
        )
        response = await self._http.send(request, stream=True)
        try:
            await response.aread()
        except httpx.DecodingError as exc:
            raise undecodable(response, exc) from exc  # never retried: the same bytes would come back
        finally:
            await response.aclose()
        return response
