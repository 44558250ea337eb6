"""What the lease tests share: calls to the real inbox, as a claimer makes them."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ApiKey, Service, wait_until


def send(http: httpx.Client, ingest: Service, key: ApiKey, n: int, event_type: str = "order.created") -> str:
    response = http.post(
        f"{ingest.url}/events", json={"event_type": event_type, "payload": {"n": n}}, headers=key.headers
    )
    assert response.status_code == 202, response.text
    event_id: str = response.json()["event_id"]
    return event_id


def post(http: httpx.Client, inbox: Service, key: ApiKey, path: str, body: Any, **params: str) -> httpx.Response:
    return http.post(f"{inbox.url}{path}", json=body, params=params, headers=key.headers)


def call(http: httpx.Client, inbox: Service, key: ApiKey, path: str, body: Any, **params: str) -> dict[str, Any]:
    response = post(http, inbox, key, path, body, **params)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def claim(http: httpx.Client, inbox: Service, key: ApiKey, **body: Any) -> dict[str, Any]:
    consumer = body.pop("consumer", None)
    params = {"consumer": consumer} if consumer else {}
    return call(http, inbox, key, "/inbox/claim", body, **params)


def counts(answer: dict[str, Any]) -> tuple[int, int, int]:
    return answer["total_undelivered"], answer["in_flight"], answer["failed"]


def consumer_counts(http: httpx.Client, inbox: Service, key: ApiKey, name: str = "default") -> tuple[int, int, int]:
    response = http.get(f"{inbox.url}/consumers/{name}", headers=key.headers)
    assert response.status_code == 200, response.text
    return counts(response.json())


def stored(http: httpx.Client, inbox: Service, key: ApiKey, n: int) -> None:
    """Wait until the writer has stored ``n`` events of the account (available ones)."""
    assert wait_until(lambda: consumer_counts(http, inbox, key)[0] >= n), consumer_counts(http, inbox, key)


def event(http: httpx.Client, inbox: Service, key: ApiKey, event_id: str) -> dict[str, Any]:
    response = http.get(f"{inbox.url}/events/{event_id}", headers=key.headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer
