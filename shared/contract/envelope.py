"""The queue message: what the ingest edge puts on SQS and the writer takes off it.

Messages outlive deploys, so the format evolves only by adding fields with defaults:
a newer writer reads an older edge's messages, and an older writer ignores fields it does
not know. One SQS message carries one or more events (``events``), which cuts SQS requests
per event when the edge packs several.
"""

from __future__ import annotations

import contextlib
import decimal
import gc
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import msgspec

ENVELOPE_VERSION = 1


class QueuedEvent(msgspec.Struct, kw_only=True, frozen=True):
    event_id: str
    account_id: str
    event_type: str
    # The producer's JSON object, byte for byte as received: never re-encoded on the way.
    payload: msgspec.Raw
    received_at_us: int
    idempotency_key: str | None = None
    request_id: str | None = None

    def dedup_key(self) -> str:
        """What makes two events of one account "the same" for deduplication.

        An idempotency key wins; without one, the event type and the canonical payload
        (keys sorted, whitespace gone) decide. The prefixes keep the two kinds apart.
        """
        if self.idempotency_key is not None:
            return "k:" + self.idempotency_key
        digest = hashlib.sha256(self.event_type.encode())
        digest.update(b"\x00")
        digest.update(canonical_json(self.payload))
        return "h:" + digest.hexdigest()


class QueueMessage(msgspec.Struct, kw_only=True, frozen=True):
    events: list[QueuedEvent]
    v: int = ENVELOPE_VERSION


_encoder = msgspec.json.Encoder()
# Plain JSON as msgspec writes it (the form of every encoded event), for the edge's checks too.
encode_json = _encoder.encode
_message_decoder = msgspec.json.Decoder(QueueMessage)


class UncanonicalPayload(ValueError):
    """The bytes are not JSON text at all (invalid UTF-8, a lone surrogate, bad syntax).

    Neither the edge nor ``decode_message`` lets such a payload through; the message says
    what was wrong and never quotes the payload.
    """


def canonical_json(payload: msgspec.Raw | bytes) -> bytes:
    """The payload as deduplication compares it: key order, whitespace and string escapes
    do not count; every value, down to a number's last digit, does.

    Numbers compare by their exact decimal value, never through a double, in two kinds:
    integers (``1``) and numbers written with a fraction or an exponent (``1.0``, ``1e0``),
    as JSON decoders of most languages tell them apart. So ``1.0 == 1.00 == 1e0 == 10e-1``,
    ``1 != 1.0``, and ``0.1 != 0.1000000000000000001``. A number that is exactly its
    double keeps the text earlier versions produced (msgspec's shortest form), so dedup
    keys of ordinary payloads stay what they were across an upgrade. Duplicate keys (which
    the edge refuses today, but which older edges let through) keep the last value, as
    before. Total over valid JSON of any size, depth below Python's recursion limit and any
    number: it raises only ``UncanonicalPayload`` for bytes that are not JSON text.
    """
    with collector_paused():
        return _canonical(payload)


def _canonical(payload: msgspec.Raw | bytes) -> bytes:
    try:
        if not _NEEDS_EXACT.search(without_strings(payload)):
            # Every float is short and has no exponent: its double's shortest text has its
            # exact value (up to 15 significant digits survive the round trip), which is what
            # the hook below would choose, so msgspec alone gives the same bytes, in C.
            with contextlib.suppress(msgspec.ValidationError):  # an integer too long for msgspec
                return _canonical_encoder.encode(_plain_decoder.decode(payload))
        try:
            value = _canonical_decoder.decode(payload)
        except msgspec.ValidationError:
            # An integer of more digits than msgspec decodes: keep integers as their text.
            value = _long_int_decoder.decode(bytes(payload).decode())
        return _canonical_encoder.encode(value)
    except (ValueError, RecursionError) as exc:  # msgspec's DecodeError and UnicodeError are ValueErrors
        raise UncanonicalPayload(f"payload is not JSON text ({type(exc).__name__})") from None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a payload is decoded into throwaway values:
    a JSON decoder's lists and dicts hold no cycles and are freed by reference counting as
    the call ends, so the collector would only re-scan them (up to 130,000 for 256 KiB of
    brackets), several times over, for nothing."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


_STRINGS = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
# In JSON text without its strings, the floats a double may not keep exactly: an exponent
# of three digits or more (subnormals, and beyond), or a mantissa of 16 characters or more
# (a fraction, or digits before an exponent). Any other float has at most 15 significant
# digits and sits well inside the normal range, where a double keeps 15 digits exactly.
_NEEDS_EXACT = re.compile(rb"[eE][-+]?[0-9]{3}|(?<![0-9.])(?=[0-9]*[.eE])[0-9.]{16}")


