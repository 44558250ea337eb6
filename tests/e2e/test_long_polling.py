"""Long polling over HTTP against the real services: a waiting claim or page answers when an
event is stored (also through another inbox instance than the one it waits on), not at its
deadline; with nothing arriving it answers empty after ``wait_s``; waiting requests are
capped per key, and a client that goes away frees its place at once."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.local import processes
from tests.conftest import ApiKey, Service, Stack, start_service, wait_until
from tests.e2e.leasing import claim, send

pytestmark = pytest.mark.usefixtures("writer")

WAIT_S = 15  # far longer than storing an event takes: an answer before it was woken by the event


def _in_background(work: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        result["answer"] = work()
        result["took_s"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


@pytest.fixture(scope="module")
def second_inbox(stack: Stack) -> Iterator[Service]:
    service = start_service(stack, "inbox")
    yield service
    processes.stop([service.process])


def test_a_waiting_claim_on_another_instance_answers_when_an_event_is_stored(
    ingest: Service, inbox: Service, second_inbox: Service, api_key: ApiKey
) -> None:
    with httpx.Client(timeout=WAIT_S + 10) as waiting, httpx.Client(timeout=10) as http:
        thread, result = _in_background(lambda: claim(waiting, second_inbox, api_key, limit=5, wait_s=WAIT_S))
        time.sleep(1.0)  # the claim is waiting (it found nothing)
        assert thread.is_alive()
        event_id = send(http, ingest, api_key, 1)
        thread.join(WAIT_S + 5)
    assert [e["event_id"] for e in result["answer"]["events"]] == [event_id]
    assert result["took_s"] < WAIT_S - 5, result  # woken by the event, not by its deadline
    assert result["answer"]["in_flight"] == 1


def test_a_waiting_page_answers_when_an_event_is_stored(
    ingest: Service, inbox: Service, second_inbox: Service, api_key: ApiKey
) -> None:
    def page() -> dict[str, Any]:
        with httpx.Client(timeout=WAIT_S + 10) as waiting:
            response = waiting.get(f"{inbox.url}/inbox", params={"wait_s": str(WAIT_S)}, headers=api_key.headers)
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            return answer

    thread, result = _in_background(page)
    time.sleep(1.0)
    with httpx.Client(timeout=10) as http:
        event_id = send(http, ingest, api_key, 2, event_type="invoice.paid")
    thread.join(WAIT_S + 5)
    assert [e["event_id"] for e in result["answer"]["events"]] == [event_id]
    assert result["took_s"] < WAIT_S - 5, result


def test_with_nothing_arriving_a_wait_ends_empty_after_wait_s(inbox: Service, api_key: ApiKey) -> None:
    with httpx.Client(timeout=10) as http:
        started = time.monotonic()
        answer = claim(http, inbox, api_key, limit=5, wait_s=1)
        took = time.monotonic() - started
    assert (answer["events"], answer["in_flight"]) == ([], 0)
    assert took >= 1.0


def _waiting_socket(service: Service, key: ApiKey) -> socket.socket:
    """A client that asks for a claim waiting WAIT_S and reads nothing back."""
    host, port = service.url.removeprefix("http://").split(":")
    body = json.dumps({"wait_s": WAIT_S}).encode()
    head = (
        f"POST /inbox/claim HTTP/1.1\r\nHost: {host}\r\nAuthorization: {key.headers['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head.encode() + body)
    return sock


def test_waiting_requests_are_capped_per_key_and_a_client_that_leaves_frees_its_place(
    stack: Stack, key_factory: Any
) -> None:
    capped = start_service(stack, "inbox", {"TRIGGERS_INBOX_WAITS_PER_KEY": "2"})
    key, other = key_factory(), key_factory()
    try:
        waiting = [_waiting_socket(capped, key) for _ in range(2)]
        time.sleep(1.0)  # both are waiting
        with httpx.Client(timeout=10) as http:
            refused = http.post(f"{capped.url}/inbox/claim", json={"wait_s": 5}, headers=key.headers)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error_code"] == "RATE_LIMITED"
            assert refused.headers["Retry-After"] == "1"
            # Another key waits as it likes: the cap is per key.
            assert http.post(f"{capped.url}/inbox/claim", json={"wait_s": 1}, headers=other.headers).status_code == 200
            for sock in waiting:  # the clients go away mid-wait
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            time.sleep(1.0)
            admitted = http.post(f"{capped.url}/inbox/claim", json={"wait_s": 1}, headers=key.headers)
            assert admitted.status_code == 200, admitted.text
    finally:
        processes.stop([capped.process])


def test_a_waiting_claim_answers_when_a_lease_ends(ingest: Service, inbox: Service, api_key: ApiKey) -> None:
    with httpx.Client(timeout=WAIT_S + 10) as http:
        event_id = send(http, ingest, api_key, 3)
        assert wait_until(lambda: claim(http, inbox, api_key, limit=1, lease_s=2)["events"])  # leased for 2 s
        started = time.monotonic()
        answer = claim(http, inbox, api_key, limit=1, wait_s=WAIT_S)
        took = time.monotonic() - started
    assert [(e["event_id"], e["deliveries"]) for e in answer["events"]] == [(event_id, 2)]
    assert took < WAIT_S - 5, took  # woken by the lease's end, not by its deadline
