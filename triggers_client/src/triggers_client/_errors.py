"""The error hierarchy: one class per thing a caller would do differently.

    TriggersError                 anything the client does not turn into a result
    ├── RateLimited        429    retried after Retry-After; raised once attempts run out
    ├── Unavailable        502, 503, 504: retried, then raised
    │   └── ConnectionFailed      no answer at all (refused, reset, dropped, timed out)
    ├── AuthError          401, 403: the key is wrong, inactive, revoked or lacks the scope
    ├── ValidationFailed   400, 413, 415, 422: fix the request (``details`` names the fields);
    │                      or no status: a request HTTP cannot carry, so never sent
    ├── NotFound           404
    ├── Conflict           409: the state forbids it (a consumer name taken, the consumer
    │                      limit reached, the default consumer changed); ``error_code`` says which
    ├── ServerError        500 and other 5xx: a bug on the service's side, not retried
    ├── UnexpectedAnswer   a 2xx whose body is not what the API documents, or any answer
    │                      whose body cannot be decoded (a broken Content-Encoding)
    └── ConfigurationError a base URL or API key the client cannot use (raised by the
                           constructors), or a redirect (3xx): fix the settings

Only RateLimited and Unavailable (ConnectionFailed included) are retried. Every httpx error a
call meets becomes one of these (``__cause__`` keeps httpx's): ``error_from_exception``.

Each carries the answer's ``status`` (None without an answer), ``error_code``, ``message``,
``details`` and ``correlation_id`` (the body's, else the ``X-Request-ID`` header: the id to
give the service's operators), and ``retry_after_s`` when the service sent one.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from time import time
from typing import ClassVar

import httpx
import msgspec

from triggers_client._models import ErrorBody, ErrorDetail


class TriggersError(Exception):
    """An answer (or a missing one) that the client does not turn into a result."""

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_code: str = "",
        details: tuple[ErrorDetail, ...] = (),
        correlation_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.status = status
        self.error_code = error_code
        self.message = message
        self.details = details
        self.correlation_id = correlation_id
        self.retry_after_s = retry_after_s
        super().__init__(_describe(status, error_code, message, correlation_id))

    @property
    def body(self) -> ErrorBody | None:
        """The answer's error body as the 0.3 client's ``ApiError.body`` had it (deprecated)."""
        if self.status is None:
            return None
        return ErrorBody(self.status, self.error_code, self.message, list(self.details), self.correlation_id or "")


class RateLimited(TriggersError):
    retryable = True


class Unavailable(TriggersError):
    retryable = True


class ConnectionFailed(Unavailable):
    """No answer: connection refused, reset or dropped, or a timeout (``__cause__`` is httpx's)."""


class AuthError(TriggersError):
    pass


class ValidationFailed(TriggersError):
    pass


class NotFound(TriggersError):
    pass


class Conflict(TriggersError):
    """409: what was asked contradicts what is stored; ``error_code`` says what (CONSUMER_EXISTS...)."""


class ServerError(TriggersError):
    pass


class UnexpectedAnswer(TriggersError):
    pass


class ConfigurationError(TriggersError):
    """A base URL or API key the client cannot use, or a redirect: fix the settings, do not retry."""


# The 0.3 client's one error class; every error of this client is one.
ApiError = TriggersError

# Failures of the network, not of the request: another attempt may well get through.
# (UnsupportedProtocol and LocalProtocolError, a bad URL or request, are not among them.)
NO_ANSWER: tuple[type[httpx.TransportError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)
# Everything of httpx's that sending a request may raise (InvalidURL is no HTTPError).
HTTPX_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx.InvalidURL)

_BY_STATUS: dict[int, type[TriggersError]] = {
    400: ValidationFailed,
    401: AuthError,
    403: AuthError,
    404: NotFound,
    409: Conflict,
    413: ValidationFailed,
    415: ValidationFailed,
    422: ValidationFailed,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


def error_from_response(response: httpx.Response) -> TriggersError:
    """The error an answer that is not the call's success stands for."""
    status = response.status_code
    if 300 <= status < 400:
        return _redirected(response)
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else TriggersError)
    retry_after = retry_after_s(response.headers.get("retry-after"))
    header_id = response.headers.get("x-request-id")
    try:
        body = msgspec.json.decode(response.content, type=ErrorBody)
    except msgspec.MsgspecError:
        # Not the service's shape (a proxy's or load balancer's page): say only the status.
        return kind(
            response.reason_phrase or "no error body",
            status=status,
            error_code=f"HTTP_{status}",
            correlation_id=header_id,
            retry_after_s=retry_after,
        )
    return kind(
        body.message,
        status=status,
        error_code=body.error_code,
        details=tuple(body.details),
        correlation_id=body.correlation_id or header_id,
        retry_after_s=retry_after,
    )


def error_from_exception(exc: Exception) -> TriggersError:
    """The error an exception of ``HTTPX_ERRORS`` stands for (raise it ``from exc``)."""
    if isinstance(exc, NO_ANSWER):
        return connection_failed(exc)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.TooManyRedirects):
        # The constructors refuse such base URLs, and the client follows no redirects: only a
        # custom transport gets here.
        return ConfigurationError(
            f"{str(exc).rstrip('.')}: check ingest_url and inbox_url", error_code="INVALID_BASE_URL"
        )
    if isinstance(exc, httpx.InvalidURL):
        return ValidationFailed(
            f"the request's URL is invalid ({exc}): is an event id, cursor or event type far too long?",
            error_code="INVALID_REQUEST",
        )
    if isinstance(exc, httpx.LocalProtocolError):
        # Not httpx's text: it quotes the header value it refused.
        return ValidationFailed(
            "the request cannot be sent as HTTP: a header value holds a character HTTP forbids "
            "(a control character in the idempotency key?)",
            error_code="INVALID_REQUEST",
        )
    if isinstance(exc, httpx.DecodingError):
        return UnexpectedAnswer(_UNDECODABLE.format(exc=exc), error_code="UNEXPECTED_ANSWER")
    return TriggersError(f"the request failed: {type(exc).__name__}: {exc}".rstrip(": "), error_code="REQUEST_FAILED")


