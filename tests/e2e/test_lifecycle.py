"""An event's whole life through real processes: POST -> SQS -> writer -> inbox -> ack."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ApiKey, Service, wait_until

pytestmark = pytest.mark.usefixtures("writer")


def post_event(
    http: httpx.Client, ingest: Service, key: ApiKey, body: dict[str, Any], **headers: str
) -> httpx.Response:
    return http.post(f"{ingest.url}/events", json=body, headers={**key.headers, **headers})


def inbox_page(http: httpx.Client, inbox: Service, key: ApiKey, **params: Any) -> dict[str, Any]:
    response = http.get(f"{inbox.url}/inbox", params=params, headers=key.headers)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def wait_for_total(http: httpx.Client, inbox: Service, key: ApiKey, total: int, **params: Any) -> dict[str, Any]:
    page = wait_until(lambda: (p := inbox_page(http, inbox, key, **params))["total_undelivered"] == total and p)
    assert page, f"inbox never reached {total} undelivered events"
    assert isinstance(page, dict)
    return page


def test_event_goes_from_post_to_inbox_and_is_acknowledged(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    sent = post_event(http, ingest, api_key, {"event_type": "order.created", "payload": {"order_id": 42}})
    assert sent.status_code == 202
    accepted = sent.json()
    assert accepted["status"] == "accepted"
    assert accepted["received_at"].endswith("Z")
    event_id = accepted["event_id"]

    page = wait_for_total(http, inbox, api_key, 1)
    (event,) = page["events"]
    assert event == {
        "event_id": event_id,
        "event_type": "order.created",
        "payload": {"order_id": 42},
        "received_at": accepted["received_at"],
        "delivered": False,
        "delivered_at": None,
    }
    assert page["has_more"] is False
    assert page["next_cursor"] is None

    by_id = http.get(f"{inbox.url}/events/{event_id}", headers=api_key.headers)
    assert by_id.status_code == 200
    assert by_id.json() == event

    assert http.delete(f"{inbox.url}/events/{event_id}", headers=api_key.headers).status_code == 204
    after = inbox_page(http, inbox, api_key)
    assert after["total_undelivered"] == 0
    assert event_id not in [e["event_id"] for e in after["events"]]

    delivered = http.get(f"{inbox.url}/events/{event_id}", headers=api_key.headers).json()
    assert delivered["delivered"] is True
    assert delivered["delivered_at"] is not None
    # Acknowledging again is not an error, and does not change the count.
    assert http.delete(f"{inbox.url}/events/{event_id}", headers=api_key.headers).status_code == 204
    assert inbox_page(http, inbox, api_key)["total_undelivered"] == 0


def test_inbox_pages_in_order_with_cursor_and_filter(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    events = [{"event_type": "a" if i % 2 else "b", "payload": {"i": i}} for i in range(5)]
    batch = http.post(f"{ingest.url}/events/batch", json={"events": events}, headers=api_key.headers)
    assert batch.status_code == 202, batch.text
    ids = [r["event_id"] for r in batch.json()["results"]]
    wait_for_total(http, inbox, api_key, 5)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = inbox_page(http, inbox, api_key, **params)
        pages += 1
        seen += [e["event_id"] for e in page["events"]]
        assert page["total_undelivered"] == 5
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == 3
    assert seen == sorted(ids)  # oldest first: ids sort by time of receipt

    newest_first = inbox_page(http, inbox, api_key, order="desc", limit=200)
    assert [e["event_id"] for e in newest_first["events"]] == sorted(ids, reverse=True)

    only_a = inbox_page(http, inbox, api_key, event_type="a")
    assert only_a["total_undelivered"] == 2
    assert {e["payload"]["i"] for e in only_a["events"]} == {1, 3}


def test_acknowledging_many_reports_acknowledged_and_not_found(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    events = [{"event_type": "bulk", "payload": {"i": i}} for i in range(3)]
    ids = [
        r["event_id"]
        for r in http.post(f"{ingest.url}/events/batch", json={"events": events}, headers=api_key.headers).json()[
            "results"
        ]
    ]
    wait_for_total(http, inbox, api_key, 3)
    unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    answer = http.post(f"{inbox.url}/inbox/ack", json={"event_ids": [ids[0], ids[1], unknown]}, headers=api_key.headers)
    assert answer.status_code == 200
    assert answer.json() == {"acknowledged": [ids[0], ids[1]], "not_found": [unknown]}
    page = inbox_page(http, inbox, api_key)
    assert page["total_undelivered"] == 1
    assert [e["event_id"] for e in page["events"]] == [ids[2]]


def test_copies_within_the_window_become_one_event(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    first = post_event(http, ingest, api_key, {"event_type": "t", "payload": {"a": 1, "b": [1, 2]}}).json()["event_id"]
    # Same payload with other key order and whitespace is the same event.
    raw = b'{"event_type": "t", "payload": {  "b": [1,2],   "a": 1 }}'
    headers = {**api_key.headers, "Content-Type": "application/json"}
    second = http.post(f"{ingest.url}/events", content=raw, headers=headers).json()["event_id"]
    keyed = [
        post_event(
            http, ingest, api_key, {"event_type": "k", "payload": {"n": n}}, **{"Idempotency-Key": "once"}
        ).json()["event_id"]
        for n in range(2)
    ]
    page = wait_for_total(http, inbox, api_key, 2)
    stored = {e["event_id"] for e in page["events"]}
    # SQS keeps no order, so either copy may be the one stored; both ids resolve to it.
    for pair in ((first, second), (keyed[0], keyed[1])):
        (winner,) = stored & set(pair)
        for copy in pair:
            url = f"{inbox.url}/events/{copy}"
            assert wait_until(lambda url=url: http.get(url, headers=api_key.headers).status_code == 200)  # type: ignore[misc]
            assert http.get(url, headers=api_key.headers).json()["event_id"] == winner
    assert inbox_page(http, inbox, api_key)["total_undelivered"] == 2


def test_characters_sqs_refuses_survive_the_trip(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    # U+FFFE and U+FFFF are valid in JSON strings but not in an SQS message body.
    payload = {"text": "a\ufffeb\uffffc", "emoji": "\U0001f600", "quote": 'say "hi"\\'}
    sent = post_event(http, ingest, api_key, {"event_type": "unicode", "payload": payload})
    assert sent.status_code == 202
    page = wait_for_total(http, inbox, api_key, 1)
    assert page["events"][0]["payload"] == payload
