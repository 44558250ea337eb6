"""The Triggers API client: send events, page through the inbox, acknowledge.

429 and 503 answers are retried after their ``Retry-After`` (bounded in count and wait).
Every event sent without an idempotency key gets one generated here, so a retried send
can never become two events: the service deduplicates by that key.

    async with TriggersClient(key, ingest_url="http://localhost:8000",
                              inbox_url="http://localhost:8001") as client:
        await client.send("order.created", {"order_id": 42})
        async for event in client.events():
            ...
            await client.ack(event.event_id)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import httpx
import msgspec

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({429, 503})
DEFAULT_MAX_RETRIES = 3
# Never wait longer than this for one retry, whatever Retry-After says.
DEFAULT_MAX_RETRY_WAIT_S = 30.0


# The wire format, restated for the client: it imports nothing of the services, so it can be
# vendored or published alone. tests/e2e/test_client.py holds the two sides together.
class Accepted(msgspec.Struct, frozen=True):
    event_id: str
    status: str
    received_at: str


class ErrorDetail(msgspec.Struct, frozen=True):
    field: str
    message: str


class ItemError(msgspec.Struct, frozen=True):
    status: int
    error_code: str
    message: str
    details: list[ErrorDetail] = []


class BatchItem(msgspec.Struct, frozen=True):
    event_id: str | None = None
    status: str | None = None
    error: ItemError | None = None


class BatchResult(msgspec.Struct, frozen=True):
    results: list[BatchItem]


class Event(msgspec.Struct, frozen=True):
    event_id: str
    event_type: str
    payload: dict[str, Any]
    received_at: str
    delivered: bool
    delivered_at: str | None


class InboxPage(msgspec.Struct, frozen=True):
    events: list[Event]
    next_cursor: str | None
    has_more: bool
    total_undelivered: int


class AckResult(msgspec.Struct, frozen=True):
    acknowledged: list[str]
    not_found: list[str]


class ErrorBody(msgspec.Struct, frozen=True):
    status: int
    error_code: str
    message: str
    details: list[ErrorDetail] = []
    correlation_id: str = ""


class ApiError(Exception):
    """An answer the client does not turn into a result (after any retries)."""

    def __init__(self, status: int, body: ErrorBody | None) -> None:
        self.status = status
        self.body = body
        super().__init__(f"{status} {body.error_code if body else ''}: {body.message if body else ''}".strip())


class TriggersClient:
    def __init__(
        self,
        api_key: str,
        *,
        ingest_url: str = "http://127.0.0.1:8000",
        inbox_url: str = "http://127.0.0.1:8001",
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait_s: float = DEFAULT_MAX_RETRY_WAIT_S,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._ingest = ingest_url.rstrip("/")
        self._inbox = inbox_url.rstrip("/")
        self._max_retries = max_retries
        self._max_wait = max_retry_wait_s
        self._http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s, transport=transport
        )

    async def __aenter__(self) -> TriggersClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- producers ---------------------------------------------------------------------

    async def send(
        self, event_type: str, payload: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> Accepted:
        body = {"event_type": event_type, "payload": payload, "idempotency_key": idempotency_key or _new_key()}
        return await self._call("POST", f"{self._ingest}/events", Accepted, json=body)

    async def send_batch(self, events: Sequence[Mapping[str, Any]]) -> BatchResult:
        """Up to 500 events (dicts with event_type, payload and optionally idempotency_key)."""
        body = {"events": [{"idempotency_key": _new_key(), **e} for e in events]}
        return await self._call("POST", f"{self._ingest}/events/batch", BatchResult, json=body, ok=(202, 207))

    # --- consumers ---------------------------------------------------------------------

    async def inbox_page(
        self,
        *,
        limit: int = 50,
        cursor: str | None = None,
        event_type: str | None = None,
        order: Literal["asc", "desc"] = "asc",
    ) -> InboxPage:
        params: dict[str, str | int] = {"limit": limit, "order": order}
        if cursor is not None:
            params["cursor"] = cursor
        if event_type is not None:
            params["event_type"] = event_type
        return await self._call("GET", f"{self._inbox}/inbox", InboxPage, params=params)

    async def pages(
        self, *, limit: int = 50, event_type: str | None = None, order: Literal["asc", "desc"] = "asc"
    ) -> AsyncIterator[InboxPage]:
        """One sweep through the undelivered events, page by page."""
        cursor = None
        while True:
            page = await self.inbox_page(limit=limit, cursor=cursor, event_type=event_type, order=order)
            yield page
            if not page.has_more or page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def events(self, *, limit: int = 50, event_type: str | None = None) -> AsyncIterator[Event]:
        async for page in self.pages(limit=limit, event_type=event_type):
            for event in page.events:
                yield event

    async def get(self, event_id: str) -> Event:
        return await self._call("GET", f"{self._inbox}/events/{event_id}", Event)

    async def ack(self, event_id: str) -> None:
        await self._call("DELETE", f"{self._inbox}/events/{event_id}", None, ok=(204,))

    async def ack_many(self, event_ids: Sequence[str]) -> AckResult:
        return await self._call("POST", f"{self._inbox}/inbox/ack", AckResult, json={"event_ids": list(event_ids)})

    # --- plumbing ----------------------------------------------------------------------

    async def _call(
        self, method: str, url: str, result: type[T] | None, *, ok: tuple[int, ...] = (200, 202), **kwargs: Any
    ) -> T:
        for attempt in range(self._max_retries + 1):
            response = await self._http.request(method, url, **kwargs)
            if response.status_code in ok:
                return msgspec.json.decode(response.content, type=result) if result is not None else None  # type: ignore[return-value]
            if response.status_code not in RETRYABLE_STATUSES or attempt == self._max_retries:
                raise ApiError(response.status_code, _error_body(response))
            await asyncio.sleep(self._retry_wait(response, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float:
        try:
            wait = float(response.headers.get("retry-after", ""))
        except ValueError:
            wait = 2.0**attempt
        return min(max(wait, 0.0), self._max_wait)


def _new_key() -> str:
    return f"client-{uuid.uuid4().hex}"


def _error_body(response: httpx.Response) -> ErrorBody | None:
    try:
        return msgspec.json.decode(response.content, type=ErrorBody)
    except msgspec.DecodeError:
        return None