def undecodable(response: httpx.Response, exc: httpx.DecodingError) -> UnexpectedAnswer:
    """A body that its Content-Encoding does not decode: the answer's status and request id, not retried."""
    encoding = response.headers.get("content-encoding", "")
    return UnexpectedAnswer(
        _UNDECODABLE.format(exc=f"Content-Encoding {encoding!r}: {exc}"),
        status=response.status_code,
        error_code="UNEXPECTED_ANSWER",
        correlation_id=response.headers.get("x-request-id"),
    )


_UNDECODABLE = (
    "the answer's body cannot be decoded ({exc}); the service or a proxy before it sent it broken: "
    "report it with the correlation id"
)


def connection_failed(exc: httpx.TransportError) -> ConnectionFailed:
    # The exception's class says what happened; its text never holds the key (a header).
    return ConnectionFailed(f"no answer: {type(exc).__name__}: {exc}".rstrip(": "), error_code="CONNECTION_FAILED")


def _redirected(response: httpx.Response) -> ConfigurationError:
    # The service never redirects: something before it does (http to https, a moved host).
    # Following would resend the body and the key to wherever it points.
    status, location = response.status_code, response.headers.get("location")
    where = f"to {location}" if location else "without a Location"
    return ConfigurationError(
        f"redirected {where}: the client follows no redirects; set the base URL to where the API is",
        status=status,
        error_code=f"HTTP_{status}",
        correlation_id=response.headers.get("x-request-id"),
    )


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - time())


def _describe(status: int | None, error_code: str, message: str, correlation_id: str | None) -> str:
    head = " ".join(part for part in (str(status) if status is not None else "", error_code) if part)
    text = f"{head}: {message}" if head else message
    return f"{text} (correlation id {correlation_id})" if correlation_id else text
