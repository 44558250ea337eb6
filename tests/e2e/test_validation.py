"""Bad input gets a clear 4xx with field-level details; never a 500, never a silent drop."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import ApiKey, Service


def post_raw(
    http: httpx.Client, ingest: Service, key: ApiKey, body: bytes, path: str = "/events", **headers: str
) -> httpx.Response:
    return http.post(
        f"{ingest.url}{path}", content=body, headers={**key.headers, "Content-Type": "application/json", **headers}
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"event_type": 5, "payload": {}}', "$.event_type"),
        (b'{"payload": {}}', "$.event_type"),
        (b'{"event_type": "x"}', "$.payload"),
        (b'{"event_type": "x", "payload": {}, "extra": 1}', "$.extra"),
        (b'{"event_type": "", "payload": {}}', "$.event_type"),
        (b'{"event_type": "' + b"x" * 256 + b'", "payload": {}}', "$.event_type"),
        (b'{"event_type": "x", "payload": [1]}', "$.payload"),
        (b'{"event_type": "x", "payload": "text"}', "$.payload"),
        (b'{"event_type": "x", "payload": {}, "idempotency_key": ""}', "$.idempotency_key"),
        (b'{"event_type": "x", "payload": {"a": }', "$"),
        (b"not json", "$"),
        (b"[]", "$"),
    ],
)
def test_invalid_event_gets_400_naming_the_field(
    http: httpx.Client, ingest: Service, api_key: ApiKey, body: bytes, field: str
) -> None:
    response = post_raw(http, ingest, api_key, body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error_code"] == "VALIDATION_ERROR"
    assert [d["field"] for d in error["details"]] == [field]
    assert error["correlation_id"] == response.headers["x-request-id"]


def test_wrong_content_type_gets_415(http: httpx.Client, ingest: Service, api_key: ApiKey) -> None:
    response = http.post(
        f"{ingest.url}/events", content=b"event_type=x", headers={**api_key.headers, "Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"


def _event_with_payload_of(size: int) -> bytes:
    prefix, suffix = b'{"event_type": "big", "payload": {"p": "', b'"}}'
    filler = size - len(b'{"p": ""}')
    return prefix + b"x" * filler + suffix


def test_payload_limit_is_256_kib(http: httpx.Client, ingest: Service, api_key: ApiKey) -> None:
    limit = 256 * 1024
    assert post_raw(http, ingest, api_key, _event_with_payload_of(limit)).status_code == 202
    too_big = post_raw(http, ingest, api_key, _event_with_payload_of(limit + 1))
    assert too_big.status_code == 413
    assert too_big.json()["details"][0]["field"] == "$.payload"


def test_body_over_512_kib_is_refused_from_content_length(http: httpx.Client, ingest: Service, api_key: ApiKey) -> None:
    response = post_raw(http, ingest, api_key, b"{" + b" " * (512 * 1024) + b"}")
    assert response.status_code == 413
    assert response.json()["error_code"] == "PAYLOAD_TOO_LARGE"


def test_chunked_body_over_512_kib_is_refused(http: httpx.Client, ingest: Service, api_key: ApiKey) -> None:
    def chunks() -> Any:
        for _ in range(9):
            yield b" " * (64 * 1024)

    response = http.post(
        f"{ingest.url}/events", content=chunks(), headers={**api_key.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_batch_reports_each_event_and_207_when_some_fail(http: httpx.Client, ingest: Service, api_key: ApiKey) -> None:
    events = [
        {"event_type": "ok", "payload": {}},
        {"event_type": "", "payload": {}},
        {"event_type": "ok2", "payload": {}},
    ]
    response = http.post(f"{ingest.url}/events/batch", json={"events": events}, headers=api_key.headers)
    assert response.status_code == 207
    first, bad, third = response.json()["results"]
    assert first["status"] == "accepted"
    assert third["status"] == "accepted"
    assert bad["error"]["status"] == 400
    assert bad["error"]["details"][0]["field"] == "$.events[1].event_type"


@pytest.mark.parametrize("count", [0, 501])
def test_batch_size_outside_1_to_500_gets_400(http: httpx.Client, ingest: Service, api_key: ApiKey, count: int) -> None:
    events = [{"event_type": "x", "payload": {}}] * count
    response = http.post(f"{ingest.url}/events/batch", json={"events": events}, headers=api_key.headers)
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "$.events"


def test_rate_limit_counts_events_and_answers_429(http: httpx.Client, ingest: Service, key_factory: Any) -> None:
    key = key_factory(rate_limit=5)
    events = [{"event_type": "x", "payload": {"i": i}} for i in range(4)]
    ok = http.post(f"{ingest.url}/events/batch", json={"events": events}, headers=key.headers)
    assert ok.status_code == 202
    assert ok.headers["x-ratelimit-limit"] == "5"
    assert ok.headers["x-ratelimit-remaining"] == "1"
    refused = http.post(f"{ingest.url}/events/batch", json={"events": events}, headers=key.headers)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error_code"] == "RATE_LIMITED"


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 201}, {"limit": "x"}, {"order": "sideways"}, {"cursor": "garbage"}, {"cursor": "a.b"}],
)
def test_bad_inbox_query_gets_400(http: httpx.Client, inbox: Service, api_key: ApiKey, params: dict[str, Any]) -> None:
    response = http.get(f"{inbox.url}/inbox", params=params, headers=api_key.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] in ("VALIDATION_ERROR", "INVALID_CURSOR")


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": ""}, {"order": "sideways"}, {"event_type": "x" * 256}])
def test_bad_inbox_query_is_judged_after_the_key(
    http: httpx.Client, inbox: Service, api_key: ApiKey, params: dict[str, Any]
) -> None:
    """A caller without a key gets 401, not a lesson in our query rules; a keyed caller's
    refused query carries the rate headers like any other answer (the inbox's rate test
    shows it spends a token)."""
    assert http.get(f"{inbox.url}/inbox", params=params).status_code == 401
    refused = http.get(f"{inbox.url}/inbox", params=params, headers=api_key.headers)
    assert refused.status_code == 400, refused.text
    assert refused.json()["details"][0]["field"] == next(iter(params))
    assert "x-ratelimit-remaining" in refused.headers


def test_unknown_event_id_gets_404(http: httpx.Client, inbox: Service, api_key: ApiKey) -> None:
    for event_id in ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "not-an-id"):
        assert http.get(f"{inbox.url}/events/{event_id}", headers=api_key.headers).status_code == 404
        assert http.delete(f"{inbox.url}/events/{event_id}", headers=api_key.headers).status_code == 404


def test_body_just_under_512_kib_is_accepted(http: httpx.Client, ingest: Service, api_key: ApiKey) -> None:
    event = b'{"event_type": "padded", "payload": {"a": 1}}'
    padded = event[:-1] + b" " * (512 * 1024 - len(event)) + b"}"
    assert len(padded) == 512 * 1024
    assert post_raw(http, ingest, api_key, padded).status_code == 202


def test_batch_body_limit_is_5_mib(http: httpx.Client, ingest: Service, api_key: ApiKey) -> None:
    body = b'{"events": [{"event_type": "x", "payload": {}}]}'
    under = body[:-1] + b" " * (5 * 1024 * 1024 - len(body)) + b"}"
    over = under[:-1] + b" }"
    assert post_raw(http, ingest, api_key, under, "/events/batch").status_code == 202
    assert post_raw(http, ingest, api_key, over, "/events/batch").status_code == 413


def test_conflicting_idempotency_keys_get_400(http: httpx.Client, ingest: Service, api_key: ApiKey) -> None:
    body = b'{"event_type": "x", "payload": {}, "idempotency_key": "a"}'
    response = post_raw(http, ingest, api_key, body, **{"Idempotency-Key": "b"})
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "$.idempotency_key"


def test_a_misspelt_query_parameter_is_refused_not_ignored(
    http: httpx.Client, ingest: Service, inbox: Service, api_key: ApiKey
) -> None:
    """?evnet_type=x silently ignored would page through every type, and the consumer would ack them."""
    for response in (
        http.get(f"{inbox.url}/inbox?evnet_type=x&limit=5", headers=api_key.headers),
        http.post(f"{ingest.url}/events?debug=1", json={"event_type": "t", "payload": {}}, headers=api_key.headers),
    ):
        assert response.status_code == 400
        body = response.json()
        assert body["error_code"] == "VALIDATION_ERROR"
        assert [d["field"] for d in body["details"]] in (["evnet_type"], ["debug"])
    assert http.get(f"{inbox.url}/inbox?event_type=x&limit=5&order=desc", headers=api_key.headers).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"event_type": "", "payload": {}}', "application/json", 400),
        (b"not json", "application/json", 400),
        (b'{"event_type": "x", "payload": {"a": 1, "a": 2}}', "application/json", 400),
        (b'{"event_type": "x", "payload": {"p": "' + b"x" * (256 * 1024) + b'"}}', "application/json", 413),
        (b"event_type=x", "text/plain", 415),
    ],
    ids=["invalid-field", "not-json", "duplicate-key", "payload-too-large", "wrong-content-type"],
)
def test_every_authenticated_ingest_answer_carries_the_rate_headers(
    http: httpx.Client, ingest: Service, key_factory: Any, body: bytes, content_type: str, status: int
) -> None:
    """docs/api.md: the X-RateLimit-* headers are on every authenticated ingest answer, errors
    included. Tokens are taken before events are checked, so a refused event costs its token;
    what is refused before any event is decoded (a 415, a batch wrapper that is not JSON)
    costs none and leaves the bucket as it was."""
    key = key_factory(rate_limit=60)  # one token back per second: none comes back in between
    remaining = 60
    for path in ("/events", "/events/batch"):
        sent = body if path == "/events" or status == 415 else b'{"events": [' + body + b"]}"
        response = http.post(f"{ingest.url}{path}", content=sent, headers={**key.headers, "Content-Type": content_type})
        assert response.status_code in (status, 207), (path, response.text)
        decoded = status != 415 and not (path == "/events/batch" and body == b"not json")
        remaining -= decoded
        assert response.headers["x-ratelimit-limit"] == "60"
        assert response.headers["x-ratelimit-remaining"] == str(remaining), (path, response.headers)
        assert int(response.headers["x-ratelimit-reset"]) >= 0
    unauthenticated = http.post(f"{ingest.url}/events", content=body, headers={"Content-Type": content_type})
    assert unauthenticated.status_code == 401
