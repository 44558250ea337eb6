"""Named consumers across two accounts, against the real services: account B's key never
sees, lists, reads, changes, deletes, pages or acknowledges account A's consumers or their
events (a 404 on every path, and for ``consumer=<A's name>`` on every inbox call, exactly as
for a name no one has), cursors made for one of A's consumers are refused for B, for A's
other consumers and for the default, and one name created on both accounts is two
consumers that share nothing: events, counts, acknowledgements, filters, deletion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import ApiKey, Service, wait_until

pytestmark = pytest.mark.usefixtures("writer")

NOT_FOUND = "No such consumer."


def _create(http: httpx.Client, inbox: Service, key: ApiKey, body: dict[str, Any]) -> None:
    made = http.post(f"{inbox.url}/consumers", json=body, headers=key.headers)
    assert made.status_code == 201, made.text


def _send(http: httpx.Client, ingest: Service, key: ApiKey, event_type: str, n: int) -> str:
    sent = http.post(f"{ingest.url}/events", json={"event_type": event_type, "payload": {"n": n}}, headers=key.headers)
    assert sent.status_code == 202, sent.text
    event_id: str = sent.json()["event_id"]
    return event_id


def _counts(http: httpx.Client, inbox: Service, key: ApiKey) -> dict[str, int]:
    listed = http.get(f"{inbox.url}/consumers", headers=key.headers)
    assert listed.status_code == 200, listed.text
    return {c["name"]: c["total_undelivered"] for c in listed.json()["consumers"]}


def _page(http: httpx.Client, inbox: Service, key: ApiKey, **params: str) -> dict[str, Any]:
    answer = http.get(f"{inbox.url}/inbox", params={"limit": "200", **params}, headers=key.headers)
    assert answer.status_code == 200, answer.text
    page: dict[str, Any] = answer.json()
    return page


def _ids(page: dict[str, Any]) -> list[str]:
    return [e["event_id"] for e in page["events"]]


def _not_found(answer: httpx.Response, message: str | None = NOT_FOUND) -> None:
    assert answer.status_code == 404, answer.text
    body = answer.json()
    assert (body["status"], body["error_code"]) == (404, "NOT_FOUND"), body
    if message is not None:
        assert body["message"] == message, body


def _consumer_calls(http: httpx.Client, inbox: Service, key: ApiKey, event_id: str) -> list[Callable[[str], Any]]:
    """Every inbox call that takes ``consumer``, for the key and one event id."""
    url = inbox.url
    return [
        lambda c: http.get(f"{url}/inbox", params={"consumer": c}, headers=key.headers),
        lambda c: http.get(f"{url}/inbox", params={"consumer": c, "limit": "1"}, headers=key.headers),
        lambda c: http.get(f"{url}/events/{event_id}", params={"consumer": c}, headers=key.headers),
        lambda c: http.delete(f"{url}/events/{event_id}", params={"consumer": c}, headers=key.headers),
        lambda c: http.post(
            f"{url}/inbox/ack", params={"consumer": c}, json={"event_ids": [event_id]}, headers=key.headers
        ),
    ]


@pytest.fixture
def two_accounts(
    http: httpx.Client, ingest: Service, inbox: Service, key_factory: Callable[..., ApiKey]
) -> tuple[ApiKey, ApiKey, list[str], list[str]]:
    """A with ``shared`` (every type) and ``only-a`` (``iso.*``), B with its own ``shared``;
    three events of A's and two of B's, copied into each's consumers."""
    alice, bob = key_factory(), key_factory()
    _create(http, inbox, alice, {"name": "shared"})
    _create(http, inbox, alice, {"name": "only-a", "event_types": ["iso.*"]})
    _create(http, inbox, bob, {"name": "shared"})
    alices = [_send(http, ingest, alice, "iso.a", n) for n in range(3)]
    bobs = [_send(http, ingest, bob, "iso.b", n) for n in range(2)]
    assert wait_until(lambda: _counts(http, inbox, alice) == {"default": 3, "only-a": 3, "shared": 3})
    assert wait_until(lambda: _counts(http, inbox, bob) == {"default": 2, "shared": 2})
    return alice, bob, alices, bobs


def _alice_untouched(http: httpx.Client, inbox: Service, alice: ApiKey, alices: list[str]) -> None:
    """A's consumers hold every event of A's, undelivered, with A's filters."""
    assert _counts(http, inbox, alice) == {"default": 3, "only-a": 3, "shared": 3}
    for consumer in ("default", "shared", "only-a"):
        assert sorted(_ids(_page(http, inbox, alice, consumer=consumer))) == sorted(alices)
        for event_id in alices:
            read = http.get(f"{inbox.url}/events/{event_id}", params={"consumer": consumer}, headers=alice.headers)
            assert read.json()["delivered"] is False, (consumer, read.text)
    only_a = http.get(f"{inbox.url}/consumers/only-a", headers=alice.headers).json()
    assert only_a["event_types"] == ["iso.*"]


