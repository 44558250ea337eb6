"""The project's error hierarchy. ``shared.web.http`` maps it to HTTP in one place.

Domain code raises these; it never builds HTTP responses for errors itself.
"""

from __future__ import annotations

import msgspec


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    """One offending field: ``field`` is a JSON path such as ``$.events[3].payload``."""

    field: str
    message: str


class AppError(Exception):
    """Base of every error that reaches a client. Subclasses fix status and code."""

    status: int = 500
    error_code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, details: list[ErrorDetail] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers: dict[str, str] = {}


class ValidationError(AppError):
    status = 400
    error_code = "VALIDATION_ERROR"


class InvalidCursor(AppError):
    status = 400
    error_code = "INVALID_CURSOR"


class Unauthenticated(AppError):
    status = 401
    error_code = "UNAUTHENTICATED"


class Forbidden(AppError):
    status = 403
    error_code = "FORBIDDEN"


class NotFound(AppError):
    status = 404
    error_code = "NOT_FOUND"


class RequestTimeout(AppError):
    """The client did not send its whole body in time (a stalled or trickling upload)."""

    status = 408
    error_code = "REQUEST_TIMEOUT"


class PayloadTooLarge(AppError):
    status = 413
    error_code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(AppError):
    status = 415
    error_code = "UNSUPPORTED_MEDIA_TYPE"


class RateLimited(AppError):
    status = 429
    error_code = "RATE_LIMITED"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"Rate limit exceeded; retry in {retry_after_s} s.")
        self.headers["Retry-After"] = str(retry_after_s)


class ServiceUnavailable(AppError):
    """A dependency (SQS, DynamoDB) cannot be reached or refused: the client should retry."""

    status = 503
    error_code = "SERVICE_UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after_s)


class KeyNotFound(Exception):
    """No API key record has this id (store-level; the edge turns it into 401)."""


class AlreadyExists(Exception):
    """A conditional create found the item already there."""
