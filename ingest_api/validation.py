"""What the edge refuses in an event's JSON text, so that whatever it accepts can be carried,
stored and read back: by SQS, by the writer's canonical form, by DynamoDB and by consumers.

msgspec has already checked the syntax (it keeps ``payload`` as raw bytes, so it checks
neither UTF-8 inside them nor anything about their values). The caller checks UTF-8 of the
whole text; this module checks duplicate keys in any object, numbers within bounds and
nesting, each in time linear in the text (an event of 256 KiB costs a few milliseconds
whatever it holds: bench/edge_checks.py). Depth and numbers are read from the payload
with its strings cut out; a msgspec pass proves most events free of duplicate keys
(``_surely_fine``); the standard library's scanner with a hook per object decides the
rest, and only a refused event pays for the slow pass that finds the offending field.

Bounds, and why:
- numbers: at most ``MAX_NUMBER_DIGITS`` digits before the exponent, an exponent of at most
  ``MAX_EXPONENT_DIGITS`` digits, and a magnitude a double can hold (about 1.8e308).
  Deduplication compares numbers exactly (``shared.contract.envelope.canonical_json``) whatever
  their size; the bounds are for consumers: JavaScript reads ``1e400`` as Infinity, msgspec
  and our own client refuse it, Python refuses integers over 4,300 digits.
- nesting: at most ``MAX_DEPTH`` levels inside ``payload`` (the payload object is level
  1). Decoders recurse: Python's stop near 1,000 levels minus whatever the stack already
  holds, so a payload the edge could just parse might not parse in the writer.
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

import msgspec

from shared.contract.envelope import collector_paused, encode_json, without_strings
from shared.errors import ErrorDetail

MAX_DEPTH = 128
MAX_NUMBER_DIGITS = 100
MAX_EXPONENT_DIGITS = 4
# Control characters (C0, DEL, C1): refused in event types and idempotency keys, which
# travel into keys, log-free headers and consumers' filters, where they have no business.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")


class _Refused(Exception):
    """Raised inside the scanner's hook: a duplicate key; the second pass says where."""


def _one_object(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) > 1 and len({key for key, _ in pairs}) != len(pairs):
        raise _Refused


# Hooks return None: the pass only checks for duplicates, it builds no values worth keeping.
_checker = json.JSONDecoder(object_pairs_hook=_one_object)


def number_problem(text: str) -> str | None:
    """Why the edge refuses this JSON number, or None (the second pass's rule, which
    ``_numbers_fit`` applies to a whole payload at once)."""
    mantissa, _, exponent = text.lower().partition("e")
    digits = len(mantissa) - mantissa.startswith("-") - ("." in mantissa)
    if digits > MAX_NUMBER_DIGITS:
        return f"A number may have at most {MAX_NUMBER_DIGITS} digits (leading zeros count)."
    if len(exponent.lstrip("+-")) > MAX_EXPONENT_DIGITS:
        return f"A number's exponent may have at most {MAX_EXPONENT_DIGITS} digits."
    value = float(text)
    if value - value != 0.0:
        return "The number is too large: its magnitude must fit a double (at most about 1.8e308)."
    return None


def check_event_text(text: str, raw: bytes, payload: bytes, prefix: str) -> ErrorDetail | None:
    """What is wrong with an event msgspec has decoded, or None: duplicate keys in any object,
    numbers out of bounds, payload nesting too deep. ``text`` is ``raw`` decoded (so UTF-8
    is already checked), ``payload`` the payload's bytes.

    Every check is linear in the text: one regular-expression pass cuts the strings out of
    the payload, and depth and numbers are read from what is left with C-level passes.
    """
    bare = without_strings(payload)
    if too_deep(bare):
        return ErrorDetail(f"{prefix}.payload", f"Nested deeper than {MAX_DEPTH} levels.")
    if _numbers_fit(bare) and (_surely_fine(raw) or _no_duplicates(text)):
        return None
    return locate(raw, prefix)


# In JSON text without its strings, runs of digits and dots are numbers' mantissas and "e"
# or "E" then a sign and digits their exponents. One translation keeps just that shape:
# digits become "0", exponent marks "e", "+" "p", "-" "m", dots stay, the rest is " ".
def _shape_table() -> bytes:
    table = bytearray(b" " * 256)
    for digit in b"0123456789":
        table[digit] = ord("0")
    table[ord(".")] = ord(".")
    table[ord("e")] = table[ord("E")] = ord("e")
    table[ord("+")] = ord("p")
    table[ord("-")] = ord("m")
    return bytes(table)


_SHAPE = _shape_table()
_DIGIT_RUN = b"0" * (MAX_NUMBER_DIGITS + 1)  # a mantissa (or exponent) of too many digits
_MANTISSA_RUN = b"0" * (MAX_NUMBER_DIGITS + 2)  # with "." as "0" too: a mantissa with a fraction
_DOT_AS_DIGIT = bytes.maketrans(b".", b"0")
_LONG_EXPONENTS = tuple(b"e" + sign + b"0" * (MAX_EXPONENT_DIGITS + 1) for sign in (b"", b"p", b"m"))
# With at most 100 digits, only a positive exponent of three digits or more can pass a
# double's range: those few numbers are converted.
_LARGE_EXPONENTS = (b"e000", b"ep000")


