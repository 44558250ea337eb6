"""The client honours Retry-After on 429/503, within bounds, and gives up with the error."""

from __future__ import annotations

import json

import httpx
import pytest

from triggers_client import ApiError, TriggersClient

ACCEPTED = {"event_id": "01M8JTAJRHMRRAVC3GCG0R0A61", "status": "accepted", "received_at": "2026-01-01T00:00:00Z"}


def scripted(*answers: httpx.Response) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0)

    return httpx.MockTransport(handler), seen


def error(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"status": status, "error_code": "X", "message": "m", "details": [], "correlation_id": "c"}
    return httpx.Response(status, json=body, headers=headers)


async def test_a_send_waits_out_429_and_503_then_succeeds() -> None:
    transport, seen = scripted(error(429, "0"), error(503, "0"), httpx.Response(202, json=ACCEPTED))
    async with TriggersClient("k", transport=transport) as client:
        accepted = await client.send("t", {"a": 1})
    assert accepted.event_id == ACCEPTED["event_id"]
    assert len(seen) == 3
    keys = {json.loads(r.content)["idempotency_key"] for r in seen}
    assert len(keys) == 1  # the retries carry the same generated key: the service dedups them


async def test_retries_are_bounded_and_the_last_error_is_raised() -> None:
    transport, seen = scripted(*[error(503, "0")] * 3)
    async with TriggersClient("k", transport=transport, max_retries=2) as client:
        with pytest.raises(ApiError) as caught:
            await client.send("t", {})
    assert caught.value.status == 503
    assert len(seen) == 3


async def test_a_client_error_is_not_retried() -> None:
    transport, seen = scripted(error(400))
    async with TriggersClient("k", transport=transport) as client:
        with pytest.raises(ApiError) as caught:
            await client.send("t", {})
    assert caught.value.status == 400
    assert caught.value.body is not None
    assert caught.value.body.error_code == "X"
    assert len(seen) == 1


async def test_retry_after_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("triggers_client.client.asyncio.sleep", sleep)
    transport, _ = scripted(error(429, "3600"), httpx.Response(202, json=ACCEPTED))
    async with TriggersClient("k", transport=transport, max_retry_wait_s=5) as client:
        await client.send("t", {})
    assert waits == [5]
