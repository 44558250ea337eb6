"""Named consumers in both clients, against the scripted server: what goes on the wire, what comes back.

The ``/consumers`` calls (create, list, show, update, delete), ``consumer=`` on every inbox call
(and its absence: the default consumer's requests are byte for byte what they were), the answers
decoded into ConsumerInfo, and the 409s of the consumer routes raised as ``Conflict``.
tests/e2e/test_client_consumers.py runs the same calls against the real inbox.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.client.scripted_server import Answer, Seen, scripted_server, url_of
from triggers_client import (
    AckResult,
    AsyncTriggersClient,
    BackfillProgress,
    Conflict,
    ConsumerInfo,
    NotFound,
    RetryPolicy,
    TriggersClient,
    ValidationFailed,
)

FAST = RetryPolicy(attempts=3, base_s=0.001, cap_s=0.01)
JSON = {"Content-Type": "application/json"}
NAMED = {
    "name": "zap-1",
    "event_types": ["order.*", "invoice.paid"],
    "start": "2026-01-01T00:00:00Z",
    "created_at": "2026-01-02T03:04:05.678Z",
    "total_undelivered": 7,
    "backfill": {"done": False, "events_walked": 120, "events_copied": 7},
}
DEFAULT = {
    "name": "default",
    "event_types": None,
    "start": "earliest",
    "created_at": None,
    "total_undelivered": 3,
    "backfill": None,
}
EVENT_ID = "01M8JTAJRHMRRAVC3GCG0R0A61"
EVENT = {
    "event_id": EVENT_ID,
    "event_type": "order.created",
    "payload": {},
    "received_at": "2026-01-01T00:00:00Z",
    "delivered": False,
    "delivered_at": None,
}


def ok(status: int, body: object = None) -> Answer:
    return Answer(status, b"" if body is None else json.dumps(body).encode(), JSON if body is not None else {})


def refused(status: int, code: str) -> Answer:
    body = {"status": status, "error_code": code, "message": "m", "details": [], "correlation_id": "c"}
    return Answer(status, json.dumps(body).encode(), JSON)


def page(cursor: str | None) -> Answer:
    body = {"events": [EVENT], "next_cursor": cursor, "has_more": cursor is not None, "total_undelivered": 1}
    return ok(200, body)


@pytest.fixture(params=["sync", "async"])
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def call(form: str, url: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """``method`` of the sync or the async client; an iterator's items as a list."""
    options: dict[str, Any] = {"ingest_url": url, "inbox_url": url, "retry": FAST, "timeout_s": 5.0}
    if form == "sync":
        with TriggersClient("trg_k", **options) as client:
            result = getattr(client, method)(*args, **kwargs)
            return list(result) if inspect.isgenerator(result) else result

    async def run() -> Any:
        async with AsyncTriggersClient("trg_k", **options) as client:
            result = getattr(client, method)(*args, **kwargs)
            if inspect.isasyncgen(result):
                return [item async for item in result]
            return await result

    return asyncio.run(run())


def query(seen: Seen) -> dict[str, list[str]]:
    return parse_qs(urlsplit(seen.path).query)


def body(seen: Seen) -> Any:
    return json.loads(seen.body)


def test_create_posts_name_filter_and_start_and_reads_the_consumer(form: str) -> None:
    with scripted_server(ok(201, NAMED)) as server:
        made = call(form, url_of(server), "create_consumer", "zap-1", ["order.*", "invoice.paid"], "earliest")
    seen = server.seen[0]
    assert (seen.method, seen.path) == ("POST", "/consumers")
    assert seen.headers["content-type"] == "application/json"
    assert body(seen) == {"name": "zap-1", "event_types": ["order.*", "invoice.paid"], "start": "earliest"}
    assert made == ConsumerInfo(
        name="zap-1",
        event_types=["order.*", "invoice.paid"],
        start="2026-01-01T00:00:00Z",
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        total_undelivered=7,
        backfill=BackfillProgress(done=False, events_walked=120, events_copied=7),
    )
    assert made.start_time == datetime(2026, 1, 1, tzinfo=UTC)


def test_create_defaults_to_every_type_from_now(form: str) -> None:
    with scripted_server(ok(201, NAMED)) as server:
        call(form, url_of(server), "create_consumer", "zap-1")
    assert body(server.seen[0]) == {"name": "zap-1", "event_types": None, "start": "now"}


def test_a_start_time_goes_out_as_rfc_3339_with_its_offset(form: str) -> None:
    start = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    with scripted_server(ok(201, NAMED)) as server:
        call(form, url_of(server), "create_consumer", "zap-1", None, start)
    assert body(server.seen[0])["start"] == "2026-03-04T05:06:07+02:00"


