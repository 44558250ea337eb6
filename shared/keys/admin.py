"""Key management used by the CLI (and by tests and ``triggers up``)."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from shared.keys.model import KeyRecord, KeyStatus, Scope, generate_key, hash_secret
from shared.keys.store import KeyStore

# Letters, digits, '_' and '-': never a separator of shared.storage.layout ('|', '#'). An
# account "a|b" would otherwise share index keys with account "a" (type "b|x" against "x").
ACCOUNT_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def new_account_id() -> str:
    return "acc_" + secrets.token_hex(8)


def check_account_id(account_id: str) -> str:
    if not ACCOUNT_ID_PATTERN.fullmatch(account_id):
        raise ValueError("an account id is 1 to 64 letters, digits, '_' or '-'")
    return account_id


async def create_key(
    store: KeyStore,
    *,
    account_id: str,
    scopes: frozenset[Scope],
    rate_limit_per_minute: int,
    bcrypt_rounds: int,
    name: str = "",
) -> tuple[str, KeyRecord]:
    """Create and store a key; the key string is returned once and never stored."""
    key, parts = generate_key()
    record = KeyRecord(
        key_id=parts.key_id,
        account_id=check_account_id(account_id),
        secret_hash=hash_secret(parts.secret, bcrypt_rounds),
        scopes=scopes,
        status=KeyStatus.ACTIVE,
        rate_limit_per_minute=rate_limit_per_minute,
        name=name,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    await store.create(record)
    return key, record
