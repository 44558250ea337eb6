"""Queue messages evolve by adding fields; request errors name their field."""

from __future__ import annotations

import asyncio
import decimal
import gc
import json
import sys
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest_api import validation
from ingest_api.schemas import EventIn
from ingest_api.service import YIELD_EVERY_BYTES, IngestService
from ingest_api.validation import MAX_DEPTH
from shared.contract import envelope
from shared.contract.envelope import QueuedEvent, QueueMessage, canonical_json, decode_message, encode_message, sqs_safe
from shared.errors import AppError, ValidationError
from shared.web.decoding import decode_json


def event(payload: bytes = b'{"a": 1}', key: str | None = None, event_type: str = "t") -> QueuedEvent:
    return QueuedEvent(
        event_id="01ARZ3NDEKTSV4RRFFQ69G5FAV",
        account_id="acc",
        event_type=event_type,
        payload=msgspec.Raw(payload),
        received_at_us=1,
        idempotency_key=key,
    )


def test_a_message_round_trips_with_the_payload_bytes_untouched() -> None:
    original = event(b'{"b": 2,   "a": [1, 2]}')
    (decoded,) = decode_message(encode_message([original])).events
    assert bytes(decoded.payload) == bytes(original.payload)
    assert decoded.event_id == original.event_id


def test_a_message_from_an_older_edge_gets_defaults_and_a_newer_ones_fields_are_ignored() -> None:
    older = b'{"events": [{"event_id": "e", "account_id": "a", "event_type": "t", "payload": {}, "received_at_us": 1}]}'
    (from_older,) = decode_message(older).events
    assert from_older.idempotency_key is None
    assert from_older.request_id is None
    newer = older.replace(b'"received_at_us": 1', b'"received_at_us": 1, "priority": "high"')
    assert decode_message(newer).events[0].event_id == "e"


def test_an_envelope_of_an_unknown_major_version_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_message(b'{"events": [], "v": 2}')


def test_dedup_keys_ignore_key_order_and_whitespace_but_not_type_or_values() -> None:
    assert event(b'{"a": 1, "b": {"c": 2}}').dedup_key() == event(b'{"b":{"c":2},"a":1}').dedup_key()
    assert event(b'{"a": 1}').dedup_key() != event(b'{"a": 2}').dedup_key()
    assert event(b'{"a": 1}').dedup_key() != event(b'{"a": 1}', event_type="u").dedup_key()
    # An idempotency key decides alone, and never collides with a payload hash.
    assert event(b'{"a": 1}', key="k").dedup_key() == event(b'{"a": 2}', key="k").dedup_key()
    assert event(key="k").dedup_key() != event().dedup_key()


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b'{"event_type": 1, "payload": {}}', "$.event_type", "Expected `str`"),
        (b'{"payload": {}}', "$.event_type", "missing required field"),
        (b'{"event_type": "x", "payload": {}, "zz": 0}', "$.zz", "unknown field"),
        (b'{"event_type": "x", "payload": {', "$", "not valid JSON"),
    ],
)
def test_decoding_errors_name_the_field(body: bytes, field: str, words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        decode_json(msgspec.json.Decoder(EventIn), body)
    (detail,) = caught.value.details
    assert detail.field == field
    assert words in detail.message


# --- the canonical form: exact numbers, and total over whatever the edge accepts ------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b'{"v": 1.0}', b'{"v": 1.00}'),
        (b'{"v": 1.0}', b'{"v": 1e0}'),
        (b'{"v": 1.0}', b'{"v": 10E-1}'),
        (b'{"v": 1e400}', b'{"v": 10e399}'),
        (b'{"v": -0}', b'{"v": 0}'),
        (b'{"s": "\\u0041", "t": [1, 2]}', b'{"t":[1,2],"s":"A"}'),
    ],
)
def test_canonical_form_equal_values(a: bytes, b: bytes) -> None:
    assert canonical_json(msgspec.Raw(a)) == canonical_json(msgspec.Raw(b))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b'{"v": 0.1}', b'{"v": 0.1000000000000000001}'),  # the same double, different values
        (b'{"v": 1}', b'{"v": 1.0}'),  # an integer and a number with a fraction are two kinds
        (b'{"v": 1e400}', b'{"v": 1e401}'),
        (b'{"v": 1e-400}', b'{"v": 0.0}'),
        (b'{"v": 123456789012345678901234567890}', b'{"v": 123456789012345678901234567891}'),
        (b'{"v": 9007199254740993.0}', b'{"v": 9007199254740992.0}'),
    ],
)
def test_canonical_form_distinct_values(a: bytes, b: bytes) -> None:
    assert canonical_json(msgspec.Raw(a)) != canonical_json(msgspec.Raw(b))