def without_strings(text: msgspec.Raw | bytes) -> bytes:
    """JSON text with every string (keys included) cut out, in one linear pass: what is
    left are numbers, literals, brackets, commas, colons and white space."""
    return _STRINGS.sub(b"", text)


def _canonical_float(text: str) -> msgspec.Raw:
    """A number with a fraction or exponent, as the canonical form writes it."""
    value = float(text)
    exact = None
    if value - value == 0.0:  # finite
        shortest = _encoder.encode(value)
        if shortest == text.encode() or _exact(shortest.decode()) == (exact := _exact(text)):
            return msgspec.Raw(shortest)
    # Not exactly a double: the exact value, "<digits>e<exponent>". It differs from every
    # double's shortest text, since that text would have the same value and been taken above.
    negative, digits, exponent = exact or _exact(text)
    return msgspec.Raw(f"{'-' if negative else ''}{digits}e{exponent}".encode())


# Integer arithmetic on exponents of any length (Python's int() refuses over 4300 digits).
_EXACT = decimal.Context(prec=4_000_000, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


def _exact(text: str) -> tuple[bool, str, str]:
    """(negative, significant digits, exponent) of a JSON number: one triple per value."""
    mantissa, _, exponent_text = text.lower().partition("e")
    negative = mantissa.startswith("-")
    whole, _, fraction = mantissa.lstrip("-").partition(".")
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return False, "", "0"  # zero; the double's text keeps its sign
    significant = digits.rstrip("0")
    shift = len(digits) - len(significant) - len(fraction)
    if len(exponent_text) < 1000:  # int() takes up to 4,300 digits; Decimal any (and is slower)
        return negative, significant, str(int(exponent_text or "0") + shift)
    exponent = _EXACT.add(decimal.Decimal(exponent_text), decimal.Decimal(shift))
    return negative, significant, str(exponent)


def _canonical_int_text(text: str) -> msgspec.Raw:
    return msgspec.Raw(b"0" if text == "-0" else text.encode())  # JSON integers have no leading zeros


def _not_json(text: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


_canonical_encoder = msgspec.json.Encoder(order="sorted")
_canonical_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(float_hook=_canonical_float)
_plain_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_long_int_decoder = json.JSONDecoder(
    parse_float=_canonical_float, parse_int=_canonical_int_text, parse_constant=_not_json
)


# SQS refuses message bodies holding U+FFFE or U+FFFF, which JSON allows in strings. They
# can only stand inside strings, where their escaped form means the same: swap them.
_SQS_REFUSED = ((b"\xef\xbf\xbe", b"\\ufffe"), (b"\xef\xbf\xbf", b"\\uffff"))

# A message is its events, each encoded once (``encode_event``), in this frame: the very
# bytes msgspec writes for ``QueueMessage(events=...)``. The edge packs events of many
# requests into one message by framing their bytes, without encoding anything twice.
MESSAGE_HEAD = b'{"events":['
MESSAGE_TAIL = b'],"v":' + str(ENVELOPE_VERSION).encode() + b"}"
MESSAGE_FRAME_BYTES = len(MESSAGE_HEAD) + len(MESSAGE_TAIL)


def sqs_safe(encoded: bytes) -> bytes:
    """The same JSON, without the two characters an SQS body may not contain."""
    if b"\xef\xbf" not in encoded:
        return encoded
    for raw, escaped in _SQS_REFUSED:
        encoded = encoded.replace(raw, escaped)
    return encoded


def encode_event(event: QueuedEvent) -> bytes:
    """One event as a message carries it: UTF-8 JSON that SQS accepts."""
    return sqs_safe(_encoder.encode(event))


def frame(encoded_events: list[bytes]) -> bytes:
    """The message body holding these encoded events."""
    if len(encoded_events) < 2:
        return MESSAGE_HEAD + b"".join(encoded_events) + MESSAGE_TAIL
    # One join: the body (up to a mebibyte) is allocated and written once. Adding the head and
    # tail to the whole would copy it twice more, which costs more than the rest of packing.
    parts = list(encoded_events)
    parts[0] = MESSAGE_HEAD + parts[0]
    parts[-1] += MESSAGE_TAIL
    return b",".join(parts)


def encode_message(events: list[QueuedEvent]) -> str:
    """A message body (SQS bodies are text) holding ``events``."""
    return frame([encode_event(e) for e in events]).decode()


def decode_message(body: str | bytes) -> QueueMessage:
    """Decode a queue message; raises ``msgspec.DecodeError`` (incl. validation) if unusable."""
    message = _message_decoder.decode(body)
    if message.v > ENVELOPE_VERSION:
        # A newer major format that this writer cannot interpret safely.
        raise msgspec.ValidationError(f"unsupported envelope version {message.v}")
    return message