def test_another_account_reaches_none_of_an_accounts_consumers_nor_their_events(
    http: httpx.Client, inbox: Service, two_accounts: tuple[ApiKey, ApiKey, list[str], list[str]]
) -> None:
    alice, bob, alices, bobs = two_accounts
    # B's list is B's: A's consumers are not in it, and B's counts are B's events alone.
    assert _counts(http, inbox, bob) == {"default": 2, "shared": 2}
    # A's consumer, by name, is as unknown to B as a name no one has: the same 404.
    for name in ("only-a", "no-one-has-this"):
        url = f"{inbox.url}/consumers/{name}"
        _not_found(http.get(url, headers=bob.headers))
        _not_found(http.patch(url, json={"event_types": None}, headers=bob.headers))
        _not_found(http.delete(url, headers=bob.headers))
        for call in _consumer_calls(http, inbox, bob, alices[0]):
            _not_found(call(name))
    # Through B's own consumers and B's default, A's events do not exist.
    for consumer in ("shared", "default"):
        assert sorted(_ids(_page(http, inbox, bob, consumer=consumer))) == sorted(bobs)
        for event_id in alices:
            url = f"{inbox.url}/events/{event_id}"
            _not_found(http.get(url, params={"consumer": consumer}, headers=bob.headers), "No such event.")
            _not_found(http.delete(url, params={"consumer": consumer}, headers=bob.headers), "No such event.")
        acked = http.post(
            f"{inbox.url}/inbox/ack", params={"consumer": consumer}, json={"event_ids": alices}, headers=bob.headers
        )
        assert acked.json() == {"acknowledged": [], "not_found": alices}, acked.text
    assert _counts(http, inbox, bob) == {"default": 2, "shared": 2}
    _alice_untouched(http, inbox, alice, alices)


def test_a_consumers_cursor_serves_that_consumer_of_that_account_alone(
    http: httpx.Client, inbox: Service, two_accounts: tuple[ApiKey, ApiKey, list[str], list[str]]
) -> None:
    alice, bob, alices, _ = two_accounts
    mine = _page(http, inbox, alice, consumer="shared", limit="1")
    cursor = mine["next_cursor"]
    assert cursor
    rest = _page(http, inbox, alice, consumer="shared", cursor=cursor)
    assert sorted(_ids(mine) + _ids(rest)) == sorted(alices)  # the cursor works where it was made
    bobs_cursor = _page(http, inbox, bob, consumer="shared", limit="1")["next_cursor"]
    assert bobs_cursor

    refused = [
        (bob, "shared", cursor),  # B's consumer of the same name
        (bob, "default", cursor),
        (alice, "only-a", cursor),  # A's other consumer
        (alice, "default", cursor),  # A's own inbox
        (alice, "shared", bobs_cursor),  # B's cursor for A's consumer of the same name
    ]
    for key, consumer, token in refused:
        answer = http.get(f"{inbox.url}/inbox", params={"consumer": consumer, "cursor": token}, headers=key.headers)
        assert answer.status_code == 400, (consumer, answer.text)
        assert answer.json()["error_code"] == "INVALID_CURSOR", answer.text
    # B cannot use A's consumer even with A's cursor: no such consumer, before the cursor is read.
    _not_found(http.get(f"{inbox.url}/inbox", params={"consumer": "only-a", "cursor": cursor}, headers=bob.headers))
    _alice_untouched(http, inbox, alice, alices)


def test_one_name_on_two_accounts_is_two_independent_consumers(
    http: httpx.Client, ingest: Service, inbox: Service, two_accounts: tuple[ApiKey, ApiKey, list[str], list[str]]
) -> None:
    alice, bob, alices, bobs = two_accounts
    # B acknowledges all of its shared's events, and tries A's ids too: only B's go.
    acked = http.post(
        f"{inbox.url}/inbox/ack",
        params={"consumer": "shared"},
        json={"event_ids": [*bobs, *alices]},
        headers=bob.headers,
    )
    assert acked.json() == {"acknowledged": bobs, "not_found": alices}, acked.text
    assert _counts(http, inbox, bob) == {"default": 2, "shared": 0}
    _alice_untouched(http, inbox, alice, alices)

    # B's filter change is B's: A's shared still takes every type.
    patched = http.patch(f"{inbox.url}/consumers/shared", json={"event_types": ["never"]}, headers=bob.headers)
    assert patched.status_code == 200, patched.text
    assert http.get(f"{inbox.url}/consumers/shared", headers=alice.headers).json()["event_types"] is None
    # A acknowledges one event of its shared: B's consumers and A's others keep theirs.
    assert (
        http.delete(f"{inbox.url}/events/{alices[0]}", params={"consumer": "shared"}, headers=alice.headers).status_code
        == 204
    )
    assert _counts(http, inbox, alice) == {"default": 3, "only-a": 3, "shared": 2}
    assert _counts(http, inbox, bob) == {"default": 2, "shared": 0}

    # B deletes its shared: A's shared is as it was, and still receives. B's new event,
    # received before B makes a new shared, is never that new consumer's (it starts now).
    assert http.delete(f"{inbox.url}/consumers/shared", headers=bob.headers).status_code == 204
    assert _counts(http, inbox, bob) == {"default": 2}
    later = _send(http, ingest, alice, "iso.a", 3)
    theirs = _send(http, ingest, bob, "iso.b", 3)
    assert wait_until(lambda: _counts(http, inbox, alice) == {"default": 4, "only-a": 4, "shared": 3})
    assert wait_until(lambda: _counts(http, inbox, bob) == {"default": 3})
    _create(http, inbox, bob, {"name": "shared", "event_types": ["iso.b"]})
    assert sorted(_ids(_page(http, inbox, alice, consumer="shared"))) == sorted([*alices[1:], later])
    assert sorted(_ids(_page(http, inbox, bob))) == sorted([*bobs, theirs])
    assert _page(http, inbox, bob, consumer="shared")["events"] == []
    assert _counts(http, inbox, bob) == {"default": 3, "shared": 0}
    assert _counts(http, inbox, alice) == {"default": 4, "only-a": 4, "shared": 3}
