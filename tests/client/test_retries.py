"""Both clients against a local scripted server: what is retried, with what, and for how long.

Each test runs with the sync ``TriggersClient`` and the ``AsyncTriggersClient`` (the ``Client``
fixture hides the difference, so both are held to the same behaviour).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import platform
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import msgspec
import pytest

import triggers_client
from tests.client.scripted_server import Answer, Drop, Stall, scripted_server, url_of
from triggers_client import (
    AsyncTriggersClient,
    ConfigurationError,
    ConnectionFailed,
    RateLimited,
    RetryPolicy,
    TriggersClient,
    Unavailable,
    UnexpectedAnswer,
    ValidationFailed,
)

ACCEPTED = json.dumps(
    {"event_id": "01M8JTAJRHMRRAVC3GCG0R0A61", "status": "accepted", "received_at": "2026-01-01T00:00:00Z"}
).encode()
FAST = RetryPolicy(attempts=4, base_s=0.001, cap_s=0.01)


def error(status: int, retry_after: str | None = None) -> Answer:
    body = {"status": status, "error_code": "X", "message": "m", "details": [], "correlation_id": "c"}
    headers = {"Content-Type": "application/json", **({"Retry-After": retry_after} if retry_after else {})}
    return Answer(status, json.dumps(body).encode(), headers)


OK = Answer(202, ACCEPTED, {"Content-Type": "application/json"})


class Client:
    """One of the two clients, called the same way: ``call("send", ...)`` returns the result."""

    def __init__(self, form: str, url: str, policy: RetryPolicy, timeout_s: float) -> None:
        self.kwargs: dict[str, Any] = {"ingest_url": url, "inbox_url": url, "retry": policy, "timeout_s": timeout_s}
        self.sync = TriggersClient("trg_k", **self.kwargs) if form == "sync" else None

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.sync is not None:
            return getattr(self.sync, method)(*args, **kwargs)

        async def run() -> Any:
            # An async client belongs to one event loop: one client per asyncio.run.
            async with AsyncTriggersClient("trg_k", **self.kwargs) as client:
                return await getattr(client, method)(*args, **kwargs)

        return asyncio.run(run())

    def close(self) -> None:
        if self.sync is not None:
            self.sync.close()


@pytest.fixture(params=["sync", "async"])
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits between attempts, recorded (and not slept) in both clients."""
    recorded: list[float] = []

    def sleep(seconds: float) -> None:
        recorded.append(seconds)

    async def async_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(triggers_client._sync, "_sleep", sleep)
    monkeypatch.setattr(triggers_client._async, "_sleep", async_sleep)
    return recorded


@pytest.fixture
def make_client(form: str) -> Iterator[Callable[..., Client]]:
    made: list[Client] = []

    def make(url: str, policy: RetryPolicy = FAST, timeout_s: float = 5.0) -> Client:
        made.append(Client(form, url, policy, timeout_s))
        return made[-1]

    yield make
    for client in made:
        client.close()


def keys_of(seen: list[Any]) -> set[str]:
    return {s.headers["idempotency-key"] for s in seen}


@pytest.mark.parametrize("failure", [error(503, "0"), error(502), error(504), error(429, "0"), Drop()])
def test_a_send_is_retried_with_the_same_key_and_request_id(
    make_client: Callable[..., Client], failure: Answer | Drop
) -> None:
    with scripted_server(failure, failure, OK) as server:
        accepted = make_client(url_of(server)).call("send", "t", {"a": 1})
    assert accepted.event_id == "01M8JTAJRHMRRAVC3GCG0R0A61"
    assert len(server.seen) == 3
    assert len(keys_of(server.seen)) == 1  # the service deduplicates the attempts by it
    assert next(iter(keys_of(server.seen))).startswith("client-")
    assert len({s.headers["x-request-id"] for s in server.seen}) == 1  # its logs tie them together
    assert {s.body for s in server.seen} == {b'{"event_type":"t","payload":{"a":1}}'}


def test_the_callers_key_is_the_one_repeated(make_client: Callable[..., Client]) -> None:
    with scripted_server(Drop(), OK) as server:
        make_client(url_of(server)).call("send", "t", {}, idempotency_key="order-42")
    assert [s.headers["idempotency-key"] for s in server.seen] == ["order-42", "order-42"]


def test_two_sends_get_two_keys(make_client: Callable[..., Client]) -> None:
    with scripted_server(OK, OK) as server:
        client = make_client(url_of(server))
        client.call("send", "t", {})
        client.call("send", "t", {})
    assert len(keys_of(server.seen)) == 2


