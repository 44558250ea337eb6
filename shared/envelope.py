"""The queue message: what the ingest edge puts on SQS and the writer takes off it.

Messages outlive deploys, so the format evolves only by adding fields with defaults:
a newer writer reads an older edge's messages, and an older writer ignores fields it does
not know. One SQS message carries one or more events (``events``), which cuts SQS requests
per event when the edge packs several.
"""

from __future__ import annotations

import hashlib
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
_canonical_encoder = msgspec.json.Encoder(order="sorted")
_message_decoder = msgspec.json.Decoder(QueueMessage)
_any_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def canonical_json(payload: msgspec.Raw) -> bytes:
    return _canonical_encoder.encode(_any_decoder.decode(payload))


def encode_message(events: list[QueuedEvent]) -> str:
    # SQS bodies are text; msgspec emits UTF-8 JSON, which SQS accepts as is.
    return _encoder.encode(QueueMessage(events=events)).decode()


def decode_message(body: str | bytes) -> QueueMessage:
    """Decode a queue message; raises ``msgspec.DecodeError`` (incl. validation) if unusable."""
    message = _message_decoder.decode(body)
    if message.v > ENVELOPE_VERSION:
        # A newer major format that this writer cannot interpret safely.
        raise msgspec.ValidationError(f"unsupported envelope version {message.v}")
    return message
