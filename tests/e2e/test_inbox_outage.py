"""The inbox while DynamoDB throttles or is unreachable: 503 with Retry-After on every route,
nothing half-done, and the same answers as before once DynamoDB is back.

The inbox under test reaches DynamoDB through a ``FaultyLink`` (tests/faults.py); its key is
verified and cached before the fault, so what is tested is the routes' own storage calls
(the key store's outage is tested with the edge: tests/e2e/test_outages_and_up.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.local import processes
from tests.conftest import ApiKey, Service, Stack, start_service, wait_until
from tests.faults import FaultyLink, Mode

pytestmark = pytest.mark.usefixtures("writer")


@pytest.fixture(scope="module")
def link(stack: Stack) -> Iterator[FaultyLink]:
    target = stack.settings.dynamodb_endpoint_url or stack.settings.aws_endpoint_url
    assert target is not None
    with FaultyLink(target) as faulty:
        yield faulty


@pytest.fixture(scope="module")
def faulty_inbox(stack: Stack, link: FaultyLink) -> Iterator[Service]:
    service = start_service(
        stack,
        "inbox",
        {
            "TRIGGERS_DYNAMODB_ENDPOINT_URL": link.url,
            # Two attempts: a call that a switch of mode cuts in flight is tried again, as the
            # default does, while a fault outlasts both.
            "TRIGGERS_AWS_MAX_ATTEMPTS": "2",
            "TRIGGERS_KEY_CACHE_TTL_S": "600",  # the key stays verified through the fault
        },
    )
    yield service
    processes.stop([service.process])


def _stored_event(http: httpx.Client, ingest: Service, inbox: Service, key: ApiKey) -> dict[str, Any]:
    """One event sent through the edge, as the (healthy) session inbox reads it back."""
    sent = http.post(
        f"{ingest.url}/events", json={"event_type": "outage", "payload": {"kept": True}}, headers=key.headers
    )
    assert sent.status_code == 202, sent.text
    event_id = sent.json()["event_id"]
    found = wait_until(lambda: (r := http.get(f"{inbox.url}/events/{event_id}", headers=key.headers)).is_success and r)
    assert isinstance(found, httpx.Response), "the event never reached the inbox"
    event: dict[str, Any] = found.json()
    return event


def _answers(http: httpx.Client, inbox: Service, key: ApiKey, event_id: str) -> list[httpx.Response]:
    """One request to each route that reads or writes storage."""
    return [
        http.get(f"{inbox.url}/inbox", headers=key.headers),
        http.get(f"{inbox.url}/events/{event_id}", headers=key.headers),
        http.post(f"{inbox.url}/inbox/ack", json={"event_ids": [event_id]}, headers=key.headers),
        http.delete(f"{inbox.url}/events/{event_id}", headers=key.headers),
    ]


@pytest.mark.parametrize("fault", ["throttle", "down"])
def test_every_storage_route_answers_503_during_a_dynamodb_fault_and_changes_nothing(
    fault: Mode,
    http: httpx.Client,
    ingest: Service,
    inbox: Service,
    faulty_inbox: Service,
    link: FaultyLink,
    api_key: ApiKey,
) -> None:
    event = _stored_event(http, ingest, inbox, api_key)
    before = http.get(f"{faulty_inbox.url}/inbox", headers=api_key.headers)
    assert before.status_code == 200  # the key is now verified and cached in the faulty inbox
    assert before.json()["events"] == [event]

    link.set_mode(fault)  # applied by the link's own thread: wait until it holds
    try:
        assert wait_until(lambda: http.get(f"{faulty_inbox.url}/inbox", headers=api_key.headers).status_code == 503)
        for answer in _answers(http, faulty_inbox, api_key, event["event_id"]):
            assert answer.status_code == 503, (answer.request.method, answer.request.url.path, answer.text)
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["error_code"] == "SERVICE_UNAVAILABLE"
            assert answer.headers["x-request-id"]
        # The inbox's liveness does not depend on DynamoDB, and a caller of another service
        # reading the same data meanwhile is served.
        assert http.get(f"{faulty_inbox.url}/status").status_code == 200
        assert http.get(f"{inbox.url}/events/{event['event_id']}", headers=api_key.headers).json() == event
    finally:
        link.set_mode("pass")

    # The acknowledgements refused during the fault did not take: the event is still undelivered.
    after = wait_until(lambda: (r := http.get(f"{faulty_inbox.url}/inbox", headers=api_key.headers)).is_success and r)
    assert isinstance(after, httpx.Response), "the inbox did not recover once DynamoDB was back"
    assert after.json()["events"] == [event]
    assert after.json()["total_undelivered"] == 1
