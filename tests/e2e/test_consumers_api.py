"""Consumers over HTTP against the real services: the /consumers routes (create, list, read,
filter, delete), their refusals of hostile input (none of which stores anything), account
isolation, the implicit ``default`` consumer that is today's inbox, and ``consumer`` on every
inbox call: two consumers of one account each receive and acknowledge every event of theirs
independently, with exact counts."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import ApiKey, Service, wait_until

pytestmark = pytest.mark.usefixtures("writer")

JSON = {"Content-Type": "application/json"}
DEFAULT_OUT = {
    "name": "default",
    "event_types": None,
    "start": "earliest",
    "created_at": None,
    "total_undelivered": 0,
    "backfill": None,
    "in_flight": 0,
    "failed": 0,
    "max_deliveries": 10,
}


def _create(http: httpx.Client, inbox: Service, key: ApiKey, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(f"{inbox.url}/consumers", content=content, headers={**key.headers, **JSON, **headers})


def _listed(http: httpx.Client, inbox: Service, key: ApiKey) -> list[dict[str, Any]]:
    response = http.get(f"{inbox.url}/consumers", headers=key.headers)
    assert response.status_code == 200, response.text
    consumers: list[dict[str, Any]] = response.json()["consumers"]
    return consumers


def _refused(response: httpx.Response, status: int, code: str, fields: list[str] | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["status"], body["error_code"]) == (status, code), body
    if fields is not None:
        assert [d["field"] for d in body["details"]] == fields, body


def _send(http: httpx.Client, ingest: Service, key: ApiKey, event_type: str, n: int, **extra: Any) -> str:
    response = http.post(
        f"{ingest.url}/events", json={"event_type": event_type, "payload": {"n": n}, **extra}, headers=key.headers
    )
    assert response.status_code == 202, response.text
    event_id: str = response.json()["event_id"]
    return event_id


def _page(http: httpx.Client, inbox: Service, key: ApiKey, **params: str) -> dict[str, Any]:
    response = http.get(f"{inbox.url}/inbox", params={"limit": "200", **params}, headers=key.headers)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def _ids(page: dict[str, Any]) -> list[str]:
    return [e["event_id"] for e in page["events"]]


def test_create_list_read_filter_and_delete(http: httpx.Client, inbox: Service, api_key: ApiKey) -> None:
    made = _create(
        http,
        inbox,
        api_key,
        {"name": "zap-1", "event_types": ["order.*", "invoice.paid", "order.*"], "start": "earliest"},
    )
    assert made.status_code == 201, made.text
    zap = made.json()
    assert {k: v for k, v in zap.items() if k != "created_at"} == {
        "name": "zap-1",
        "event_types": ["order.*", "invoice.paid"],  # each entry once, in the order given
        "start": "earliest",
        "total_undelivered": 0,
        "backfill": {"done": False, "events_walked": 0, "events_copied": 0},
        "in_flight": 0,
        "failed": 0,
        "max_deliveries": 10,
    }
    assert zap["created_at"].endswith("Z")
    timed = _create(http, inbox, api_key, {"name": "alpha", "start": "2026-01-02T03:04:05.123456+01:00"})
    assert timed.status_code == 201, timed.text
    assert (timed.json()["start"], timed.json()["event_types"]) == ("2026-01-02T02:04:05.123456Z", None)
    now = _create(http, inbox, api_key, {"name": "Now.2_x"})  # start left out: now
    assert now.status_code == 201, now.text
    assert now.json()["start"] <= now.json()["created_at"]

    assert [c["name"] for c in _listed(http, inbox, api_key)] == ["default", "Now.2_x", "alpha", "zap-1"]
    assert _listed(http, inbox, api_key)[0] == DEFAULT_OUT
    assert http.get(f"{inbox.url}/consumers/zap-1", headers=api_key.headers).json() == zap
    assert http.get(f"{inbox.url}/consumers/default", headers=api_key.headers).json() == DEFAULT_OUT

    patched = http.patch(f"{inbox.url}/consumers/zap-1", json={"event_types": ["invoice.*"]}, headers=api_key.headers)
    assert patched.status_code == 200, patched.text
    assert patched.json() == {**zap, "event_types": ["invoice.*"]}
    capped = http.patch(f"{inbox.url}/consumers/zap-1", json={"max_deliveries": 3}, headers=api_key.headers)
    assert capped.json() == {**zap, "event_types": ["invoice.*"], "max_deliveries": 3}  # the filter stays
    for refused in (0, 1001, "3", 2.5, None):
        response = http.patch(f"{inbox.url}/consumers/zap-1", json={"max_deliveries": refused}, headers=api_key.headers)
        _refused(response, 400, "VALIDATION_ERROR")
    assert http.get(f"{inbox.url}/consumers/zap-1", headers=api_key.headers).json()["max_deliveries"] == 3
    everything = http.patch(f"{inbox.url}/consumers/zap-1", json={"event_types": None}, headers=api_key.headers)
    assert everything.json()["event_types"] is None
    assert http.get(f"{inbox.url}/consumers/zap-1", headers=api_key.headers).json()["event_types"] is None

    assert http.delete(f"{inbox.url}/consumers/zap-1", headers=api_key.headers).status_code == 204
    _refused(http.get(f"{inbox.url}/consumers/zap-1", headers=api_key.headers), 404, "NOT_FOUND")
    _refused(http.delete(f"{inbox.url}/consumers/zap-1", headers=api_key.headers), 404, "NOT_FOUND")
    _refused(
        http.patch(f"{inbox.url}/consumers/zap-1", json={"event_types": None}, headers=api_key.headers),
        404,
        "NOT_FOUND",
    )
    assert [c["name"] for c in _listed(http, inbox, api_key)] == ["default", "Now.2_x", "alpha"]
    again = _create(http, inbox, api_key, {"name": "zap-1"})  # the name is free at once
    assert again.status_code == 201, again.text
    assert again.json()["created_at"] >= zap["created_at"]


def test_start_now_begins_a_second_before_the_creation(http: httpx.Client, inbox: Service, api_key: ApiKey) -> None:
    # Hosts' clocks differ: an event sent just after the creation, stamped by an ingest host a
    # little behind, must still be the consumer's.
    made = _create(http, inbox, api_key, {"name": "fresh", "start": "now"})
    assert made.status_code == 201, made.text
    body = made.json()
    start, created = (datetime.fromisoformat(body[k].replace("Z", "+00:00")) for k in ("start", "created_at"))
    assert created - start == timedelta(seconds=1)


def test_the_default_consumer_is_implicit_and_cannot_change(
    http: httpx.Client, inbox: Service, api_key: ApiKey
) -> None:
    assert _listed(http, inbox, api_key) == [DEFAULT_OUT]
    _refused(
        http.patch(f"{inbox.url}/consumers/default", json={"event_types": None}, headers=api_key.headers),
        409,
        "DEFAULT_CONSUMER",
    )
    _refused(http.delete(f"{inbox.url}/consumers/default", headers=api_key.headers), 409, "DEFAULT_CONSUMER")
    _refused(_create(http, inbox, api_key, {"name": "default"}), 400, "VALIDATION_ERROR", ["$.name"])
    assert _listed(http, inbox, api_key) == [DEFAULT_OUT]


def test_a_taken_name_and_the_account_limit_are_409s(
    http: httpx.Client, inbox: Service, api_key: ApiKey, stack: Any
) -> None:
    limit = stack.settings.consumers_per_account
    for n in range(limit):
        assert _create(http, inbox, api_key, {"name": f"c{n:02d}"}).status_code == 201

    _refused(_create(http, inbox, api_key, {"name": "c00", "event_types": ["x"]}), 409, "CONSUMER_EXISTS")
    _refused(_create(http, inbox, api_key, {"name": "one-more"}), 409, "CONSUMER_LIMIT")
    listed = _listed(http, inbox, api_key)
    assert [c["name"] for c in listed] == ["default", *(f"c{n:02d}" for n in range(limit))]
    assert listed[1]["event_types"] is None  # the refused create changed nothing
    assert http.delete(f"{inbox.url}/consumers/c07", headers=api_key.headers).status_code == 204
    assert _create(http, inbox, api_key, {"name": "one-more"}).status_code == 201  # the slot, at once


LONG = "t" * 256
# Bodies of POST /consumers the service must refuse, and the fields the 400 names.
HOSTILE_CREATES: dict[str, tuple[Any, list[str]]] = {
    "unknown field": ({"name": "a", "owner": "x"}, ["$.owner"]),
    "no name": ({"event_types": ["a"]}, ["$.name"]),
    "name not a string": ({"name": 5}, ["$.name"]),
    "name empty": ({"name": ""}, ["$.name"]),
    "name with a space": ({"name": "a b"}, ["$.name"]),
    "name with a slash": ({"name": "a/b"}, ["$.name"]),
    "name with a trailing newline": ({"name": "a\n"}, ["$.name"]),
    "name of 65 characters": ({"name": "n" * 65}, ["$.name"]),
    "name not ascii": ({"name": "zäp"}, ["$.name"]),
    "name the reserved item": ({"name": "#account"}, ["$.name"]),
    "event_types a string": ({"name": "a", "event_types": "order.*"}, ["$.event_types"]),
    "event_types empty": ({"name": "a", "event_types": []}, ["$.event_types"]),
    "event_types of 51": ({"name": "a", "event_types": [f"t{n}" for n in range(51)]}, ["$.event_types"]),
    "an empty pattern": ({"name": "a", "event_types": ["ok", ""]}, ["$.event_types[1]"]),
    "a pattern too long": ({"name": "a", "event_types": [LONG]}, ["$.event_types[0]"]),
    "a pattern not a string": ({"name": "a", "event_types": ["ok", 7]}, ["$.event_types[1]"]),
    "a bare prefix wildcard": ({"name": "a", "event_types": ["ok", ".*"]}, ["$.event_types[1]"]),
    "start a word": ({"name": "a", "start": "yesterday"}, ["$.start"]),
    "start not a string": ({"name": "a", "start": 0}, ["$.start"]),
    "start without an offset": ({"name": "a", "start": "2026-01-01T00:00:00"}, ["$.start"]),
    "start a date": ({"name": "a", "start": "2026-01-01"}, ["$.start"]),
    "start month 13": ({"name": "a", "start": "2026-13-01T00:00:00Z"}, ["$.start"]),
    "start with a newline": ({"name": "a", "start": "2026-01-01T00:00:00Z\n"}, ["$.start"]),
    "start before 1970": ({"name": "a", "start": "1969-12-31T23:59:59Z"}, ["$.start"]),
    "start after 9999 in UTC": ({"name": "a", "start": "9999-12-31T23:00:00-05:00"}, ["$.start"]),
    "name a dot": ({"name": "."}, ["$.name"]),
    "name two dots": ({"name": ".."}, ["$.name"]),
    "two problems": ({"name": "default", "start": "2026-02-30T00:00:00Z"}, ["$.name", "$.start"]),
    "a key given twice": (b'{"name": "a", "name": "b"}', ["$"]),
    "a key given twice, escaped": (b'{"name": "a", "start": "now", "\\u006eame": "b"}', ["$"]),
    "not json": (b'{"name": "a"', ["$"]),
    "not an object": (b'["a"]', ["$"]),
    "null": (b"null", ["$"]),
    "invalid utf-8": (b'{"name": "\xff"}', ["$"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_CREATES))
def test_a_hostile_create_is_a_400_naming_the_field_and_stores_nothing(
    http: httpx.Client, inbox: Service, api_key: ApiKey, case: str
) -> None:
    body, fields = HOSTILE_CREATES[case]
    _refused(_create(http, inbox, api_key, body), 400, "VALIDATION_ERROR", fields)
    assert _listed(http, inbox, api_key) == [DEFAULT_OUT]


def test_oversized_wrongly_typed_and_bad_patch_bodies_store_nothing(
    http: httpx.Client, inbox: Service, api_key: ApiKey
) -> None:
    big = json.dumps({"name": "a", "event_types": ["x" * 255] * 200}).encode()
    _refused(_create(http, inbox, api_key, big), 413, "PAYLOAD_TOO_LARGE")
    _refused(
        _create(http, inbox, api_key, {"name": "a"}, **{"Content-Type": "text/plain"}), 415, "UNSUPPORTED_MEDIA_TYPE"
    )
    _refused(
        http.post(f"{inbox.url}/consumers", params={"name": "a"}, headers=api_key.headers),
        400,
        "VALIDATION_ERROR",
        ["name"],  # an unknown query parameter, not a way to create
    )
    assert _listed(http, inbox, api_key) == [DEFAULT_OUT]

    made = _create(http, inbox, api_key, {"name": "p", "event_types": ["a"]})
    assert made.status_code == 201
    url = f"{inbox.url}/consumers/p"
    for body, fields in [
        ({}, ["$"]),  # neither event_types nor max_deliveries
        ({"event_types": ["a"], "name": "q"}, ["$.name"]),
        ({"event_types": []}, ["$.event_types"]),
        ({"event_types": [".*"]}, ["$.event_types[0]"]),
        ({"event_types": "a"}, ["$.event_types"]),
    ]:
        _refused(http.patch(url, json=body, headers=api_key.headers), 400, "VALIDATION_ERROR", fields)
    _refused(http.patch(url, content=b'{"event_types": null}', headers=api_key.headers), 415, "UNSUPPORTED_MEDIA_TYPE")
    _refused(http.get(f"{inbox.url}/consumers/a%20b", headers=api_key.headers), 404, "NOT_FOUND")
    _refused(http.delete(f"{inbox.url}/consumers/{'n' * 65}", headers=api_key.headers), 404, "NOT_FOUND")
    assert [(c["name"], c["event_types"]) for c in _listed(http, inbox, api_key)] == [
        ("default", None),
        ("p", ["a"]),
    ]


def test_consumer_on_every_inbox_call_refuses_an_invalid_name_and_an_unknown_one(
    http: httpx.Client, inbox: Service, api_key: ApiKey
) -> None:
    event_id = "01M8JTAJRHMRRAVC3GCG0R0A61"
    calls: list[Callable[[str], httpx.Response]] = [
        lambda c: http.get(f"{inbox.url}/inbox", params={"consumer": c}, headers=api_key.headers),
        lambda c: http.get(f"{inbox.url}/events/{event_id}", params={"consumer": c}, headers=api_key.headers),
        lambda c: http.delete(f"{inbox.url}/events/{event_id}", params={"consumer": c}, headers=api_key.headers),
        lambda c: http.post(
            f"{inbox.url}/inbox/ack", params={"consumer": c}, json={"event_ids": [event_id]}, headers=api_key.headers
        ),
    ]
    for call in calls:
        _refused(call("a b"), 400, "VALIDATION_ERROR", ["consumer"])
        _refused(call(""), 400, "VALIDATION_ERROR", ["consumer"])
        _refused(call("n" * 65), 400, "VALIDATION_ERROR", ["consumer"])
        unknown = call("nobody")
        _refused(unknown, 404, "NOT_FOUND")
        assert unknown.json()["message"] == "No such consumer."


def test_a_query_parameter_or_a_body_key_given_twice_is_a_400_and_acknowledges_nothing(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    # With ?consumer=a&consumer=b a proxy reading the first and a service reading the last
    # would disagree on whose event this is: neither is taken.
    assert _create(http, inbox, api_key, {"name": "a"}).status_code == 201
    assert _create(http, inbox, api_key, {"name": "b"}).status_code == 201
    event_id = _send(http, ingest, api_key, "twice.sent", 1)

    def arrived() -> bool:
        return all(_ids(_page(http, inbox, api_key, consumer=name)) == [event_id] for name in ("a", "b"))

    assert wait_until(arrived)
    both = {"consumer": ["a", "b"]}
    _refused(
        http.delete(f"{inbox.url}/events/{event_id}", params=both, headers=api_key.headers),
        400,
        "VALIDATION_ERROR",
        ["consumer"],
    )
    _refused(
        http.post(f"{inbox.url}/inbox/ack", params=both, json={"event_ids": [event_id]}, headers=api_key.headers),
        400,
        "VALIDATION_ERROR",
        ["consumer"],
    )
    twice = b'{"event_ids": ["01M8JTAJRHMRRAVC3GCG0R0A61"], "event_ids": ["%s"]}' % event_id.encode()
    _refused(
        http.post(
            f"{inbox.url}/inbox/ack", params={"consumer": "a"}, content=twice, headers={**api_key.headers, **JSON}
        ),
        400,
        "VALIDATION_ERROR",
        ["$"],
    )
    _refused(
        http.get(f"{inbox.url}/inbox", params={"limit": ["1", "200"]}, headers=api_key.headers),
        400,
        "VALIDATION_ERROR",
        ["limit"],
    )
    for name in ("a", "b", "default"):
        page = _page(http, inbox, api_key, consumer=name)
        assert (_ids(page), page["total_undelivered"]) == ([event_id], 1)


def test_another_accounts_consumer_is_not_found(
    http: httpx.Client, inbox: Service, key_factory: Callable[..., ApiKey]
) -> None:
    owner, stranger = key_factory(), key_factory()
    assert _create(http, inbox, owner, {"name": "mine", "event_types": ["a"]}).status_code == 201

    for response in (
        http.get(f"{inbox.url}/consumers/mine", headers=stranger.headers),
        http.patch(f"{inbox.url}/consumers/mine", json={"event_types": None}, headers=stranger.headers),
        http.delete(f"{inbox.url}/consumers/mine", headers=stranger.headers),
        http.get(f"{inbox.url}/inbox", params={"consumer": "mine"}, headers=stranger.headers),
    ):
        _refused(response, 404, "NOT_FOUND")
    assert _listed(http, inbox, stranger) == [DEFAULT_OUT]
    assert [(c["name"], c["event_types"]) for c in _listed(http, inbox, owner)] == [("default", None), ("mine", ["a"])]
    # A stranger may use the same name: names are per account.
    assert _create(http, inbox, stranger, {"name": "mine"}).status_code == 201


def test_the_default_consumer_is_the_inbox_as_before(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    sent = [_send(http, ingest, api_key, "d.type", n) for n in range(3)]
    assert wait_until(lambda: _page(http, inbox, api_key)["total_undelivered"] == 3)
    assert _create(http, inbox, api_key, {"name": "other", "start": "earliest"}).status_code == 201

    plain = _page(http, inbox, api_key, limit="2")
    named = _page(http, inbox, api_key, limit="2", consumer="default")
    assert _ids(plain) == _ids(named) == sent[:2]
    assert plain["total_undelivered"] == named["total_undelivered"] == 3
    # The same partition, so the same cursors: one from either continues with the other.
    rest = _page(http, inbox, api_key, cursor=plain["next_cursor"], consumer="default")
    assert _ids(rest) == sent[2:]
    assert (
        http.delete(
            f"{inbox.url}/events/{sent[0]}", params={"consumer": "default"}, headers=api_key.headers
        ).status_code
        == 204
    )
    assert http.get(f"{inbox.url}/events/{sent[0]}", headers=api_key.headers).json()["delivered"]
    assert _listed(http, inbox, api_key)[0]["total_undelivered"] == 2


# --- Two consumers of one account: needs the writer's copies ------------------------------------


def _consumers_of(http: httpx.Client, inbox: Service, key: ApiKey) -> dict[str, int]:
    return {c["name"]: c["total_undelivered"] for c in _listed(http, inbox, key)}


def test_two_consumers_each_receive_and_acknowledge_every_event_of_theirs_independently(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    # Created before the account's first event: every writer reads its view afresh for it.
    assert _create(http, inbox, api_key, {"name": "a"}).status_code == 201
    assert _create(http, inbox, api_key, {"name": "b", "event_types": ["order.*"]}).status_code == 201
    orders = [_send(http, ingest, api_key, "order.created", n) for n in range(5)]
    invoices = [_send(http, ingest, api_key, "invoice.paid", n) for n in range(3)]
    everything = sorted(orders + invoices)
    expected = {"default": 8, "a": 8, "b": 5}
    assert wait_until(lambda: _consumers_of(http, inbox, api_key) == expected), _consumers_of(http, inbox, api_key)

    page_a = _page(http, inbox, api_key, consumer="a")
    page_b = _page(http, inbox, api_key, consumer="b")
    assert sorted(_ids(page_a)) == everything
    assert sorted(_ids(page_b)) == sorted(orders)
    assert _page(http, inbox, api_key, consumer="b", event_type="order.created")["total_undelivered"] == 5
    assert _page(http, inbox, api_key, consumer="b", event_type="invoice.paid")["total_undelivered"] == 0
    assert _page(http, inbox, api_key, consumer="a", event_type="invoice.paid")["total_undelivered"] == 3

    # a acknowledges everything it has: b's and default's events stay undelivered.
    acked = http.post(
        f"{inbox.url}/inbox/ack", params={"consumer": "a"}, json={"event_ids": everything}, headers=api_key.headers
    )
    assert acked.json() == {"acknowledged": everything, "not_found": []}
    assert _consumers_of(http, inbox, api_key) == {"default": 8, "a": 0, "b": 5}
    assert sorted(_ids(_page(http, inbox, api_key, consumer="b"))) == sorted(orders)
    assert _page(http, inbox, api_key, consumer="a")["events"] == []
    one = http.get(f"{inbox.url}/events/{orders[0]}", params={"consumer": "a"}, headers=api_key.headers).json()
    assert one["delivered"]
    theirs = http.get(f"{inbox.url}/events/{orders[0]}", params={"consumer": "b"}, headers=api_key.headers).json()
    assert not theirs["delivered"]
    assert not http.get(f"{inbox.url}/events/{orders[0]}", headers=api_key.headers).json()["delivered"]

    # b acknowledges one by one; an invoice is not b's: 404 for b.
    for event_id in orders:
        url = f"{inbox.url}/events/{event_id}"
        assert http.delete(url, params={"consumer": "b"}, headers=api_key.headers).status_code == 204
    _refused(
        http.delete(f"{inbox.url}/events/{invoices[0]}", params={"consumer": "b"}, headers=api_key.headers),
        404,
        "NOT_FOUND",
    )
    _refused(
        http.get(f"{inbox.url}/events/{invoices[0]}", params={"consumer": "b"}, headers=api_key.headers),
        404,
        "NOT_FOUND",
    )
    assert _consumers_of(http, inbox, api_key) == {"default": 8, "a": 0, "b": 0}
    assert len(_ids(_page(http, inbox, api_key))) == 8  # default: as it was


def test_a_cursor_of_one_consumer_is_refused_for_another_and_for_a_recreated_name(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    for name in ("a", "b"):
        assert _create(http, inbox, api_key, {"name": name}).status_code == 201
    for n in range(3):
        _send(http, ingest, api_key, "c.type", n)
    assert wait_until(lambda: _consumers_of(http, inbox, api_key) == {"default": 3, "a": 3, "b": 3})
    cursor = _page(http, inbox, api_key, consumer="a", limit="1")["next_cursor"]
    default_cursor = _page(http, inbox, api_key, limit="1")["next_cursor"]

    assert _page(http, inbox, api_key, consumer="a", limit="1", cursor=cursor)["events"]
    for consumer, token in (("b", cursor), ("default", cursor), ("a", default_cursor)):
        response = http.get(
            f"{inbox.url}/inbox", params={"consumer": consumer, "cursor": token}, headers=api_key.headers
        )
        _refused(response, 400, "INVALID_CURSOR")
    assert http.delete(f"{inbox.url}/consumers/a", headers=api_key.headers).status_code == 204
    assert _create(http, inbox, api_key, {"name": "a"}).status_code == 201
    response = http.get(f"{inbox.url}/inbox", params={"consumer": "a", "cursor": cursor}, headers=api_key.headers)
    _refused(response, 400, "INVALID_CURSOR")


def test_a_duplicates_id_acknowledges_the_original_for_a_named_consumer(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    for name in ("a", "b"):
        assert _create(http, inbox, api_key, {"name": name}).status_code == 201
    original = _send(http, ingest, api_key, "dup.type", 1, idempotency_key="same")
    assert wait_until(lambda: _consumers_of(http, inbox, api_key) == {"default": 1, "a": 1, "b": 1})
    duplicate = _send(http, ingest, api_key, "dup.type", 1, idempotency_key="same")
    assert duplicate != original
    # The duplicate's alias is stored in the account's partition once the writer has seen it.
    assert wait_until(lambda: http.get(f"{inbox.url}/events/{duplicate}", headers=api_key.headers).status_code == 200)

    read = http.get(f"{inbox.url}/events/{duplicate}", params={"consumer": "a"}, headers=api_key.headers)
    assert (read.status_code, read.json()["event_id"]) == (200, original)
    acked = http.post(
        f"{inbox.url}/inbox/ack", params={"consumer": "a"}, json={"event_ids": [duplicate]}, headers=api_key.headers
    )
    assert acked.json() == {"acknowledged": [duplicate], "not_found": []}
    assert _consumers_of(http, inbox, api_key) == {"default": 1, "a": 0, "b": 1}
    assert (
        http.delete(f"{inbox.url}/events/{duplicate}", params={"consumer": "b"}, headers=api_key.headers).status_code
        == 204
    )
    assert _consumers_of(http, inbox, api_key) == {"default": 1, "a": 0, "b": 0}
    assert http.get(f"{inbox.url}/events/{original}", params={"consumer": "b"}, headers=api_key.headers).json()[
        "delivered"
    ]