@pytest.mark.parametrize(
    ("args", "field"),
    [((None, datetime(2026, 1, 1)), "start"), (("order.*",), "event_types")],
)
def test_a_naive_start_or_a_string_filter_is_refused_unsent(form: str, args: tuple[Any, ...], field: str) -> None:
    # A naive time is a different instant on each machine; a str is a Sequence[str] of letters.
    with scripted_server(ok(201, NAMED)) as server, pytest.raises(ValidationFailed) as caught:
        call(form, url_of(server), "create_consumer", "zap-1", *args)
    assert server.seen == []
    assert caught.value.status is None
    assert [d.field for d in caught.value.details] == [field]


def test_list_reads_every_consumer_default_first(form: str) -> None:
    with scripted_server(ok(200, {"consumers": [DEFAULT, NAMED]})) as server:
        listed = call(form, url_of(server), "consumers")
    assert (server.seen[0].method, server.seen[0].path) == ("GET", "/consumers")
    assert [c.name for c in listed] == ["default", "zap-1"]
    default = listed[0]
    assert (default.event_types, default.created_at, default.backfill, default.start_time) == (None, None, None, None)
    assert default.total_undelivered == 3


def test_show_update_and_delete_name_the_consumer_in_the_path_quoted_whole(form: str) -> None:
    script = [ok(200, NAMED), ok(200, NAMED), ok(200, {**NAMED, "event_types": None}), ok(204)]
    with scripted_server(*script) as server:
        url = url_of(server)
        shown = call(form, url, "consumer", "zap/../1")
        call(form, url, "update_consumer", "zap-1", ["order.paid"])
        updated = call(form, url, "update_consumer", "zap-1", None)
        deleted = call(form, url, "delete_consumer", "zap-1")
    assert shown.name == "zap-1"
    assert updated.event_types is None
    assert deleted is None
    assert [(s.method, s.path) for s in server.seen] == [
        ("GET", "/consumers/zap%2F..%2F1"),
        ("PATCH", "/consumers/zap-1"),
        ("PATCH", "/consumers/zap-1"),
        ("DELETE", "/consumers/zap-1"),
    ]
    assert [body(s) for s in server.seen[1:3]] == [{"event_types": ["order.paid"]}, {"event_types": None}]
    assert server.seen[1].headers["content-type"] == "application/json"


@pytest.mark.parametrize("code", ["CONSUMER_EXISTS", "CONSUMER_LIMIT", "DEFAULT_CONSUMER"])
def test_a_409_is_a_conflict_with_its_code_not_retried(form: str, code: str) -> None:
    with scripted_server(refused(409, code), then=ok(201, NAMED)) as server, pytest.raises(Conflict) as caught:
        call(form, url_of(server), "create_consumer", "zap-1")
    assert (caught.value.status, caught.value.error_code, caught.value.correlation_id) == (409, code, "c")
    assert not caught.value.retryable
    assert len(server.seen) == 1


def test_an_unknown_consumer_is_not_found(form: str) -> None:
    with scripted_server(refused(404, "NOT_FOUND")) as server, pytest.raises(NotFound):
        call(form, url_of(server), "consumer", "gone")
    assert len(server.seen) == 1


def test_every_inbox_call_carries_the_consumer(form: str) -> None:
    acked = ok(200, {"acknowledged": [EVENT_ID], "not_found": []})
    script = [page("c1"), page(None), page(None), ok(200, EVENT), ok(204), acked]
    with scripted_server(*script) as server:
        url = url_of(server)
        events = call(form, url, "iter_events", consumer="zap-1", event_type="order.created")
        call(form, url, "inbox_page", consumer="zap-1", limit=10)
        call(form, url, "get", EVENT_ID, consumer="zap-1")
        call(form, url, "ack", EVENT_ID, consumer="zap-1")
        result = call(form, url, "ack_many", [EVENT_ID], consumer="zap-1")
    assert len(events) == 2
    assert result == AckResult(acknowledged=[EVENT_ID], not_found=[])
    assert [(s.method, urlsplit(s.path).path) for s in server.seen] == [
        ("GET", "/inbox"),
        ("GET", "/inbox"),
        ("GET", "/inbox"),
        ("GET", f"/events/{EVENT_ID}"),
        ("DELETE", f"/events/{EVENT_ID}"),
        ("POST", "/inbox/ack"),
    ]
    assert all(query(s)["consumer"] == ["zap-1"] for s in server.seen)
    assert query(server.seen[1])["cursor"] == ["c1"]  # the second page of the sweep, same consumer
    assert body(server.seen[-1]) == {"event_ids": [EVENT_ID]}


def test_without_a_consumer_the_inbox_calls_are_as_before(form: str) -> None:
    script = [page(None), ok(200, EVENT), ok(204), ok(200, {"acknowledged": [], "not_found": ["x"]})]
    with scripted_server(*script) as server:
        url = url_of(server)
        call(form, url, "inbox_page")
        call(form, url, "get", "x")
        call(form, url, "ack", "x")
        call(form, url, "ack_many", ["x"])
    assert [s.path for s in server.seen] == ["/inbox?limit=50&order=asc", "/events/x", "/events/x", "/inbox/ack"]
