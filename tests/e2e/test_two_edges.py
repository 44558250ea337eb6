"""Deduplication that does not live in one process: two ingest instances, one inbox entry."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from shared.local import processes
from tests.conftest import ApiKey, Service, Stack, start_service, wait_until

pytestmark = pytest.mark.usefixtures("writer")


@pytest.fixture(scope="module")
def edges(stack: Stack, ingest: Service) -> Iterator[tuple[Service, Service]]:
    second = start_service(stack, "ingest")
    yield ingest, second
    processes.stop([second.process])


def resolve_all(http: httpx.Client, inbox: Service, key: ApiKey, ids: list[str]) -> set[str]:
    """The event ids that GET /events/{id} returns for ``ids``; empty while any is unknown."""
    answers = [http.get(f"{inbox.url}/events/{i}", headers=key.headers) for i in ids]
    if any(a.status_code != 200 for a in answers):
        return set()
    return {a.json()["event_id"] for a in answers}


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"event_type": "sync", "payload": {"b": 2, "a": 1}}, {}),
        ({"event_type": "sync", "payload": {"n": 1}}, {"Idempotency-Key": "same-key"}),
    ],
    ids=["same-payload", "same-idempotency-key"],
)
def test_the_same_event_sent_to_two_instances_at_once_is_one_inbox_entry(
    http: httpx.Client,
    edges: tuple[Service, Service],
    inbox: Service,
    api_key: ApiKey,
    body: dict[str, object],
    headers: dict[str, str],
) -> None:
    def send(service: Service) -> str:
        response = httpx.post(f"{service.url}/events", json=body, headers={**api_key.headers, **headers})
        assert response.status_code == 202
        event_id: str = response.json()["event_id"]
        return event_id

    first, second = edges
    all_ids: list[str] = []
    for _ in range(3):  # three rounds of simultaneous copies, all within the window
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(send, [first, second, first, second]))
        assert len(set(ids)) == 4  # the edge writes nothing per event: each copy gets its own id
        all_ids += ids

    originals = wait_until(lambda: resolve_all(http, inbox, api_key, all_ids))
    assert isinstance(originals, set)
    assert len(originals) == 1  # every answer resolves to the one stored event
    assert originals.pop() in all_ids  # one of the copies (SQS keeps no order: any may win)
    page = http.get(f"{inbox.url}/inbox", headers=api_key.headers).json()
    assert page["total_undelivered"] == 1
    assert len(page["events"]) == 1