_old_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()
_old_encoder = msgspec.json.Encoder(order="sorted")
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=5))
def test_canonical_form_of_ordinary_payloads_is_what_earlier_versions_made(value: dict[str, Any]) -> None:
    """Dedup keys stay the same across the upgrade (claims written by the previous writer
    still match), for every payload whose numbers are exactly doubles."""
    payload = msgspec.json.encode(value)
    assert canonical_json(msgspec.Raw(payload)) == _old_encoder.encode(_old_decoder.decode(payload))


_number_texts = st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole}{fraction}{exponent}",
    st.sampled_from(["", "-"]),
    st.sampled_from(["0", "1", "9"]) | st.integers(1, 10**40).map(str),
    st.just("") | st.text("0123456789", min_size=1, max_size=30).map(lambda d: "." + d),
    st.just("") | st.integers(-(10**6), 10**6).map(lambda e: f"e{e:+d}") | st.sampled_from(["e0", "E5", "e-0400"]),
).filter(lambda t: "." in t or "e" in t.lower())


@settings(max_examples=400, deadline=None)
@given(_number_texts, _number_texts)
def test_numbers_compare_by_their_exact_decimal_value(x: str, y: str) -> None:
    same = decimal.Decimal(x) == decimal.Decimal(y) and (x.startswith("-") == y.startswith("-") or float(x) != 0)
    form = [canonical_json(msgspec.Raw(b'{"v":%s}' % t.encode())) for t in (x, y)]
    assert (form[0] == form[1]) == same, (x, y, form)


# JSON text, including what generated Python values cannot show: long and extreme numbers,
# escapes of every kind, duplicate keys, deep nesting, invalid bytes.
_raw_numbers = _number_texts | st.integers().map(str) | st.sampled_from(["1" + "0" * 5000, "1e99999", "-0", "1e400"])
_raw_strings = st.lists(
    st.text(max_size=6).map(lambda s: msgspec.json.encode(s).decode()[1:-1])
    | st.sampled_from(["\\u0000", "\\ud83d\\ude00", "\\uffff", "\ufffe", "\\/", "\\\\", '\\"']),
    max_size=4,
).map(lambda parts: '"' + "".join(parts) + '"')


def _raw_json(depth: int = 0) -> st.SearchStrategy[str]:
    leaf = _raw_numbers | _raw_strings | st.sampled_from(["true", "false", "null"])
    if depth > 3:
        return leaf
    inner = st.deferred(lambda: _raw_json(depth + 1))
    arrays = st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]")
    objects = st.lists(st.tuples(_raw_strings | st.just('"k"'), inner), max_size=3).map(
        lambda members: "{" + ",".join(f"{k}:{v}" for k, v in members) + "}"
    )
    return leaf | arrays | objects


_raw_payloads = st.lists(st.tuples(_raw_strings | st.just('"k"'), _raw_json()), max_size=4).map(
    lambda members: ("{" + ",".join(f"{k}:{v}" for k, v in members) + "}").encode()
)


@settings(max_examples=400, deadline=None)
@given(_raw_payloads, st.sampled_from([b"", b"\xff", b"\xc3", b"\xed\xa0\x80"]), st.integers(0, 10_000))
def test_whatever_the_edge_accepts_the_canonical_form_takes(payload: bytes, splice: bytes, at: int) -> None:
    at %= len(payload) + 1
    payload = payload[:at] + splice + payload[at:]
    body = b'{"event_type": "t", "payload": ' + payload + b"}"
    service = IngestService(None, max_payload_bytes=256 * 1024)  # type: ignore[arg-type]
    try:
        event = service.parse_event(body)
    except AppError as exc:
        refused: AppError | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.status in (400, 413)
        assert refused.details
        assert refused.details[0].field.startswith("$")
        return
    canonical_json(event.payload)  # never raises for an accepted event
    # ... nor for the payload as the queue carries it, escapes and all.
    (queued,) = decode_message(sqs_safe(encode_message([_queued(event)]).encode()).decode()).events
    assert canonical_json(queued.payload) == canonical_json(event.payload)
    assert msgspec.json.decode(bytes(queued.payload)) == msgspec.json.decode(payload)