def test_a_batch_retry_repeats_every_events_key(make_client: Callable[..., Client]) -> None:
    result = json.dumps({"results": [{"event_id": "a", "status": "accepted"}] * 2}).encode()
    with scripted_server(error(503), Answer(202, result)) as server:
        make_client(url_of(server)).call(
            "send_batch",
            [{"event_type": "t", "payload": {}}, triggers_client.NewEvent("t", {}, idempotency_key="mine")],
        )
    bodies = [json.loads(s.body) for s in server.seen]
    assert bodies[0] == bodies[1]
    keys = [e["idempotency_key"] for e in bodies[0]["events"]]
    assert keys[1] == "mine"
    assert keys[0].startswith("client-")


def test_retry_after_is_honoured(make_client: Callable[..., Client], waits: list[float]) -> None:
    with scripted_server(error(429, "2"), OK) as server:
        make_client(url_of(server)).call("send", "t", {})
    assert len(server.seen) == 2
    assert len(waits) == 1
    assert 2 <= waits[0] <= FAST.max_retry_after_s


def test_a_retry_after_beyond_the_policy_is_raised_at_once(make_client: Callable[..., Client]) -> None:
    with scripted_server(error(429, "3600")) as server, pytest.raises(RateLimited) as caught:
        make_client(url_of(server)).call("send", "t", {})
    assert len(server.seen) == 1
    assert caught.value.retry_after_s == 3600


def test_attempts_are_bounded_and_the_last_error_is_raised(
    make_client: Callable[..., Client], waits: list[float]
) -> None:
    with scripted_server(*[error(503)] * 5) as server, pytest.raises(Unavailable) as caught:
        make_client(url_of(server), RetryPolicy(attempts=3, base_s=1, cap_s=4)).call("send", "t", {})
    assert len(server.seen) == 3
    assert caught.value.status == 503
    assert len(waits) == 2
    assert all(0 <= w <= 4 for w in waits)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 415, 500])
def test_other_answers_are_not_retried(make_client: Callable[..., Client], status: int) -> None:
    with scripted_server(error(status), OK) as server, pytest.raises(triggers_client.TriggersError) as caught:
        make_client(url_of(server)).call("send", "t", {})
    assert len(server.seen) == 1
    assert caught.value.status == status
    assert not isinstance(caught.value, Unavailable | RateLimited)


def test_a_timeout_is_retried(make_client: Callable[..., Client]) -> None:
    with scripted_server(Stall(1.0), OK) as server:
        accepted = make_client(url_of(server), timeout_s=0.2).call("send", "t", {})
    assert accepted.status == "accepted"
    assert len(keys_of(server.seen)) == 1
    assert len(server.seen) == 2


def test_connection_refused_is_retried_then_raised(make_client: Callable[..., Client], waits: list[float]) -> None:
    with scripted_server() as server:
        url = url_of(server)
    # The server is gone: nothing listens on its port any more.
    with pytest.raises(ConnectionFailed) as caught:
        make_client(url, RetryPolicy(attempts=3, base_s=0.001, cap_s=0.001)).call("get", "01X")
    assert len(waits) == 2
    assert caught.value.status is None
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_a_bad_request_is_validation_failed_with_its_details(make_client: Callable[..., Client]) -> None:
    body = {
        "status": 400,
        "error_code": "VALIDATION_ERROR",
        "message": "bad",
        "details": [{"field": "$.event_type", "message": "Expected `str`"}],
        "correlation_id": "abc",
    }
    with scripted_server(Answer(400, json.dumps(body).encode())) as server, pytest.raises(ValidationFailed) as caught:
        make_client(url_of(server)).call("send", "t", {})
    assert caught.value.details[0].field == "$.event_type"
    assert caught.value.correlation_id == "abc"


def test_an_undocumented_success_body_is_an_error_not_a_crash(make_client: Callable[..., Client]) -> None:
    with scripted_server(Answer(202, b'{"nope": 1}')) as server, pytest.raises(triggers_client.UnexpectedAnswer):
        make_client(url_of(server)).call("send", "t", {})
    assert len(server.seen) == 1


@pytest.mark.parametrize("status", [202, 503])
def test_a_body_that_cannot_be_decoded_is_an_unexpected_answer_not_retried(
    make_client: Callable[..., Client], status: int
) -> None:
    broken = Answer(status, b"not gzip at all", {"Content-Encoding": "gzip", "X-Request-ID": "r1"})
    with scripted_server(broken, OK) as server, pytest.raises(UnexpectedAnswer) as caught:
        make_client(url_of(server)).call("send", "t", {})
    assert len(server.seen) == 1
    assert (caught.value.status, caught.value.error_code, caught.value.correlation_id) == (
        status,
        "UNEXPECTED_ANSWER",
        "r1",
    )
    assert "Content-Encoding 'gzip'" in caught.value.message
    assert isinstance(caught.value.__cause__, httpx.DecodingError)


