"""Opaque, tamper-evident inbox cursors.

A cursor is ``base64url(state).base64url(hmac)``. The state names the account, the filter
and the order it was made for, and the inbox position of the last event of its page; the
HMAC (secret shared by all inbox instances) makes any change detectable. A cursor used by
another account, with another filter or order, altered, truncated or malformed is refused
with 400.

Cursors of 0.2 held the last event id instead (``position`` false). They are still accepted
and start the pass again (from the oldest position for ``asc``, the newest for ``desc``):
an event id tells when an event was received, not where it was stored, so no position
after it is safe to continue from. The consumer gets again what it had, and misses
nothing (docs/api.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import msgspec

from shared.contract.ids import is_event_id
from shared.errors import InvalidCursor
from shared.storage.layout import is_position

MAX_CURSOR_LENGTH = 2048
_MAC_BYTES = 16


class CursorState(msgspec.Struct, array_like=True, frozen=True):
    account_id: str
    event_type: str | None
    order: str
    after: str  # an inbox position; a 0.2 cursor: an event id
    # Added in 0.3 (array_like: a 0.2 cursor decodes with the default).
    position: bool = False
    # Added in 0.5: which list it pages, the inbox ("") or the failed list ("failed").
    listing: str = ""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CursorState)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"triggers-inbox-cursor\x00" + secret.encode()).digest()

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, state: CursorState) -> str:
        data = _encoder.encode(msgspec.structs.replace(state, position=True))
        return f"{_b64(data)}.{_b64(self._mac(data))}"

    def decode(self, token: str, expected: CursorState) -> str | None:
        """The ``after`` position of a genuine cursor made for exactly this query.

        None for a 0.2 cursor: the page starts from the beginning of the pass.
        """
        if len(token) > MAX_CURSOR_LENGTH or token.count(".") != 1:
            raise InvalidCursor("The cursor is malformed; start again without one.")
        data_part, mac_part = token.split(".")
        try:
            data, mac = _unb64(data_part), _unb64(mac_part)
        except (binascii.Error, ValueError):
            raise InvalidCursor("The cursor is malformed; start again without one.") from None
        if not hmac.compare_digest(mac, self._mac(data)):
            raise InvalidCursor("The cursor is not valid; start again without one.")
        try:
            state = _decoder.decode(data)
        except msgspec.DecodeError:  # signed by us, yet unreadable: another release's layout
            raise InvalidCursor("The cursor is not valid; start again without one.") from None
        if (state.account_id, state.event_type, state.order, state.listing) != (
            expected.account_id,
            expected.event_type,
            expected.order,
            expected.listing,
        ):
            raise InvalidCursor("The cursor belongs to another query (filter or order changed).")
        if state.position:
            if not is_position(state.after):  # signed by us, yet not a position we hand out
                raise InvalidCursor("The cursor is not valid; start again without one.")
            return state.after
        if not is_event_id(state.after):  # signed by us, yet not what 0.2 wrote
            raise InvalidCursor("The cursor is not valid; start again without one.")
        return None  # a 0.2 cursor: start the pass again
