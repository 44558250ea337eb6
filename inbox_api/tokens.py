"""Lease tokens: opaque, tamper-evident, bound to a consumer partition, an event and a lease.

A token is ``base64url(state).base64url(hmac)``, like a cursor (inbox_api/cursor.py) but
under a key of its own, derived from the same secret with another label: a cursor is never
a token, nor a token a cursor. The state names the partition (account, consumer and its
generation: a token of a deleted and re-created consumer is another consumer's), the event
id and the lease id. Nothing in a token is trusted until its HMAC checks; what it claims is
then checked against the stored event (``lease_id``), so a genuine token of an ended lease
acknowledges nothing that was claimed again.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac

import msgspec

from shared.contract.ids import is_event_id

MAX_TOKEN_LENGTH = 512
_MAC_BYTES = 16


class TokenRefusal(enum.StrEnum):
    INVALID = "invalid"  # not a token this service issued, or altered
    OTHER_CONSUMER = "other_consumer"  # issued for another consumer (or account)


class LeaseState(msgspec.Struct, array_like=True, frozen=True):
    partition: str
    event_id: str
    lease_id: str


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(LeaseState)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LeaseTokens:
    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"triggers-lease-token\x00" + secret.encode()).digest()

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, partition: str, event_id: str, lease_id: str) -> str:
        data = _encoder.encode(LeaseState(partition, event_id, lease_id))
        return f"{_b64(data)}.{_b64(self._mac(data))}"

    def decode(self, token: str, partition: str) -> LeaseState | TokenRefusal:
        """The lease a genuine token of this partition names, or why it is refused."""
        state = self._genuine(token)
        if state is None:
            return TokenRefusal.INVALID
        return state if state.partition == partition else TokenRefusal.OTHER_CONSUMER

    def _genuine(self, token: str) -> LeaseState | None:
        """What a token this service signed says; None for anything else."""
        if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
            return None
        data_part, mac_part = token.split(".")
        try:
            data, mac = _unb64(data_part), _unb64(mac_part)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(mac, self._mac(data)):
            return None
        try:
            state = _decoder.decode(data)
        except msgspec.DecodeError:  # signed by us, yet unreadable: another release's layout
            return None
        return state if is_event_id(state.event_id) else None