def test_a_redirect_is_a_configuration_error_naming_where(make_client: Callable[..., Client]) -> None:
    # The client follows none (httpx's TooManyRedirects cannot arise): the base URL is to fix.
    moved = Answer(308, b"", {"Location": "https://triggers.example/events"})
    with scripted_server(moved, OK) as server, pytest.raises(ConfigurationError) as caught:
        make_client(url_of(server)).call("send", "t", {})
    assert len(server.seen) == 1
    assert caught.value.status == 308
    assert "redirected to https://triggers.example/events" in str(caught.value)


@pytest.mark.parametrize("key", ["order\n42", "order\r42", "order\x0042"])
def test_a_key_http_cannot_carry_is_refused_unsent(make_client: Callable[..., Client], key: str) -> None:
    with scripted_server(OK) as server, pytest.raises(ValidationFailed) as caught:
        make_client(url_of(server)).call("send", "t", {}, idempotency_key=key)
    assert server.seen == []
    assert (caught.value.status, caught.value.error_code) == (None, "INVALID_REQUEST")
    assert isinstance(caught.value.__cause__, httpx.LocalProtocolError)
    assert key not in str(caught.value)


def test_a_non_ascii_key_goes_out_as_utf8(make_client: Callable[..., Client]) -> None:
    # The service reads the header as UTF-8 (docs/api.md): "clé" there is "clé" in a body.
    with scripted_server(OK) as server:
        make_client(url_of(server)).call("send", "t", {}, idempotency_key="clé")
    assert server.seen[0].headers["idempotency-key"].encode("latin-1").decode() == "clé"  # http.server reads latin-1


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [("get", ("0" * 70_000,), {}), ("inbox_page", (), {"cursor": "c" * 70_000})],
)
def test_a_url_too_long_to_send_is_refused_unsent(
    make_client: Callable[..., Client], method: str, args: tuple[str, ...], kwargs: dict[str, str]
) -> None:
    with scripted_server(OK) as server, pytest.raises(ValidationFailed, match="too long") as caught:
        make_client(url_of(server)).call(method, *args, **kwargs)
    assert server.seen == []
    assert isinstance(caught.value.__cause__, httpx.InvalidURL)


def test_every_request_names_the_client_and_carries_the_key(make_client: Callable[..., Client]) -> None:
    with scripted_server(OK) as server:
        make_client(url_of(server)).call("send", "t", {})
    headers = server.seen[0].headers
    python = ".".join(platform.python_version_tuple()[:2])
    assert headers["user-agent"] == (
        f"triggers-client/{triggers_client.__version__} python/{python} httpx/{httpx.__version__}"
    )
    assert headers["authorization"] == "Bearer trg_k"


def test_an_event_id_cannot_leave_its_route(make_client: Callable[..., Client]) -> None:
    with scripted_server(Answer(204)) as server:
        make_client(url_of(server)).call("ack", "../inbox?x=1#y")
    assert server.seen[0].method == "DELETE"
    assert server.seen[0].path == "/events/..%2Finbox%3Fx%3D1%23y"


def test_decimals_go_out_as_numbers_digit_for_digit(make_client: Callable[..., Client]) -> None:
    with scripted_server(OK) as server:
        make_client(url_of(server)).call("send", "t", {"total": Decimal("10.10")})
    assert msgspec.json.decode(server.seen[0].body) == {"event_type": "t", "payload": {"total": 10.1}}
    assert b'"total":10.10' in server.seen[0].body


def _public(cls: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(cls).items() if not name.startswith("_")}


def test_both_clients_have_the_same_surface() -> None:
    sync, async_ = _public(TriggersClient), _public(AsyncTriggersClient)
    # close/aclose are the one difference in names: each form's convention.
    assert set(sync) - {"close"} == set(async_) - {"aclose"}
    for name in set(sync) - {"close"}:
        assert list(sync[name].parameters) == list(async_[name].parameters), name
        is_async = inspect.iscoroutinefunction(getattr(AsyncTriggersClient, name)) or inspect.isasyncgenfunction(
            getattr(AsyncTriggersClient, name)
        )
        assert is_async, name
    assert inspect.isgeneratorfunction(TriggersClient.iter_events)
