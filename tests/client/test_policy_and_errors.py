"""The client's pure logic: the backoff policy, Retry-After, and answers mapped to errors."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from triggers_client._errors import HTTPX_ERRORS, error_from_exception, error_from_response, retry_after_s

from triggers_client import (
    AuthError,
    ConfigurationError,
    ConnectionFailed,
    NotFound,
    RateLimited,
    RetryPolicy,
    ServerError,
    TriggersError,
    Unavailable,
    UnexpectedAnswer,
    ValidationFailed,
)

policies = st.builds(
    RetryPolicy,
    attempts=st.integers(1, 10),
    base_s=st.floats(0, 5),
    cap_s=st.floats(5, 60),
    max_retry_after_s=st.floats(0, 120),
)


@given(policy=policies, retry=st.integers(0, 200), seed=st.integers())
def test_full_jitter_stays_between_zero_and_the_capped_exponential(policy: RetryPolicy, retry: int, seed: int) -> None:
    wait = policy.backoff_s(retry, random.Random(seed))
    assert 0 <= wait <= min(policy.cap_s, policy.base_s * 2**retry)


@given(policy=policies, retry_after=st.none() | st.floats(0, 200), seed=st.integers())
def test_every_wait_is_bounded_and_honours_retry_after(
    policy: RetryPolicy, retry_after: float | None, seed: int
) -> None:
    error = RateLimited("slow down", status=429, retry_after_s=retry_after)
    waits = [policy.delay_s(retry, error, random.Random(seed)) for retry in range(policy.attempts + 2)]
    allowed = [w for w in waits if w is not None]
    assert len(allowed) <= policy.attempts - 1  # at most attempts - 1 retries
    assert all(w is None for w in waits[policy.attempts - 1 :])
    for wait in allowed:
        assert wait <= max(policy.cap_s, policy.max_retry_after_s)
        if retry_after is not None:
            assert wait >= retry_after  # never sooner than the service asked
    if retry_after is not None and retry_after > policy.max_retry_after_s:
        assert allowed == []  # a wait longer than we accept is the caller's to schedule


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (RateLimited("m", status=429), True),
        (Unavailable("m", status=503), True),
        (ConnectionFailed("m"), True),
        (ValidationFailed("m", status=400), False),
        (AuthError("m", status=401), False),
        (NotFound("m", status=404), False),
        (ServerError("m", status=500), False),
        (TriggersError("m", status=409), False),
    ],
)
def test_only_what_may_pass_next_time_is_retried(error: TriggersError, retried: bool) -> None:
    assert (RetryPolicy(attempts=3, base_s=0).delay_s(0, error) is not None) is retried


def test_a_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="base_s"):
        RetryPolicy(base_s=10, cap_s=1)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ValidationFailed),
        (413, ValidationFailed),
        (415, ValidationFailed),
        (401, AuthError),
        (403, AuthError),
        (404, NotFound),
        (429, RateLimited),
        (502, Unavailable),
        (503, Unavailable),
        (504, Unavailable),
        (500, ServerError),
        (501, ServerError),
        (405, TriggersError),
        (408, TriggersError),
    ],
)
def test_each_status_maps_to_its_error_with_the_body_fields(status: int, kind: type[TriggersError]) -> None:
    body = {
        "status": status,
        "error_code": "SOME_CODE",
        "message": "what to fix",
        "details": [{"field": "$.payload", "message": "too big"}],
        "correlation_id": "c0ffee",
    }
    error = error_from_response(httpx.Response(status, json=body, headers={"Retry-After": "7"}))
    assert type(error) is kind
    assert (error.status, error.error_code, error.message, error.correlation_id) == (
        status,
        "SOME_CODE",
        "what to fix",
        "c0ffee",
    )
    assert [(d.field, d.message) for d in error.details] == [("$.payload", "too big")]
    assert error.retry_after_s == 7
    assert str(error) == f"{status} SOME_CODE: what to fix (correlation id c0ffee)"


def test_an_answer_not_of_the_service_shape_still_maps_by_status() -> None:
    # A load balancer's HTML 502: no body fields, the request id from the header if any.
    error = error_from_response(httpx.Response(502, text="<html>bad gateway</html>", headers={"X-Request-ID": "r1"}))
    assert type(error) is Unavailable
    assert (error.status, error.error_code, error.correlation_id) == (502, "HTTP_502", "r1")
    assert "<html>" not in str(error)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s("3") == 3
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    assert retry_after_s("-1") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    wait = retry_after_s(later)
    assert wait is not None
    assert 80 <= wait <= 91
    assert retry_after_s(format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)) == 0


NO_ANSWER = [
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.PoolTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.CloseError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [(cls, ConnectionFailed) for cls in NO_ANSWER]
    + [
        (httpx.UnsupportedProtocol, ConfigurationError),
        (httpx.TooManyRedirects, ConfigurationError),
        (httpx.InvalidURL, ValidationFailed),
        (httpx.LocalProtocolError, ValidationFailed),
        (httpx.DecodingError, UnexpectedAnswer),
    ],
)
def test_each_httpx_error_maps_to_its_class(exc: type[Exception], kind: type[TriggersError]) -> None:
    error = error_from_exception(exc("Illegal header value b'Bearer trg_secret'"))
    assert type(error) is kind
    assert error.status is None
    # Only no answer at all is worth another attempt (the send's key makes it safe).
    assert error.retryable is (kind is ConnectionFailed)
    if exc is httpx.LocalProtocolError:
        assert "trg_secret" not in str(error)  # h11 quotes the header it refused


def _exported_httpx_errors() -> list[type[Exception]]:
    return [
        cls
        for cls in vars(httpx).values()
        if isinstance(cls, type) and issubclass(cls, HTTPX_ERRORS) and cls is not httpx.HTTPStatusError
    ]


@pytest.mark.parametrize("exc", _exported_httpx_errors(), ids=lambda cls: cls.__name__)
def test_every_httpx_error_a_request_can_raise_is_a_triggers_error(exc: type[Exception]) -> None:
    # HTTPStatusError comes only from raise_for_status, which the client never calls.
    assert isinstance(error_from_exception(exc("m")), TriggersError)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_says_where_it_points(status: int) -> None:
    error = error_from_response(httpx.Response(status, headers={"Location": "https://api.example/events"}))
    assert type(error) is ConfigurationError
    assert (error.status, error.error_code) == (status, f"HTTP_{status}")
    assert "redirected to https://api.example/events" in error.message