def _queued(event: EventIn) -> QueuedEvent:
    return QueuedEvent(
        event_id="e", account_id="a", event_type=event.event_type, payload=event.payload, received_at_us=1
    )


@pytest.mark.parametrize(
    ("payload", "field", "status"),
    [
        (b'{"n": 1e400}', "$.payload.n", 400),
        (b'{"a": [1, {"n": -1e309}]}', "$.payload.a[1].n", 400),
        (b'{"n": 1' + b"0" * 100 + b"}", "$.payload.n", 400),
        (b'{"n": 1e-99999}', "$.payload.n", 400),
        (b'{"a": 1, "b": {"c": 1, "c": 2}}', "$.payload.b.c", 400),
        (b'{"odd key": 1, "odd key": 1}', '$.payload["odd key"]', 400),
        (b'{"s": "ok\xff"}', "$.payload.s", 400),
        (b'{"k\xfe": 1}', "$.payload", 400),
        (b'{"d": ' + b"[" * 128 + b"]" * 128 + b"}", "$.payload", 400),
        (b'{"s": "' + "\uffff".encode() * 50_000 + b'"}', "$.payload", 413),  # 150 KB, 300 KB once escaped
    ],
)
def test_the_edge_refuses_what_cannot_be_stored_naming_the_field(payload: bytes, field: str, status: int) -> None:
    service = IngestService(None, max_payload_bytes=256 * 1024)  # type: ignore[arg-type]
    with pytest.raises(AppError) as caught:
        service.parse_event(b'{"event_type": "t", "payload": ' + payload + b"}")
    assert caught.value.status == status
    assert [d.field for d in caught.value.details] == [field]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"event_type": "a\\u0000b", "payload": {}}', "$.event_type"),
        (b'{"event_type": "a\\nb", "payload": {}}', "$.event_type"),
        (b'{"event_type": "a\xc2\x85", "payload": {}}', "$.event_type"),
        (b'{"event_type": "t", "payload": {}, "idempotency_key": "k\\u001f"}', "$.idempotency_key"),
        (b'{"event_type": "t", "event_type": "u", "payload": {}}', "$.event_type"),
        (b'{"event_type": "t\xff", "payload": {}}', "$.event_type"),
    ],
)
def test_event_fields_the_edge_refuses(body: bytes, field: str) -> None:
    service = IngestService(None, max_payload_bytes=256 * 1024)  # type: ignore[arg-type]
    with pytest.raises(AppError) as caught:
        service.parse_event(body)
    assert caught.value.status == 400
    assert [d.field for d in caught.value.details] == [field]


def test_numbers_within_the_bounds_and_deep_payloads_at_the_limit_are_taken() -> None:
    service = IngestService(None, max_payload_bytes=256 * 1024)  # type: ignore[arg-type]
    for payload in (
        b'{"n": 1.7976931348623157e308, "m": -1e308, "t": 1e-9999, "i": ' + b"9" * 100 + b"}",
        b'{"d": ' + b"[" * 127 + b"]" * 127 + b', "s": "' + b"[" * 500 + b'"}',  # brackets in a string do not nest
        b'{"s": "' + "\uffff".encode() * 40_000 + b'"}',  # 240,000 bytes once escaped
    ):
        service.parse_event(b'{"event_type": "t", "payload": ' + payload + b"}")


@settings(max_examples=400, deadline=None)
@given(_raw_payloads)
def test_the_fast_check_never_passes_what_the_exact_pass_refuses(payload: bytes) -> None:
    """The edge's shortcut (msgspec and colon counts) may only say yes when the exact pass
    (the standard library's scanner with hooks) finds no duplicate key and no number out of bounds."""
    body = b'{"event_type": "t", "payload": ' + payload + b"}"
    try:
        body.decode()
        validation._checker.decode(body.decode())
    except (ValueError, RecursionError, validation._Refused):
        exact_ok = False
    else:
        exact_ok = True
    if validation._surely_fine(body):
        assert exact_ok, body
    for duplicated in (b'{"a": 1, "a": 1}', b'{"x": {"k": "a:b", "k": "a:b"}}'):
        assert not validation._surely_fine(b'{"event_type": "t", "payload": ' + duplicated + b"}")


