"""Leases over HTTP against the real services: a claim holds its events from every other
claimer until its lease ends, acknowledgements and nacks by token, extensions, the end of a
lease (the event comes back, ``deliveries`` + 1, the old token refused), the failed list
after ``max_deliveries``, exact counts at every step, and a page's view of leased events."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import ApiKey, Service, wait_until
from tests.e2e.leasing import call, claim, consumer_counts, counts, event, post, send, stored

pytestmark = pytest.mark.usefixtures("writer")


def test_a_claim_holds_its_events_from_other_claimers_until_acknowledged(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    sent = [send(http, ingest, api_key, n) for n in range(5)]
    stored(http, inbox, api_key, 5)
    first = claim(http, inbox, api_key, limit=3, lease_s=60)
    assert len(first["events"]) == 3
    assert counts(first) == (2, 3, 0)
    assert all(e["deliveries"] == 1 and e["lease_token"] for e in first["events"])
    assert [e["event_id"] for e in first["events"]] == sorted(e["event_id"] for e in first["events"])
    second = claim(http, inbox, api_key, limit=10, lease_s=60)
    assert {e["event_id"] for e in second["events"]} == set(sent) - {e["event_id"] for e in first["events"]}
    assert counts(second) == (0, 5, 0)
    assert claim(http, inbox, api_key, limit=10)["events"] == []
    page = http.get(f"{inbox.url}/inbox", headers=api_key.headers).json()
    assert (page["events"], page["total_undelivered"]) == ([], 0)  # a page shows available events only

    tokens = [e["lease_token"] for e in first["events"]]
    acked = call(http, inbox, api_key, "/inbox/ack", {"lease_tokens": tokens})
    assert acked == {"acknowledged": [e["event_id"] for e in first["events"]], "not_found": [], "refused": []}
    assert consumer_counts(http, inbox, api_key) == (0, 2, 0)
    assert all(event(http, inbox, api_key, e["event_id"])["delivered"] for e in first["events"])
    again = call(http, inbox, api_key, "/inbox/ack", {"lease_tokens": tokens})  # idempotent
    assert again["acknowledged"] == acked["acknowledged"]
    assert consumer_counts(http, inbox, api_key) == (0, 2, 0)


def test_an_ended_lease_comes_back_with_one_more_delivery_and_its_old_token_is_refused(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    event_id = send(http, ingest, api_key, 1)
    stored(http, inbox, api_key, 1)
    first = claim(http, inbox, api_key, limit=1, lease_s=1)
    old_token = first["events"][0]["lease_token"]
    time.sleep(1.2)
    second = claim(http, inbox, api_key, limit=1, lease_s=60)
    assert [(e["event_id"], e["deliveries"]) for e in second["events"]] == [(event_id, 2)]
    assert counts(second) == (0, 1, 0)
    for path, body in (
        ("/inbox/ack", {"lease_tokens": [old_token]}),
        ("/inbox/extend", {"lease_tokens": [old_token], "lease_s": 60}),
        ("/inbox/nack", {"lease_tokens": [old_token]}),
    ):
        answer = call(http, inbox, api_key, path, body)
        assert answer["refused"] == [{"lease_token": old_token, "reason": "lease_lost"}], (path, answer)
    assert not event(http, inbox, api_key, event_id)["delivered"]
    assert consumer_counts(http, inbox, api_key) == (0, 1, 0)
    acked = call(http, inbox, api_key, "/inbox/ack", {"lease_tokens": [second["events"][0]["lease_token"]]})
    assert acked["acknowledged"] == [event_id]
    assert consumer_counts(http, inbox, api_key) == (0, 0, 0)


def test_an_ended_lease_nobody_claimed_again_still_acknowledges_and_a_page_takes_it_back(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    kept, returned = send(http, ingest, api_key, 1), send(http, ingest, api_key, 2)
    stored(http, inbox, api_key, 2)
    leased = {e["event_id"]: e["lease_token"] for e in claim(http, inbox, api_key, limit=2, lease_s=1)["events"]}
    time.sleep(1.2)
    acked = call(http, inbox, api_key, "/inbox/ack", {"lease_tokens": [leased[kept]]})
    assert acked["acknowledged"] == [kept]
    assert consumer_counts(http, inbox, api_key) == (0, 1, 0)
    http.get(f"{inbox.url}/inbox", headers=api_key.headers)  # gives the ended lease back to the inbox
    page = http.get(f"{inbox.url}/inbox", headers=api_key.headers).json()
    assert ([e["event_id"] for e in page["events"]], page["total_undelivered"]) == ([returned], 1)
    assert consumer_counts(http, inbox, api_key) == (1, 0, 0)


def test_nack_gives_events_back_now_or_after_its_delay(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    now_id, later_id = send(http, ingest, api_key, 1), send(http, ingest, api_key, 2)
    stored(http, inbox, api_key, 2)
    tokens = {e["event_id"]: e["lease_token"] for e in claim(http, inbox, api_key, limit=2, lease_s=60)["events"]}
    assert call(http, inbox, api_key, "/inbox/nack", {"lease_tokens": [tokens[now_id]]}) == {
        "nacked": [now_id],
        "refused": [],
    }
    answer = call(http, inbox, api_key, "/inbox/nack", {"lease_tokens": [tokens[later_id]], "delay_s": 2})
    assert answer["nacked"] == [later_id]
    assert consumer_counts(http, inbox, api_key) == (1, 1, 0)
    first = claim(http, inbox, api_key, limit=10, lease_s=60)
    assert [(e["event_id"], e["deliveries"]) for e in first["events"]] == [(now_id, 2)]
    refused = call(http, inbox, api_key, "/inbox/ack", {"lease_tokens": [tokens[later_id]]})
    assert refused["refused"] == [{"lease_token": tokens[later_id], "reason": "lease_lost"}]
    assert wait_until(lambda: claim(http, inbox, api_key, limit=10)["events"], timeout_s=5)
    assert consumer_counts(http, inbox, api_key) == (0, 2, 0)


def test_extend_keeps_a_lease_past_its_first_end(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    event_id = send(http, ingest, api_key, 1)
    stored(http, inbox, api_key, 1)
    token = claim(http, inbox, api_key, limit=1, lease_s=1)["events"][0]["lease_token"]
    extended = call(http, inbox, api_key, "/inbox/extend", {"lease_tokens": [token], "lease_s": 30})
    assert (extended["extended"], extended["refused"]) == ([event_id], [])
    time.sleep(1.2)
    assert claim(http, inbox, api_key, limit=1)["events"] == []
    assert call(http, inbox, api_key, "/inbox/ack", {"lease_tokens": [token]})["acknowledged"] == [event_id]
    assert consumer_counts(http, inbox, api_key) == (0, 0, 0)


def test_an_event_claimed_max_deliveries_times_moves_to_the_failed_list(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    made = post(http, inbox, api_key, "/consumers", {"name": "worker", "start": "earliest", "max_deliveries": 2})
    assert made.status_code == 201, made.text
    event_id = send(http, ingest, api_key, 1)
    assert wait_until(lambda: consumer_counts(http, inbox, api_key, "worker")[0] == 1)
    for delivery in (1, 2):
        got = claim(http, inbox, api_key, consumer="worker", limit=1, lease_s=60)
        assert [(e["event_id"], e["deliveries"]) for e in got["events"]] == [(event_id, delivery)]
        call(
            http, inbox, api_key, "/inbox/nack", {"lease_tokens": [got["events"][0]["lease_token"]]}, consumer="worker"
        )
    assert consumer_counts(http, inbox, api_key, "worker") == (0, 0, 1)
    assert claim(http, inbox, api_key, consumer="worker", limit=1)["events"] == []
    failed = http.get(f"{inbox.url}/inbox/failed", params={"consumer": "worker"}, headers=api_key.headers).json()
    assert [(e["event_id"], e["deliveries"]) for e in failed["events"]] == [(event_id, 2)]
    assert (failed["total_failed"], failed["has_more"]) == (1, False)
    assert consumer_counts(http, inbox, api_key) == (1, 0, 0)  # the default consumer's copy is untouched
    acked = call(http, inbox, api_key, "/inbox/ack", {"event_ids": [event_id]}, consumer="worker")
    assert acked["acknowledged"] == [event_id]
    assert consumer_counts(http, inbox, api_key, "worker") == (0, 0, 0)


def test_an_acknowledgement_by_id_settles_a_leased_event_and_its_token_then_acknowledges_nothing(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    event_id = send(http, ingest, api_key, 1)
    stored(http, inbox, api_key, 1)
    token = claim(http, inbox, api_key, limit=1, lease_s=60)["events"][0]["lease_token"]
    assert http.delete(f"{inbox.url}/events/{event_id}", headers=api_key.headers).status_code == 204
    assert consumer_counts(http, inbox, api_key) == (0, 0, 0)
    answer = call(http, inbox, api_key, "/inbox/nack", {"lease_tokens": [token]})
    assert answer["refused"] == [{"lease_token": token, "reason": "lease_ended"}]
    assert consumer_counts(http, inbox, api_key) == (0, 0, 0)


def test_the_failed_list_pages_both_ways_with_its_own_cursors(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    made = post(http, inbox, api_key, "/consumers", {"name": "once", "start": "earliest", "max_deliveries": 1})
    assert made.status_code == 201, made.text
    sent = {send(http, ingest, api_key, n) for n in range(3)}
    assert wait_until(lambda: consumer_counts(http, inbox, api_key, "once")[0] == 3)
    tokens = [e["lease_token"] for e in claim(http, inbox, api_key, consumer="once", limit=3, lease_s=60)["events"]]
    call(http, inbox, api_key, "/inbox/nack", {"lease_tokens": tokens}, consumer="once")
    assert consumer_counts(http, inbox, api_key, "once") == (0, 0, 3)
    for order in ("asc", "desc"):
        seen, cursor = [], None
        while True:
            params = {"consumer": "once", "limit": "1", "order": order, **({"cursor": cursor} if cursor else {})}
            page = http.get(f"{inbox.url}/inbox/failed", params=params, headers=api_key.headers)
            assert page.status_code == 200, page.text
            seen += [e["event_id"] for e in page.json()["events"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(sent), (order, seen)  # each once, none missed
    # An inbox cursor is not a failed-list cursor (the default consumer has the 3 events too).
    inbox_cursor = http.get(f"{inbox.url}/inbox", params={"limit": "1"}, headers=api_key.headers).json()["next_cursor"]
    refused = http.get(f"{inbox.url}/inbox/failed", params={"cursor": inbox_cursor}, headers=api_key.headers)
    assert (refused.status_code, refused.json()["error_code"]) == (400, "INVALID_CURSOR")