def _numbers_fit(bare: bytes) -> bool:
    """``number_problem`` for every number of ``bare`` (a payload without its strings), in a
    few C-level passes whatever the payload holds."""
    shape = bare.translate(_SHAPE)
    if _DIGIT_RUN in shape or any(long in shape for long in _LONG_EXPONENTS):
        return False
    if _MANTISSA_RUN in shape.translate(_DOT_AS_DIGIT):
        return False
    return not any(mark in shape for mark in _LARGE_EXPONENTS) or _all_finite(bare)


_PUNCTUATION = bytes.maketrans(b",:[]{}\t\n\r", b" " * 9)


def _all_finite(bare: bytes) -> bool:
    """Whether every number of ``bare`` converts to a finite double: the literals cut, the
    numbers split apart and converted, all at C level."""
    for literal in (b"true", b"false", b"null"):
        bare = bare.replace(literal, b" ")
    return math.isfinite(max(map(abs, map(float, bare.translate(_PUNCTUATION).split())), default=0.0))


def _no_duplicates(text: str) -> bool:
    """The exact duplicate check: the standard library's scanner, a hook per object."""
    try:
        with collector_paused():
            _checker.decode(text)
    except (_Refused, ValueError, RecursionError):
        return False
    return True


def _surely_fine(raw: bytes) -> bool:
    """A fast proof that no object has a duplicate key (False: the exact pass decides).

    msgspec decodes and encodes again, about three times faster than the standard
    library's scanner. Every member of the text has one colon, and so does every colon
    inside a string; msgspec writes colons as they are. So, unless an escape could stand
    for a colon (``\\u003a``), the text and its re-encoding have as many colons as each other
    exactly when no member was dropped as a duplicate.
    """
    if b"u003" in raw:
        return False
    with collector_paused():
        try:
            value = _fast_checker.decode(raw)
        except ValueError:
            return False
        return raw.count(b":") == encode_json(value).count(b":")


# Floats stay text (``str`` is a C call, no Python frame): their values do not matter here,
# and msgspec's own parsing of a float near a double's largest costs about 8 µs each.
_fast_checker: msgspec.json.Decoder[Any] = msgspec.json.Decoder(float_hook=str)
_OPEN_CLOSE = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")  # +1 and -1 as signed bytes
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(bare: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether valid JSON ``bare`` (its strings cut out: ``without_strings``) nests deeper
    than ``limit`` (objects and arrays).

    One pass: the brackets become +1 and -1, and the running sum is the depth at each.
    """
    if bare.count(b"[") + bare.count(b"{") <= limit:
        return False  # the common case: fewer brackets than levels allowed
    steps = bare.translate(None, _NOT_BRACKETS).translate(_OPEN_CLOSE)
    return max(accumulate(memoryview(steps).cast("b")), default=0) > limit


# --- the second pass: only for refused events ----------------------------------------------


class _Members(list[tuple[str, Any]]):
    """An object's members in document order, duplicates included (the scanner's pairs hook)."""


class _Number(str):
    """A number's text."""


_locator = json.JSONDecoder(object_pairs_hook=_Members, parse_float=_Number, parse_int=_Number)
_INVALID_BYTE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of an invalid byte
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def locate(raw: bytes, prefix: str) -> ErrorDetail:
    """The first offending place of a refused event, in document order."""
    generic = ErrorDetail(prefix, "Not valid UTF-8, or not JSON the edge can store.")
    try:
        with collector_paused():
            tree = _locator.decode(raw.decode("utf-8", "surrogateescape"))
            found = _walk(tree)
            del tree
    except (ValueError, RecursionError):
        return generic
    if found is None:
        return generic
    steps, message = found
    # The path is spelt once, for the node found: spelling it at every node visited would
    # cost its length (up to the depth) per node.
    return ErrorDetail(prefix + "".join(reversed(steps)), message)


# What _walk finds: the steps from the node up to the root (reversed), and the reason.
_Found = tuple[list[str], str]


def _walk(node: Any) -> _Found | None:
    if isinstance(node, _Members):
        return _walk_members(node)
    if isinstance(node, list):
        for i, item in enumerate(node):
            found = _walk(item)
            if found is not None:
                found[0].append(f"[{i}]")
                return found
        return None
    if isinstance(node, _Number):
        problem = number_problem(node)
        return None if problem is None else ([], problem)
    if isinstance(node, str) and _INVALID_BYTE.search(node):
        return [], "Not valid UTF-8."
    return None


def _walk_members(members: _Members) -> _Found | None:
    seen: set[str] = set()
    for key, value in members:
        if _INVALID_BYTE.search(key):
            return [], "An object key is not valid UTF-8."
        if key in seen:
            return [_step(key)], "Duplicate key: it appears more than once in one object."
        seen.add(key)
        found = _walk(value)
        if found is not None:
            found[0].append(_step(key))
            return found
    return None


def _step(key: str) -> str:
    """``.b`` for a plain key; other keys JSON-quoted (and cut short: a path, not a copy)."""
    if _PLAIN_KEY.fullmatch(key):
        return f".{key}"
    return f"[{json.dumps(_INVALID_BYTE.sub('?', key[:64]))}]"