# --- every check costs time linear in the text (issue 14 review, F1 and F2) ----------------
# No clocks: the property measured is the number of function calls (Python and C) a check
# makes, which must not grow with depth, or with the number of floats; what each C call
# does is a single pass.


def _calls(function: Any, *args: Any) -> int:
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    # A collection during the call would count the finalizers it runs (seen once under coverage).
    gc.collect()
    gc.disable()
    sys.setprofile(profile)
    try:
        function(*args)
    finally:
        sys.setprofile(None)
        gc.enable()
    return count


def _nested(depth: int, size: int = 64 * 1024) -> bytes:
    chain = b"[" * (depth - 2) + b"]" * (depth - 2)  # the payload object and "a" hold two levels
    return b'{"a":[' + b",".join([chain] * (size // (len(chain) + 1))) + b"]}"


def _event_text(payload: bytes) -> tuple[str, bytes, bytes]:
    raw = b'{"event_type":"t","payload":' + payload + b"}"
    return raw.decode(), raw, payload


@pytest.mark.parametrize("forced_exact", [False, True])
def test_the_edge_checks_make_as_many_passes_at_any_depth(forced_exact: bool) -> None:
    """Before: the depth check peeled one level per pass, 128 passes over 256 KiB of brackets
    (311 ms an event). ``forced_exact``: a string holding "u003" sends the duplicate check to
    the standard library's scanner, which must not depend on depth either."""
    extra = b',"s":"u003"}' if forced_exact else b"}"
    counts = {}
    for depth in (4, 64, MAX_DEPTH):
        payload = _nested(depth)[:-1] + extra
        assert validation.check_event_text(*_event_text(payload), "$") is None
        counts[depth] = _calls(validation.check_event_text, *_event_text(payload), "$")
    assert counts[MAX_DEPTH] <= counts[4] + 2, counts
    deeper = _nested(MAX_DEPTH + 1)
    assert validation.check_event_text(*_event_text(deeper), "$") is not None


def test_duplicate_and_number_checks_make_calls_per_object_not_per_level_or_number() -> None:
    """The exact duplicate pass calls its hook once per object: a payload of n objects costs
    the same calls whatever their depth, and however many numbers they hold."""

    def payload(depth: int, numbers: int) -> bytes:
        member = b'{"k":[' + b",".join([b"1.5e300"] * numbers) + b"]}"
        return b'{"a":[' + b",".join([b"[" * depth + member + b"]" * depth] * 500) + b'],"s":"u003"}'

    counts = [
        _calls(validation.check_event_text, *_event_text(payload(d, n)), "$") for d, n in ((0, 1), (60, 1), (0, 20))
    ]
    assert counts[1] <= counts[0] + 2, counts
    assert counts[2] <= counts[0] + 2, counts


@pytest.mark.parametrize("number", [b"1.5", b"1e1", b"-0.25", b"123456.78901234", b"2.5E-99"])
def test_the_canonical_form_of_short_floats_costs_no_call_per_float(number: bytes) -> None:
    """Before: a Python hook (a msgspec encode, and for ``1e1`` two decimal conversions) per
    float, 73 to 233 ms for 256 KiB of them. Short floats (at most 15 significant digits, a
    one- or two-digit exponent) have the same value as their double's shortest text, so
    msgspec alone writes them."""
    few, many = ({"a": [number] * n} for n in (10, 5_000))
    counts = [_calls(canonical_json, b'{"a":[' + b",".join(p["a"]) + b"]}") for p in (few, many)]
    assert counts[1] == counts[0], counts


def _canonical_by_the_hook(payload: bytes) -> bytes:
    """The canonical form as the exact path (a hook per float) writes it: the reference."""
    try:
        value = envelope._canonical_decoder.decode(payload)
    except msgspec.ValidationError:
        value = envelope._long_int_decoder.decode(payload.decode())
    return envelope._canonical_encoder.encode(value)


_short_floats = st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole}{fraction}{exponent}",
    st.sampled_from(["", "-"]),
    st.integers(0, 10**8).map(str),
    st.just("") | st.text("0123456789", min_size=1, max_size=9).map(lambda d: "." + d),
    st.just("") | st.integers(-99, 99).map(lambda e: f"e{e}") | st.sampled_from(["E+5", "e-07", "e00"]),
).filter(lambda t: "." in t or "e" in t.lower())


