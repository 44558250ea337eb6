"""Decode request bodies once, at the edge, into Structs; failures become field-level 400s."""

from __future__ import annotations

import json
import re
from typing import TypeVar

import msgspec

from shared.errors import ErrorDetail, UnsupportedMediaType, ValidationError

T = TypeVar("T")

_AT_PATH = re.compile(r"^(?P<message>.*?) - at `(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")


def detail_from_msgspec(exc: msgspec.DecodeError, prefix: str = "$") -> ErrorDetail:
    """Turn msgspec's message into (field path, message); ``prefix`` roots nested documents."""
    text = str(exc)
    path = "$"
    match = _AT_PATH.match(text)
    if match:
        text, path = match["message"], match["path"]
    for pattern in (_MISSING, _UNKNOWN):
        named = pattern.match(text)
        if named:
            path = f"{path}.{named['name']}"
    if not isinstance(exc, msgspec.ValidationError):
        text = f"Body is not valid JSON: {text}"
    return ErrorDetail(field=prefix + path[1:], message=text)


# msgspec raises these, not DecodeError, for JSON nested too deep and for invalid UTF-8.
UNDECODABLE = (RecursionError, UnicodeDecodeError)


def undecodable(exc: Exception, prefix: str = "$") -> ErrorDetail:
    reason = "nested too deeply" if isinstance(exc, RecursionError) else "not valid UTF-8"
    return ErrorDetail(field=prefix, message=f"Body is not valid JSON: {reason}.")


def decode_json(decoder: msgspec.json.Decoder[T], body: bytes, prefix: str = "$") -> T:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        detail = detail_from_msgspec(exc, prefix)
        raise ValidationError(f"Invalid request body: {detail.message}", [detail]) from exc
    except UNDECODABLE as exc:
        detail = undecodable(exc, prefix)
        raise ValidationError(detail.message, [detail]) from exc


def decode_unique_json(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    """``decode_json`` for a small body (a few KiB: each byte is scanned once more) in which a
    key given twice is refused: msgspec keeps the last, a proxy or a client library may read
    the first, and the two would disagree on what the request asked (which consumer to create,
    which events to acknowledge)."""
    value = decode_json(decoder, body)
    try:
        _pairs_checker.decode(body.decode())
    except _Repeated as exc:
        detail = ErrorDetail(field="$", message=f"Body gives a key twice: {str(exc)[:100]!r}.")
        raise ValidationError(f"Invalid request body: {detail.message}", [detail]) from None
    except (ValueError, RecursionError):  # what msgspec took and this scanner will not: not ours to judge
        pass
    return value


class _Repeated(Exception):
    """A key an object of the body gives twice (its name)."""


def _one_object(pairs: list[tuple[str, object]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _Repeated(key)
        seen.add(key)


# The standard library's scanner, for its hook per object; it builds no values worth keeping.
_pairs_checker = json.JSONDecoder(object_pairs_hook=_one_object)


def require_json(content_type: str | None) -> None:
    """415 unless the body is declared as JSON."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise UnsupportedMediaType("Send the body as 'Content-Type: application/json'.")
