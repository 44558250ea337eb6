"""The project's errors and the one table of what each one answers over HTTP.

``ErrorAnswer`` pairs a status with an error code and what that answer means. The table
below is the only place they are spelt: every ``AppError`` subclass takes its status and
code from its entry, ``shared.web.http`` maps Litestar's own exceptions (404, 405...) and
dependency failures through it, the admin listener writes its few errors from it, and the
OpenAPI documents describe each route's error answers with its ``meaning``.

Domain code raises these; it never builds HTTP responses for errors itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import msgspec


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    status: int
    code: str
    meaning: str  # what a client reads in the API documents


VALIDATION_ERROR = ErrorAnswer(
    400, "VALIDATION_ERROR", "Invalid request (body, query parameter or header): `details` names each offending field."
)
INVALID_CURSOR = ErrorAnswer(400, "INVALID_CURSOR", "The cursor was altered, truncated, or made for another query.")
BAD_REQUEST = ErrorAnswer(400, "BAD_REQUEST", "Not an HTTP/1 request head (the admin listener).")
UNAUTHENTICATED = ErrorAnswer(401, "UNAUTHENTICATED", "Missing, malformed or unknown API key, or wrong secret.")
FORBIDDEN = ErrorAnswer(403, "FORBIDDEN", "Inactive or revoked key, or a key without the needed scope.")
NOT_FOUND = ErrorAnswer(404, "NOT_FOUND", "No such event for this account.")
METHOD_NOT_ALLOWED = ErrorAnswer(405, "METHOD_NOT_ALLOWED", "The path does not take this method.")
CONSUMER_EXISTS = ErrorAnswer(409, "CONSUMER_EXISTS", "The account already has a consumer of this name.")
CONSUMER_LIMIT = ErrorAnswer(409, "CONSUMER_LIMIT", "The account has as many consumers as it may have.")
DEFAULT_CONSUMER = ErrorAnswer(409, "DEFAULT_CONSUMER", "The `default` consumer cannot be changed or deleted.")
# What a bare 409 stands for in the documents: a route's 409 is one of the three above.
CONFLICT = ErrorAnswer(
    409,
    "CONFLICT",
    "The account's consumers forbid it; `error_code` says why: CONSUMER_EXISTS (the name is taken),"
    " CONSUMER_LIMIT (the account has as many consumers as it may have), DEFAULT_CONSUMER (`default`"
    " cannot be changed or deleted).",
)
REQUEST_TIMEOUT = ErrorAnswer(408, "REQUEST_TIMEOUT", "The body did not arrive in time.")
PAYLOAD_TOO_LARGE = ErrorAnswer(413, "PAYLOAD_TOO_LARGE", "Body or payload too large.")
UNSUPPORTED_MEDIA_TYPE = ErrorAnswer(415, "UNSUPPORTED_MEDIA_TYPE", "Body not sent as application/json.")
RATE_LIMITED = ErrorAnswer(429, "RATE_LIMITED", "Rate limit reached; see Retry-After.")
INTERNAL_ERROR = ErrorAnswer(500, "INTERNAL_ERROR", "A fault of ours; the body holds only the correlation id.")
SERVICE_UNAVAILABLE = ErrorAnswer(
    503, "SERVICE_UNAVAILABLE", "SQS or DynamoDB unavailable; retry after Retry-After seconds."
)
# Any other status Litestar itself answers with (none is known today).
HTTP_ERROR = ErrorAnswer(0, "HTTP_ERROR", "Another HTTP error.")

# The answer a bare status stands for: Litestar's own exceptions carry only a status, and
# a route's declaration lists the statuses it can answer with (shared/web/routes.py).
BY_STATUS: dict[int, ErrorAnswer] = {
    answer.status: answer
    for answer in (
        VALIDATION_ERROR,
        UNAUTHENTICATED,
        FORBIDDEN,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        CONFLICT,
        REQUEST_TIMEOUT,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        RATE_LIMITED,
        INTERNAL_ERROR,
        SERVICE_UNAVAILABLE,
    )
}


def answer_for(status: int) -> ErrorAnswer:
    """The table's answer for ``status`` (``HTTP_ERROR`` for one it does not hold)."""
    return BY_STATUS.get(status, HTTP_ERROR)


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    """One offending field: ``field`` is a JSON path such as ``$.events[3].payload``."""

    field: str
    message: str


class AppError(Exception):
    """Base of every error that reaches a client. Subclasses name their table entry:
    ``class NotFound(AppError, answer=NOT_FOUND)``, which fixes status and code."""

    answer: ClassVar[ErrorAnswer] = INTERNAL_ERROR
    status: ClassVar[int] = INTERNAL_ERROR.status
    error_code: ClassVar[str] = INTERNAL_ERROR.code

    def __init_subclass__(cls, answer: ErrorAnswer | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if answer is not None:
            cls.answer, cls.status, cls.error_code = answer, answer.status, answer.code

    def __init__(self, message: str, details: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers: dict[str, str] = {}


class ValidationError(AppError, answer=VALIDATION_ERROR):
    pass


class InvalidCursor(AppError, answer=INVALID_CURSOR):
    pass


class Unauthenticated(AppError, answer=UNAUTHENTICATED):
    pass


class Forbidden(AppError, answer=FORBIDDEN):
    pass


class NotFound(AppError, answer=NOT_FOUND):
    pass


class ConsumerExists(AppError, answer=CONSUMER_EXISTS):
    pass


class ConsumerLimitReached(AppError, answer=CONSUMER_LIMIT):
    pass


class DefaultConsumer(AppError, answer=DEFAULT_CONSUMER):
    """PATCH or DELETE of ``default``: it is every account's implicit inbox, never stored."""


class RequestTimeout(AppError, answer=REQUEST_TIMEOUT):
    """The client did not send its whole body in time (a stalled or trickling upload)."""


class PayloadTooLarge(AppError, answer=PAYLOAD_TOO_LARGE):
    pass


class UnsupportedMediaType(AppError, answer=UNSUPPORTED_MEDIA_TYPE):
    pass


class RateLimited(AppError, answer=RATE_LIMITED):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"Rate limit exceeded; retry in {retry_after_s} s.")
        self.headers["Retry-After"] = str(retry_after_s)


class TooManyWaits(AppError, answer=RATE_LIMITED):
    """A key has as many requests waiting (``wait_s``) on this instance as it may have."""

    def __init__(self, most: int) -> None:
        super().__init__(f"This key already has {most} requests waiting here; retry in 1 s, or wait in fewer.")
        self.headers["Retry-After"] = "1"


class ServiceUnavailable(AppError, answer=SERVICE_UNAVAILABLE):
    """A dependency (SQS, DynamoDB) cannot be reached or refused: the client should retry."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after_s)


class KeyNotFound(Exception):
    """No API key record has this id (store-level; the edge turns it into 401)."""


class AlreadyExists(Exception):
    """A conditional create found the item already there."""