@settings(max_examples=400, deadline=None)
@given(st.lists(_short_floats | _number_texts | _raw_numbers, min_size=1, max_size=6), _raw_payloads)
def test_the_fast_canonical_path_writes_what_the_exact_path_writes(numbers: list[str], payload: bytes) -> None:
    for candidate in (("[" + ",".join(numbers) + "]").encode(), payload):
        try:
            expected = _canonical_by_the_hook(candidate)
        except (ValueError, RecursionError):
            continue  # not JSON text (the generator splices oddities): canonical_json refuses it too
        assert canonical_json(candidate) == expected, candidate


def _exact_problem(body: bytes) -> bool:
    """The edge's rules, one number and one object at a time (the reference for the fast checks)."""

    def number(text: str) -> None:
        if validation.number_problem(text) is not None:
            raise ValueError

    def members(pairs: list[tuple[str, Any]]) -> None:
        if len({k for k, _ in pairs}) != len(pairs):
            raise ValueError

    try:
        json.JSONDecoder(object_pairs_hook=members, parse_float=number, parse_int=number).decode(body.decode())
    except (ValueError, RecursionError):
        return True
    return False


@settings(max_examples=400, deadline=None)
@given(_raw_payloads)
def test_the_linear_checks_refuse_exactly_what_the_per_value_rules_refuse(payload: bytes) -> None:
    body = b'{"event_type": "t", "payload": ' + payload + b"}"
    try:
        text = body.decode()
        msgspec.json.decode(body)
    except (ValueError, RecursionError):
        return  # not for these checks: msgspec or the UTF-8 check refuses it first
    if validation.too_deep(envelope.without_strings(payload)):
        return
    refused = validation.check_event_text(text, body, payload, "$") is not None
    assert refused == _exact_problem(body), body


async def test_a_large_batch_is_checked_in_turns_that_let_other_requests_run() -> None:
    """Before: a 5 MiB batch was checked in one go, 5.5 s of event loop for the worst one;
    now the loop comes back between events every ``YIELD_EVERY_BYTES``."""
    service = IngestService(None, max_payload_bytes=256 * 1024)  # type: ignore[arg-type]
    item = msgspec.Raw(b'{"event_type":"t","payload":' + _nested(MAX_DEPTH, 200 * 1024) + b"}")
    items = [item, msgspec.Raw(b'{"event_type":"t","payload":{"a":1,"a":2}}')] * 10
    turns = 0

    async def bystander() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    running = asyncio.create_task(bystander())
    await asyncio.sleep(0)
    turns = 0
    parsed = await service.parse_batch(items)
    running.cancel()
    assert [isinstance(p, EventIn) for p in parsed] == [True, False] * 10
    assert len(item) > YIELD_EVERY_BYTES
    assert turns >= 10, turns  # at least once after each large event (before: none until the end)


@settings(max_examples=50)
@given(st.lists(st.text(max_size=20), min_size=1, max_size=5))
def test_the_edge_frame_is_the_message_msgspec_writes(texts: list[str]) -> None:
    """The edge frames events it encoded once; the bytes are those of a QueueMessage (SQS's two
    refused characters aside), so there is one message format, whoever writes it."""
    events = [_queued_text(text) for text in texts]
    framed = encode_message(events).encode()
    assert framed == sqs_safe(msgspec.json.encode(QueueMessage(events=events)))
    assert decode_message(framed).events == [
        msgspec.structs.replace(e, payload=msgspec.Raw(sqs_safe(bytes(e.payload)))) for e in events
    ]


def _queued_text(text: str) -> QueuedEvent:
    return QueuedEvent(
        event_id="01ARZ3NDEKTSV4RRFFQ69G5FAV",
        account_id="acc_1",
        event_type="t",
        payload=msgspec.Raw(msgspec.json.encode({"s": text})),
        received_at_us=1,
    )
