"""The API keys table: create, read, use, change, revoke (on moto and DynamoDB Local)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from botocore.exceptions import ClientError

from shared.aws.clients import open_clients
from shared.errors import AlreadyExists, KeyNotFound
from shared.keys.admin import create_key, new_account_id
from shared.keys.model import KeyStatus, Scope, check_secret, parse_key
from shared.keys.store import DynamoKeyStore
from tests.conftest import Stack


@pytest.fixture
async def store(data_stack: Stack) -> AsyncIterator[DynamoKeyStore]:
    async with open_clients(data_stack.settings) as clients:
        yield DynamoKeyStore(clients.dynamodb, data_stack.settings.keys_table)


async def _new_key(store: DynamoKeyStore, account: str) -> tuple[str, str]:
    key, record = await create_key(
        store, account_id=account, scopes=frozenset({Scope.INGEST}), rate_limit_per_minute=60, bcrypt_rounds=4
    )
    return key, record.key_id


async def test_a_created_key_reads_back_and_checks_against_its_secret(store: DynamoKeyStore) -> None:
    account = new_account_id()
    key, key_id = await _new_key(store, account)

    record = await store.get(key_id)

    assert (record.account_id, record.scopes, record.status) == (account, frozenset({Scope.INGEST}), KeyStatus.ACTIVE)
    parsed = parse_key(key)
    assert parsed is not None
    assert check_secret(parsed.secret, record.secret_hash)
    with pytest.raises(AlreadyExists):
        await store.create(record)
    with pytest.raises(KeyNotFound):
        await store.get("k" + key_id[1:] + "x")


async def test_a_key_is_touched_changed_and_revoked_for_good(store: DynamoKeyStore) -> None:
    account = new_account_id()
    _, key_id = await _new_key(store, account)

    await store.touch(key_id, "2026-11-29T12:00:00+00:00")
    changed = await store.update(key_id, scopes=frozenset(Scope), rate_limit_per_minute=120, name="renamed")
    revoked = await store.update(key_id, status=KeyStatus.REVOKED)

    assert (await store.get(key_id)).last_used_at == "2026-11-29T12:00:00+00:00"
    assert (changed.scopes, changed.rate_limit_per_minute, changed.name) == (frozenset(Scope), 120, "renamed")
    assert revoked.status is KeyStatus.REVOKED
    with pytest.raises(KeyNotFound):  # a revoked key stays revoked
        await store.update(key_id, status=KeyStatus.ACTIVE)
    listed = [r async for r in store.scan() if r.account_id == account]
    assert [msgspec.structs.replace(r, last_used_at=None) for r in listed] == [
        msgspec.structs.replace(revoked, last_used_at=None)
    ]


async def test_touching_an_unknown_key_is_refused(store: DynamoKeyStore) -> None:
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        await store.touch("kNoSuchKey", "2026-11-29T12:00:00+00:00")
