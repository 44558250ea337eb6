"""What the edge refuses in an event's JSON text, so that whatever it accepts can be carried,
stored and read back: by SQS, by the writer's canonical form, by DynamoDB and by consumers.

msgspec has already checked the syntax (it keeps ``payload`` as raw bytes, so it checks
neither UTF-8 inside them nor anything about their values). The caller checks UTF-8 of the
whole text; this module checks duplicate keys in any object, numbers within bounds and
nesting. A msgspec pass proves most events clean (``_surely_fine``, about 8 µs for a 0.7 KB
event here); the standard library's scanner with hooks (about twice that) decides the rest,
and only a refused event pays for the slow pass that finds the offending field.

Bounds, and why:
- numbers: at most ``MAX_NUMBER_DIGITS`` digits before the exponent, an exponent of at most
  ``MAX_EXPONENT_DIGITS`` digits, and a magnitude a double can hold (about 1.8e308).
  Deduplication compares numbers exactly (``shared.envelope.canonical_json``) whatever
  their size; the bounds are for consumers: JavaScript reads ``1e400`` as Infinity, msgspec
  and our own client refuse it, Python refuses integers over 4,300 digits.
- nesting: at most ``MAX_DEPTH`` levels inside ``payload`` (the payload object is level
  1). Decoders recurse: Python's stop near 1,000 levels minus whatever the stack already
  holds, so a payload the edge could just parse might not parse in the writer.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from shared.errors import ErrorDetail

MAX_DEPTH = 128
MAX_NUMBER_DIGITS = 100
MAX_EXPONENT_DIGITS = 4
# Control characters (C0, DEL, C1): refused in event types and idempotency keys, which
# travel into keys, log-free headers and consumers' filters, where they have no business.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")


class _Refused(Exception):
    """Raised inside the scanner's hooks; the second pass says where and why."""


def _one_object(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len({key for key, _ in pairs}) != len(pairs):
        raise _Refused


def _checked_int(text: str) -> None:
    if len(text) > MAX_NUMBER_DIGITS and len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise _Refused


def _checked_float(text: str) -> None:
    # A short plain decimal (no exponent) is always within every bound.
    if (len(text) > 16 or "e" in text or "E" in text) and number_problem(text) is not None:
        raise _Refused


# Hooks return None: the pass only checks, it builds no values worth keeping.
_checker = json.JSONDecoder(object_pairs_hook=_one_object, parse_float=_checked_float, parse_int=_checked_int)


def number_problem(text: str) -> str | None:
    """Why the edge refuses this JSON number, or None."""
    mantissa, _, exponent = text.lower().partition("e")
    digits = len(mantissa) - mantissa.startswith("-") - ("." in mantissa)
    if digits > MAX_NUMBER_DIGITS:
        return f"A number may have at most {MAX_NUMBER_DIGITS} digits."
    if len(exponent.lstrip("+-")) > MAX_EXPONENT_DIGITS:
        return f"A number's exponent may have at most {MAX_EXPONENT_DIGITS} digits."
    value = float(text)
    if value - value != 0.0:
        return "The number is too large: its magnitude must fit a double (at most about 1.8e308)."
    return None


def check_event_text(text: str, raw: bytes, payload: bytes, prefix: str) -> ErrorDetail | None:
    """What is wrong with an event msgspec has decoded, or None: duplicate keys in any object,
    numbers out of bounds, payload nesting too deep. ``text`` is ``raw`` decoded (so UTF-8
    is already checked), ``payload`` the payload's bytes."""
    if too_deep(payload):
        return ErrorDetail(f"{prefix}.payload", f"Nested deeper than {MAX_DEPTH} levels.")
    if _surely_fine(raw):
        return None
    try:
        _checker.decode(text)
    except (_Refused, ValueError, RecursionError):
        return locate(raw, prefix)
    return None


def _surely_fine(raw: bytes) -> bool:
    """A fast proof that the exact pass would find nothing (False: run it, it decides).

    msgspec decodes (floats through ``_checked_float``) and encodes again, about three times
    faster than the standard library's scanner. Duplicates: every member of the text has one
    colon, and so does every colon inside a string; msgspec writes colons as they are. So,
    unless an escape could stand for a colon (``\\u003a``), the text and its re-encoding have
    as many colons as each other exactly when no member was dropped as a duplicate. Integers
    beyond the digit bound show as a long run of digits.
    """
    try:
        value = _fast_checker.decode(raw)
    except (_Refused, ValueError):
        return False
    return (
        raw.count(b":") == _encoder.encode(value).count(b":")
        and b"u003" not in raw
        and _LONG_DIGITS not in raw.translate(_DIGITS_ONLY)
    )


_fast_checker: msgspec.json.Decoder[Any] = msgspec.json.Decoder(float_hook=_checked_float)
_encoder = msgspec.json.Encoder()
_DIGITS_ONLY = bytes(48 if b in b"0123456789" else 32 for b in range(256))  # digits -> "0", others -> " "
_LONG_DIGITS = b"0" * (MAX_NUMBER_DIGITS + 1)


_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_INNERMOST = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(payload: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether valid JSON ``payload`` nests deeper than ``limit`` (objects and arrays)."""
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return False  # the common case: fewer brackets than levels allowed
    brackets = _STRINGS.sub(b"", payload).translate(None, _NOT_BRACKETS)
    for _ in range(limit):  # each pass peels one level: the pairs innermost at its start
        brackets = _INNERMOST.sub(b"", brackets)
        if not brackets:
            return False
    return True


# --- the second pass: only for refused events ----------------------------------------------


class _Members(list[tuple[str, Any]]):
    """An object's members in document order, duplicates included."""


class _Number(str):
    """A number's text."""


def _members(pairs: list[tuple[str, Any]]) -> _Members:
    return _Members(pairs)


_locator = json.JSONDecoder(object_pairs_hook=_members, parse_float=_Number, parse_int=_Number)
_INVALID_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of an invalid byte
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def locate(raw: bytes, prefix: str) -> ErrorDetail:
    """The first offending place of a refused event, in document order."""
    generic = ErrorDetail(prefix, "Not valid UTF-8, or not JSON the edge can store.")
    try:
        tree = _locator.decode(raw.decode("utf-8", "surrogateescape"))
        return _walk(tree, prefix) or generic
    except (ValueError, RecursionError):
        return generic


def _walk(node: Any, path: str) -> ErrorDetail | None:
    if isinstance(node, _Members):
        return _walk_members(node, path)
    if isinstance(node, list):
        return next((f for i, item in enumerate(node) if (f := _walk(item, f"{path}[{i}]")) is not None), None)
    if isinstance(node, _Number):
        problem = number_problem(node)
        return None if problem is None else ErrorDetail(path, problem)
    if isinstance(node, str) and _INVALID_BYTE.search(node):
        return ErrorDetail(path, "Not valid UTF-8.")
    return None


def _walk_members(members: _Members, path: str) -> ErrorDetail | None:
    seen: set[str] = set()
    for key, value in members:
        where = _child(path, key)
        if _INVALID_BYTE.search(key):
            return ErrorDetail(path, "An object key is not valid UTF-8.")
        if key in seen:
            return ErrorDetail(where, "Duplicate key: it appears more than once in one object.")
        seen.add(key)
        found = _walk(value, where)
        if found is not None:
            return found
    return None


def _child(path: str, key: str) -> str:
    """``$.a.b`` for plain keys; other keys JSON-quoted (and cut short: a path, not a copy)."""
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(_INVALID_BYTE.sub('?', key[:64]))}]"
