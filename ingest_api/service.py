"""What POST /events and POST /events/batch do, free of HTTP: validate, stamp, enqueue."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import msgspec

from ingest_api.batcher import Overloaded, SqsBatcher
from ingest_api.schemas import MAX_IDEMPOTENCY_KEY_CHARS, EventIn
from ingest_api.validation import CONTROL_CHARACTERS, check_event_text, locate
from shared.contract.envelope import QueuedEvent, encode_event, sqs_safe
from shared.contract.ids import new_event_id, rfc3339
from shared.errors import AppError, ErrorDetail, PayloadTooLarge, ServiceUnavailable, ValidationError
from shared.keys.model import KeyRecord
from shared.web.decoding import UNDECODABLE, detail_from_msgspec, undecodable

_event_decoder = msgspec.json.Decoder(EventIn)
# Bytes of a batch checked between two turns given back to the event loop (a few ms of work).
YIELD_EVERY_BYTES = 64 * 1024
# A turn of batch checking that took longer than this is followed by as long a rest.
PACE_AFTER_S = 0.005
# An event's bytes besides its payload, at most: the type and the key (255 characters each,
# six bytes apiece at worst once escaped), ids, timestamps and field names.
_FIELDS_ROOM = 8 * 1024


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    event_id: str
    received_at: str


class IngestService:
    def __init__(self, batcher: SqsBatcher, *, max_payload_bytes: int, max_message_bytes: int | None = None) -> None:
        """``max_message_bytes``: what one queue message may hold (the queue's
        MaximumMessageSize, less room for SQS's accounting); a payload that could not fit
        one message with its event's other fields is refused with 413 like any oversize one."""
        self._batcher = batcher
        self._turns = asyncio.Lock()
        fits = max_payload_bytes if max_message_bytes is None else max_message_bytes - _FIELDS_ROOM
        self._max_payload = min(max_payload_bytes, fits)

    def parse_event(self, raw: bytes | msgspec.Raw, prefix: str = "$", header_key: str | None = None) -> EventIn:
        """Decode and check one event (the body, or one item of a batch); raises a
        field-level ``AppError``.

        Whatever passes can be queued, stored and read back (ingest_api/validation.py).
        Every step is linear in ``raw``, and the costlier ones (UTF-8 of the payload, the
        checks of its content) run only once its size is known to fit.
        """
        raw = bytes(raw)
        try:
            event = _event_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            # Invalid UTF-8 in a field msgspec reads (it does not say which): the slow pass
            # finds it, when the text is small enough for that pass to be cheap.
            utf8 = "UTF-8" in str(exc) and len(raw) <= self._max_payload + _FIELDS_ROOM
            detail = locate(raw, prefix) if utf8 else detail_from_msgspec(exc, prefix)
            raise ValidationError(f"Invalid event: {detail.message}", [detail]) from None
        except UNDECODABLE as exc:
            detail = undecodable(exc, prefix)
            raise ValidationError(f"Invalid event: {detail.message}", [detail]) from None
        payload = bytes(event.payload)
        if not payload.startswith(b"{"):
            field = f"{prefix}.payload"
            raise ValidationError("payload must be a JSON object.", [ErrorDetail(field, "Expected `object`.")])
        self._check_size(payload, prefix)
        try:
            text = raw.decode()  # UTF-8 anywhere: msgspec does not look inside the payload's bytes
        except UnicodeDecodeError:
            detail = locate(raw, prefix)
            raise ValidationError(f"Invalid event: {detail.message}", [detail]) from None
        problem = check_event_text(text, raw, payload, prefix)
        if problem is not None:
            raise ValidationError(f"Invalid event: {problem.message}", [problem])
        _refuse_control_characters(event.event_type, f"{prefix}.event_type")
        if event.idempotency_key is not None:
            _refuse_control_characters(event.idempotency_key, f"{prefix}.idempotency_key")
        if header_key is not None:
            if not 1 <= len(header_key) <= MAX_IDEMPOTENCY_KEY_CHARS:
                message = f"Must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters."
                raise ValidationError(
                    f"Invalid Idempotency-Key header: {message}", [ErrorDetail("Idempotency-Key", message)]
                )
            _refuse_control_characters(header_key, "Idempotency-Key")
            if event.idempotency_key not in (None, header_key):
                detail = ErrorDetail(f"{prefix}.idempotency_key", "Differs from the Idempotency-Key header.")
                raise ValidationError("Two different idempotency keys were sent.", [detail])
            event = msgspec.structs.replace(event, idempotency_key=header_key)
        return event

    async def parse_batch(self, items: list[msgspec.Raw]) -> list[EventIn | AppError]:
        """``parse_event`` for each item of a batch, in order, in turns of about
        ``YIELD_EVERY_BYTES``. One batch at a time checks (``_turns``), and after a costly
        turn (over ``PACE_AFTER_S``) it rests as long as the turn took: checking takes at
        most half of the event loop, and another request, which needs a dozen or more turns
        of the loop (body, queue, SQS call, answer), goes through while it rests instead of
        waiting behind one turn of every batch at each of its steps."""
        parsed: list[EventIn | AppError] = []
        index = 0
        while index < len(items):
            async with self._turns:
                started = time.perf_counter()
                checked = 0
                while index < len(items) and checked < YIELD_EVERY_BYTES:
                    try:
                        parsed.append(self.parse_event(items[index], prefix=f"$.events[{index}]"))
                    except AppError as exc:
                        parsed.append(exc)
                    checked += len(items[index])
                    index += 1
                took = time.perf_counter() - started
                await asyncio.sleep(took if took > PACE_AFTER_S and index < len(items) else 0)
        return parsed

    def _check_size(self, payload: bytes, prefix: str) -> None:
        """413 unless the payload fits as it travels and is stored: measured after the
        escapes SQS needs (``sqs_safe``: U+FFFE and U+FFFF count six bytes each)."""
        size = len(sqs_safe(payload))
        if size > self._max_payload:
            field = f"{prefix}.payload"
            message = f"payload is {size} bytes as stored; the limit is {self._max_payload}."
            raise PayloadTooLarge(message, [ErrorDetail(field, message)])

    async def accept(self, key: KeyRecord, events: list[EventIn], request_id: str) -> list[AcceptedEvent | AppError]:
        """Enqueue events; per event, its id once SQS has it, or why it was not taken."""
        received_us = time.time_ns() // 1000
        received_ms = received_us // 1000
        queued = [
            QueuedEvent(
                event_id=new_event_id(received_ms),
                account_id=key.account_id,
                event_type=e.event_type,
                payload=e.payload,
                received_at_us=received_us,
                idempotency_key=e.idempotency_key,
                request_id=request_id,
            )
            for e in events
        ]
        try:
            pending = self._batcher.submit([encode_event(q) for q in queued], owner=key.account_id)
        except Overloaded:
            raise ServiceUnavailable("Too many events waiting for the queue; retry shortly.") from None
        stored = await pending  # bounded: every SQS call has a deadline (SqsBatcher)
        received_at = rfc3339(received_us)
        if all(stored):
            return [AcceptedEvent(q.event_id, received_at) for q in queued]
        unavailable = ServiceUnavailable("The queue did not take this event in time; retry.")
        return [
            AcceptedEvent(q.event_id, received_at) if ok else unavailable for q, ok in zip(queued, stored, strict=True)
        ]


def _refuse_control_characters(value: str, field: str) -> None:
    if CONTROL_CHARACTERS.search(value):
        message = "Must not contain control characters (U+0000 to U+001F, U+007F to U+009F)."
        raise ValidationError(f"Invalid {field}: {message}", [ErrorDetail(field, message)])
