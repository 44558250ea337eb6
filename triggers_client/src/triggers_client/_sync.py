"""The synchronous client: ``TriggersClient`` (the async one, ``AsyncTriggersClient``, mirrors it)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
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
_sleep = time.sleep  # a module attribute, so the tests can watch the waits


class TriggersClient:
    """Send events, page through the inbox, acknowledge; retries as ``retry`` says.

    Every inbox call takes ``consumer``: a named consumer's own inbox (None, the default, is
    the ``default`` consumer, the inbox as it was before named consumers).
    ``ingest_url`` and ``inbox_url`` may be the same (both services behind one load balancer).
    Use it as a context manager, or call ``close()``; one client is safe to share across threads.
    """

    def __init__(
        self,
        api_key: str,
        *,
        ingest_url: str = "http://127.0.0.1:8000",
        inbox_url: str = "http://127.0.0.1:8001",
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._calls = Calls(ingest_url, inbox_url)
        self._retry = retry
        self._http = httpx.Client(headers=base_headers(api_key), timeout=timeout_s, transport=transport)

    def __enter__(self) -> TriggersClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- producers ---------------------------------------------------------------------

    def send(self, event_type: str, payload: Mapping[str, Any], *, idempotency_key: str | None = None) -> Accepted:
        """One event; without ``idempotency_key`` the client makes one (kept across retries)."""
        return self._run(self._calls.send(event_type, payload, idempotency_key))

    def send_batch(self, events: Sequence[NewEvent | Mapping[str, Any]]) -> BatchResult:
        """1 to 500 events; one result per event, in order (``BatchItem.accepted``)."""
        return self._run(self._calls.send_batch(events))

    # --- inbox (of the default consumer, or of ``consumer``) ---------------------------------

    def inbox_page(
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
        return self._run(self._calls.inbox_page(limit, cursor, event_type, order, consumer, wait_s))

    def iter_pages(
        self, *, limit: int = 50, event_type: str | None = None, order: Order = "asc", consumer: str | None = None
    ) -> Iterator[InboxPage]:
        """One sweep through the undelivered events, page by page, following the cursors."""
        cursor = None
        while True:
            page = self.inbox_page(limit=limit, cursor=cursor, event_type=event_type, order=order, consumer=consumer)
            yield page
            if not page.has_more or page.next_cursor is None:
                return
            cursor = page.next_cursor

    def iter_events(
        self, *, limit: int = 50, event_type: str | None = None, order: Order = "asc", consumer: str | None = None
    ) -> Iterator[Event]:
        """The events of ``iter_pages``, one by one (acknowledging them meanwhile is fine)."""
        for page in self.iter_pages(limit=limit, event_type=event_type, order=order, consumer=consumer):
            yield from page.events

    def get(self, event_id: str, *, consumer: str | None = None) -> Event:
        return self._run(self._calls.get(event_id, consumer))

    def ack(self, event_id: str, *, consumer: str | None = None) -> None:
        """Acknowledge for ``consumer`` only: the event stays undelivered for the others."""
        self._run(self._calls.ack(event_id, consumer))

    def ack_many(self, event_ids: Sequence[str], *, consumer: str | None = None) -> AckResult:
        """1 to 100 ids: which were acknowledged, which the consumer has no event of."""
        return self._run(self._calls.ack_many(event_ids, consumer))

    # --- leases: several workers on one consumer (docs/api.md, "Leases") ------------------

    def claim(self, *, limit: int = 10, lease_s: int = 30, wait_s: int = 0, consumer: str | None = None) -> Claim:
        """Lease up to ``limit`` events nobody holds, for ``lease_s``; with ``wait_s`` (up to 20),
        wait that long for one when there is none. Nobody else gets them until the lease ends:
        ``ack_claimed`` them once handled, ``nack`` to give them back, ``extend`` to keep them."""
        return self._run(self._calls.claim(limit, lease_s, wait_s, consumer))

    def ack_claimed(self, events: Sequence[ClaimedEvent | str], *, consumer: str | None = None) -> AckResult:
        """Acknowledge claimed events (or their lease tokens); ``refused`` lists the tokens whose
        event was claimed again since (its lease had ended): someone else handles it now."""
        return self._run(self._calls.ack_leases(_tokens(events), consumer))

    def nack(
        self, events: Sequence[ClaimedEvent | str], *, delay_s: int = 0, consumer: str | None = None
    ) -> NackResult:
        """Give claimed events back, claimable again after ``delay_s`` (or, claimed ``max_deliveries``
        times, to the consumer's failed list)."""
        return self._run(self._calls.nack(_tokens(events), delay_s, consumer))

    def extend(
        self, events: Sequence[ClaimedEvent | str], *, lease_s: int = 30, consumer: str | None = None
    ) -> ExtendResult:
        """Make the leases of claimed events end ``lease_s`` from now."""
        return self._run(self._calls.extend(_tokens(events), lease_s, consumer))

    # --- named consumers ----------------------------------------------------------------

    def create_consumer(
        self, name: str, event_types: Sequence[str] | None = None, start: Start = "now"
    ) -> ConsumerInfo:
        """A consumer of the events of ``event_types`` (exact or ``prefix.*``; None: all) from ``start`` on.

        ``start``: "now", "earliest" (as far back as retention keeps events) or a time (an aware
        datetime or RFC 3339 text). ``Conflict`` if the name is taken (CONSUMER_EXISTS) or the
        account has its most consumers (CONSUMER_LIMIT).
        """
        return self._run(self._calls.create_consumer(name, event_types, start))

    def consumers(self) -> list[ConsumerInfo]:
        """The account's consumers: ``default`` first, then by name."""
        return self._run(self._calls.consumers()).consumers

    def consumer(self, name: str) -> ConsumerInfo:
        """One consumer, with its count of undelivered events and its backfill's progress."""
        return self._run(self._calls.consumer(name))

    def update_consumer(self, name: str, event_types: Sequence[str] | None) -> ConsumerInfo:
        """Replace its filter (None: every type), for events stored from then on; copies made stay."""
        return self._run(self._calls.update_consumer(name, event_types))

    def delete_consumer(self, name: str) -> None:
        """Delete it and, soon after, its events; the name is free at once. ``default``: ``Conflict``."""
        self._run(self._calls.delete_consumer(name))

    def status(self) -> Health:
        """Both services' ``GET /status`` (no key needed)."""
        return Health(ingest=self._run(self._calls.status("ingest")), inbox=self._run(self._calls.status("inbox")))

    # --- plumbing ----------------------------------------------------------------------

    def _run(self, call: Call[T]) -> T:
        for retry in count():
            cause: Exception | None = None
            error: TriggersError
            try:
                response = self._send(call)
            except HTTPX_ERRORS as exc:
                cause, error = exc, error_from_exception(exc)
            else:
                if response.status_code in call.ok:
                    return call.result(response)
                error = error_from_response(response)
            wait = self._retry.delay_s(retry, error)
            if wait is None:
                raise error from cause
            _sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, call: Call[T]) -> httpx.Response:
        # Streamed, then read: a body that cannot be decoded still leaves its status and request id.
        request = self._http.build_request(
            call.method,
            call.url,
            content=call.content,
            params=call.params,
            headers=call.wire_headers(),
            **_timeout(call),
        )
        response = self._http.send(request, stream=True)
        try:
            response.read()
        except httpx.DecodingError as exc:
            raise undecodable(response, exc) from exc  # never retried: the same bytes would come back
        finally:
            response.close()
        return response
