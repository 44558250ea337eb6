"""Queue messages evolve by adding fields; request errors name their field."""

from __future__ import annotations

import msgspec
import pytest

from ingest_api.schemas import EventIn
from shared.decoding import decode_json
from shared.envelope import QueuedEvent, decode_message, encode_message
from shared.errors import ValidationError


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
