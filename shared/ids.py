"""Identifiers: time-sortable event ids and request ids."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_ID_LENGTH = 26  # 48-bit millisecond time + 80 random bits = 130 bits = 26 base32 digits
EVENT_ID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


# Two base32 digits (10 bits) at a time: 13 table lookups make an id.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_SHIFTS = range(_ID_LENGTH * 5 - 10, -1, -10)


def new_event_id(now_ms: int | None = None) -> str:
    """A ULID-style id: unique, URL-safe, and lexicographically ordered by time of receipt."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms << _RANDOM_BITS) | int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def is_event_id(value: str) -> bool:
    return EVENT_ID_PATTERN.match(value) is not None


_REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:\-]")
MAX_REQUEST_ID_LENGTH = 128


def sanitize_request_id(value: str | None) -> str:
    """The client's X-Request-ID reduced to safe characters and bounded, or a fresh id."""
    if value:
        cleaned = _REQUEST_ID_UNSAFE.sub("", value)[:MAX_REQUEST_ID_LENGTH]
        if cleaned:
            return cleaned
    return os.urandom(12).hex()


def rfc3339(us: int) -> str:
    """Microseconds since the epoch as an RFC 3339 UTC timestamp."""
    moment = datetime.fromtimestamp(us / 1_000_000, tz=UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
