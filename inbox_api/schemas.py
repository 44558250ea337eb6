"""Response and request bodies of the inbox API."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import msgspec

from inbox_api.leases import Claimed
from inbox_api.store import StoredEvent
from inbox_api.tokens import MAX_TOKEN_LENGTH
from shared.contract.ids import rfc3339
from shared.storage.consumers import (
    DEFAULT_MAX_DELIVERIES,
    MAX_DELIVERIES_LIMIT,
    MAX_EVENT_TYPE_CHARS,
    MAX_EVENT_TYPES,
    MAX_NAME_CHARS,
    NAME_PATTERN,
)
from shared.storage.leases import HeldItem

MAX_ACK_IDS = 100
MAX_CLAIM = 200
MAX_LEASE_S = 43200
MAX_WAIT_S = 20
# A consumer's name, as a schema states it (``consumers.NAME_PATTERN``, anchored).
CONSUMER_NAME = f"^{NAME_PATTERN.pattern}$"
# ``now``, ``earliest`` or an RFC 3339 time with its offset; a time that does not exist
# (month 13) matches, and is refused after decoding.
RFC3339_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
START_PATTERN = f"^(now|earliest|{RFC3339_TIME})$"


class EventOut(msgspec.Struct, frozen=True):
    event_id: str
    event_type: str
    payload: Annotated[msgspec.Raw, msgspec.Meta(extra_json_schema={"type": "object"})]
    received_at: str
    delivered: bool
    delivered_at: str | None


class InboxPage(msgspec.Struct, frozen=True):
    events: list[EventOut]
    next_cursor: str | None
    has_more: bool
    total_undelivered: int


LeaseToken = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOKEN_LENGTH)]
LeaseTokens = Annotated[list[LeaseToken], msgspec.Meta(min_length=1, max_length=MAX_ACK_IDS)]


def _whole(low: int, high: int) -> Any:
    """An integer from ``low`` to ``high``, written as JSON writes it: ``30`` or ``30.0`` (JSON
    Schema's integer takes both; a JavaScript client may send either). Decoded as a float,
    then held to a whole number and made an int by the Struct (``_integers``); the Struct's
    ``whole_numbers`` name them, and the document says integer (shared/web/openapi.py)."""
    return Annotated[float, msgspec.Meta(ge=low, le=high)]


def _integers(body: msgspec.Struct, *names: str) -> None:
    """The whole-number fields of a body as ints; a fraction is refused naming its field."""
    for name in names:
        value = getattr(body, name)
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"Expected an integer - at `$.{name}`")
            msgspec.structs.force_setattr(body, name, int(value))


LeaseSeconds = _whole(1, MAX_LEASE_S)


class AckIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """POST /inbox/ack: event ids, lease tokens, or both (1 to 100 of each)."""

    event_ids: Annotated[list[str], msgspec.Meta(min_length=1, max_length=MAX_ACK_IDS)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    lease_tokens: LeaseTokens | msgspec.UnsetType = msgspec.UNSET
    # What the schema adds (shared/web/openapi.py): one of the two, at least.
    json_schema_extra: ClassVar[dict[str, Any]] = {"minProperties": 1}


class TokenRefused(msgspec.Struct, frozen=True):
    lease_token: str
    reason: str  # invalid, other_consumer, lease_lost, lease_ended, not_found


class AckOut(msgspec.Struct, frozen=True):
    acknowledged: list[str]
    not_found: list[str]
    # Lease tokens not honoured, and why; present when the call gave lease tokens (the answer
    # to event ids alone is as it was before leases).
    refused: list[TokenRefused] | msgspec.UnsetType = msgspec.UNSET


class ClaimIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    limit: _whole(1, MAX_CLAIM) = 10  # type: ignore[valid-type]  # an int once decoded (_integers)
    lease_s: LeaseSeconds = 30  # type: ignore[valid-type]
    wait_s: _whole(0, MAX_WAIT_S) = 0  # type: ignore[valid-type]

    whole_numbers: ClassVar[tuple[str, ...]] = ("limit", "lease_s", "wait_s")

    def __post_init__(self) -> None:
        _integers(self, *self.whole_numbers)


class ClaimedEventOut(EventOut, frozen=True):
    deliveries: int  # how often it was claimed, this claim included
    lease_token: str
    lease_expires_at: str


class ClaimOut(msgspec.Struct, frozen=True):
    events: list[ClaimedEventOut]
    total_undelivered: int
    in_flight: int
    failed: int


class NackIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    lease_tokens: LeaseTokens
    delay_s: _whole(0, MAX_LEASE_S) = 0  # type: ignore[valid-type]  # an int once decoded (_integers)

    whole_numbers: ClassVar[tuple[str, ...]] = ("delay_s",)

    def __post_init__(self) -> None:
        _integers(self, *self.whole_numbers)


class NackOut(msgspec.Struct, frozen=True):
    nacked: list[str]  # the events given back
    refused: list[TokenRefused]


class ExtendIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    lease_tokens: LeaseTokens
    lease_s: LeaseSeconds = 30  # type: ignore[valid-type]  # an int once decoded (_integers)

    whole_numbers: ClassVar[tuple[str, ...]] = ("lease_s",)

    def __post_init__(self) -> None:
        _integers(self, *self.whole_numbers)


class ExtendOut(msgspec.Struct, frozen=True):
    extended: list[str]  # the events whose lease now ends at lease_expires_at
    lease_expires_at: str
    refused: list[TokenRefused]


class FailedEventOut(EventOut, frozen=True):
    deliveries: int


class FailedPage(msgspec.Struct, frozen=True):
    events: list[FailedEventOut]
    next_cursor: str | None
    has_more: bool
    total_failed: int


# An exact type or a prefix written ``prefix.*`` (``.*`` alone is refused after decoding).
EventTypePattern = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_TYPE_CHARS)]
EventTypes = Annotated[list[EventTypePattern], msgspec.Meta(min_length=1, max_length=MAX_EVENT_TYPES)]


MaxDeliveries = _whole(1, MAX_DELIVERIES_LIMIT)


class ConsumerIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """POST /consumers. ``event_types`` left out or null: every type."""

    name: Annotated[str, msgspec.Meta(pattern=CONSUMER_NAME, max_length=MAX_NAME_CHARS)]
    event_types: EventTypes | None = None
    start: Annotated[str, msgspec.Meta(pattern=START_PATTERN)] = "now"
    max_deliveries: MaxDeliveries = DEFAULT_MAX_DELIVERIES  # type: ignore[valid-type]  # an int once decoded

    whole_numbers: ClassVar[tuple[str, ...]] = ("max_deliveries",)

    def __post_init__(self) -> None:
        _integers(self, *self.whole_numbers)


class ConsumerPatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """PATCH /consumers/{name}: the new filter (null: every type), its max_deliveries, or both;
    what is left out stays as it is."""

    event_types: EventTypes | msgspec.UnsetType | None = msgspec.UNSET
    max_deliveries: MaxDeliveries | msgspec.UnsetType = msgspec.UNSET  # type: ignore[valid-type]
    json_schema_extra: ClassVar[dict[str, Any]] = {"minProperties": 1}  # one of the two, at least
    whole_numbers: ClassVar[tuple[str, ...]] = ("max_deliveries",)

    def __post_init__(self) -> None:
        _integers(self, *self.whole_numbers)


class Backfill(msgspec.Struct, frozen=True):
    done: bool
    events_walked: int
    events_copied: int


class ConsumerOut(msgspec.Struct, frozen=True):
    name: str
    event_types: list[str] | None
    start: str  # RFC 3339, or "earliest"
    created_at: str | None  # None for default
    total_undelivered: int
    backfill: Backfill | None  # None for default
    in_flight: int = 0
    failed: int = 0
    max_deliveries: int = DEFAULT_MAX_DELIVERIES


class ConsumerList(msgspec.Struct, frozen=True):
    consumers: list[ConsumerOut]


def event_out(event: StoredEvent) -> EventOut:
    return EventOut(*_event_fields(event))


def claimed_out(claimed: Claimed, token: str) -> ClaimedEventOut:
    return ClaimedEventOut(*_event_fields(claimed.event), claimed.deliveries, token, rfc3339(claimed.until_us))


def failed_out(held: HeldItem) -> FailedEventOut:
    return FailedEventOut(*_event_fields(held.event()), held.times)


def _event_fields(event: StoredEvent) -> tuple[str, str, msgspec.Raw, str, bool, str | None]:
    """``EventOut``'s fields, in order: what every answer says of an event."""
    delivered_at = rfc3339(event.delivered_at_us) if event.delivered_at_us is not None else None
    return event.event_id, event.event_type, event.payload, rfc3339(event.received_at_us), event.delivered, delivered_at


# Examples of each body, for the OpenAPI document (the route declarations in inbox_api/app.py).
EVENT_ID_EXAMPLE = "01M8JTAJRHMRRAVC3GCG0R0A61"
EVENT_EXAMPLE = {
    "event_id": EVENT_ID_EXAMPLE,
    "event_type": "order.created",
    "payload": {"order_id": 42},
    "received_at": "2026-11-29T04:51:59.377757Z",
    "delivered": False,
    "delivered_at": None,
}
PAGE_EXAMPLE = {"events": [EVENT_EXAMPLE], "next_cursor": None, "has_more": False, "total_undelivered": 1}
ACK_EXAMPLE = {"event_ids": [EVENT_ID_EXAMPLE]}
ACK_OUT_EXAMPLE = {"acknowledged": [EVENT_ID_EXAMPLE], "not_found": [], "refused": []}
TOKEN_EXAMPLE = "kpnAAQ3MDFNOEpUQUpSSE1SUkFWQzNHQ0cwUjBBNjGsWnE4dnRIbmNyUTJm.0Xr6m1pVbN2F1w0Yx3tW2g"  # noqa: S105 - the document's example, signed by no secret
CLAIM_EXAMPLE = {"limit": 10, "lease_s": 30, "wait_s": 20}
CLAIMED_EXAMPLE = {
    "events": [
        {
            **EVENT_EXAMPLE,
            "deliveries": 1,
            "lease_token": TOKEN_EXAMPLE,
            "lease_expires_at": "2026-11-29T04:52:29.377757Z",
        }
    ],
    "total_undelivered": 4,
    "in_flight": 1,
    "failed": 0,
}
NACK_EXAMPLE = {"lease_tokens": [TOKEN_EXAMPLE], "delay_s": 60}
NACK_OUT_EXAMPLE = {"nacked": [EVENT_ID_EXAMPLE], "refused": []}
EXTEND_EXAMPLE = {"lease_tokens": [TOKEN_EXAMPLE], "lease_s": 60}
EXTEND_OUT_EXAMPLE = {"extended": [EVENT_ID_EXAMPLE], "lease_expires_at": "2026-11-29T04:53:29.377757Z", "refused": []}
FAILED_PAGE_EXAMPLE = {
    "events": [{**EVENT_EXAMPLE, "deliveries": 10}],
    "next_cursor": None,
    "has_more": False,
    "total_failed": 1,
}
CONSUMER_IN_EXAMPLE = {"name": "zap-123", "event_types": ["order.*", "invoice.paid"], "start": "now"}
CONSUMER_PATCH_EXAMPLE = {"event_types": ["order.*"]}
CONSUMER_EXAMPLE = {
    "name": "zap-123",
    "event_types": ["order.*", "invoice.paid"],
    "start": "2026-11-29T04:51:59.377757Z",
    "created_at": "2026-11-29T04:51:59.377757Z",
    "total_undelivered": 3,
    "backfill": {"done": True, "events_walked": 12, "events_copied": 3},
    "in_flight": 1,
    "failed": 0,
    "max_deliveries": 10,
}
DEFAULT_CONSUMER_EXAMPLE = {
    "name": "default",
    "event_types": None,
    "start": "earliest",
    "created_at": None,
    "total_undelivered": 5,
    "backfill": None,
    "in_flight": 0,
    "failed": 0,
    "max_deliveries": 10,
}
CONSUMER_LIST_EXAMPLE = {"consumers": [DEFAULT_CONSUMER_EXAMPLE, CONSUMER_EXAMPLE]}
