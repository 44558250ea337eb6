"""Identifiers: time-sortable event ids and request ids."""

from __future__ import annotations

import functools
import itertools
import os
import random
import re
import time
from datetime import UTC, datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
_ID_LENGTH = 26  # 48-bit millisecond time + 80 random bits = 130 bits = 26 base32 digits
# fullmatch, never match with "$": "$" also matches before a trailing newline.
EVENT_ID_PATTERN = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


# Two base32 digits (10 bits) at a time: 13 table lookups make an id.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_SHIFTS = range(_ID_LENGTH * 5 - 10, -1, -10)


def new_event_id(now_ms: int | None = None) -> str:
    """A ULID-style id: unique, URL-safe, and lexicographically ordered by time of receipt.

    The 80 random bits need to be unique, not secret (every read is scoped to its account),
    so they come from ``random`` (seeded from the OS, and reseeded in forked workers)
    rather than a system call per id.
    """
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms << _RANDOM_BITS) | random.getrandbits(_RANDOM_BITS)
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def id_floor(ms: int) -> str:
    """The smallest event id of millisecond ``ms``: every id made in it or later sorts at or
    after it, every id of an earlier millisecond before it (where a walk by time starts)."""
    value = ms << _RANDOM_BITS
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def is_event_id(value: str) -> bool:
    return EVENT_ID_PATTERN.fullmatch(value) is not None


_REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:\-]")
# Generated request ids: a random per-process prefix and a counter. Unique across instances
# and restarts without a system call per request; a forked worker takes a prefix of its own.
_REQUEST_ID_PREFIX = os.urandom(8).hex() + "-"
_request_counter = itertools.count(1)


def _new_prefix_after_fork() -> None:
    global _REQUEST_ID_PREFIX  # noqa: PLW0603 - per-process state, renewed in each child
    _REQUEST_ID_PREFIX = os.urandom(8).hex() + "-"


os.register_at_fork(after_in_child=_new_prefix_after_fork)
MAX_REQUEST_ID_LENGTH = 128


def sanitize_request_id(value: str | None) -> str:
    """The client's X-Request-ID reduced to safe characters and bounded, or a fresh id."""
    if value:
        cleaned = _REQUEST_ID_UNSAFE.sub("", value)[:MAX_REQUEST_ID_LENGTH]
        if cleaned:
            return cleaned
    return f"{_REQUEST_ID_PREFIX}{next(_request_counter):x}"


def rfc3339(us: int) -> str:
    """Microseconds since the epoch as an RFC 3339 UTC timestamp (``...T04:51:59.377757Z``)."""
    seconds, micros = divmod(us, 1_000_000)
    return f"{_rfc3339_second(seconds)}.{micros:06d}Z"


@functools.lru_cache(maxsize=4096)
def _rfc3339_second(seconds: int) -> str:
    # A page's events mostly share their seconds: format each second once.
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
