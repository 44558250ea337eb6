"""API keys: the key string format, the stored record, and how secrets are hashed.

A key reads ``trg_<key id: 16 hex>_<secret: 43 url-safe chars>``. The key id makes the
lookup one read by id; only a bcrypt hash of the secret is ever stored.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass

import bcrypt
import msgspec

KEY_PREFIX = "trg_"
_KEY_ID_HEX = 16
_SECRET_CHARS = 43  # secrets.token_urlsafe(32)
_HEX = frozenset("0123456789abcdef")
# token_urlsafe's alphabet. A secret of 43 of these is 43 bytes, within bcrypt's 72-byte
# input limit: bcrypt >= 5 raises on longer input (which would be a 500), older versions
# silently truncate it. So the shape is checked here, before any lookup or bcrypt.
_SECRET_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
BCRYPT_MAX_BYTES = 72


class Scope(enum.StrEnum):
    INGEST = "ingest"
    INBOX = "inbox"


class KeyStatus(enum.StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"  # suspended; can be re-activated
    REVOKED = "revoked"  # final


class KeyRecord(msgspec.Struct, kw_only=True, frozen=True):
    key_id: str
    account_id: str
    secret_hash: str
    scopes: frozenset[Scope]
    status: KeyStatus
    rate_limit_per_minute: int
    name: str = ""
    created_at: str = ""
    last_used_at: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedKey:
    key_id: str
    secret: str


def parse_key(value: str) -> ParsedKey | None:
    """Split a presented key into id and secret; None when it cannot be one of ours."""
    if len(value) != len(KEY_PREFIX) + _KEY_ID_HEX + 1 + _SECRET_CHARS:
        return None
    if not value.startswith(KEY_PREFIX):
        return None
    key_id = value[len(KEY_PREFIX) : len(KEY_PREFIX) + _KEY_ID_HEX]
    separator = value[len(KEY_PREFIX) + _KEY_ID_HEX]
    secret = value[len(KEY_PREFIX) + _KEY_ID_HEX + 1 :]
    if separator != "_" or not _HEX.issuperset(key_id) or not _SECRET_ALPHABET.issuperset(secret):
        return None
    return ParsedKey(key_id=key_id, secret=secret)


def generate_key() -> tuple[str, ParsedKey]:
    """A new key string (shown once) and its parts."""
    parts = ParsedKey(key_id=secrets.token_hex(_KEY_ID_HEX // 2), secret=secrets.token_urlsafe(32))
    return f"{KEY_PREFIX}{parts.key_id}_{parts.secret}", parts


def hash_secret(secret: str, rounds: int) -> str:
    return bcrypt.hashpw(secret.encode(), bcrypt.gensalt(rounds)).decode()


def check_secret(secret: str, secret_hash: str) -> bool:
    """Whether ``secret`` matches; False (never an exception) for input bcrypt refuses."""
    encoded = secret.encode()
    if len(encoded) > BCRYPT_MAX_BYTES:  # parse_key never lets one through; kept as a guard
        return False
    return bcrypt.checkpw(encoded, secret_hash.encode())
