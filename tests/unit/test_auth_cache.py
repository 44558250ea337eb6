"""The verified-key cache: bcrypt once, share concurrent checks, notice changes after the TTL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from shared.errors import Forbidden, KeyNotFound, RateLimited, Unauthenticated
from shared.keys import authenticator as auth_module
from shared.keys.authenticator import Authenticator
from shared.keys.model import KeyRecord, KeyStatus, Scope, check_secret, generate_key, hash_secret


class FakeStore:
    """In-memory key store (pure-logic unit tests only)."""

    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.reads = 0

    async def get(self, key_id: str) -> KeyRecord:
        self.reads += 1
        await asyncio.sleep(0)
        if key_id not in self.records:
            raise KeyNotFound(key_id)
        return self.records[key_id]

    async def create(self, record: KeyRecord) -> None:
        self.records[record.key_id] = record

    async def touch(self, key_id: str, used_at: str) -> None:
        return None

    async def update(self, key_id: str, **changes: Any) -> KeyRecord:
        self.records[key_id] = msgspec.structs.replace(self.records[key_id], **changes)
        return self.records[key_id]

    def scan(self) -> AsyncIterator[KeyRecord]:
        raise NotImplementedError


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = check_secret

    def counting(secret: str, secret_hash: str) -> bool:
        calls.append(secret_hash)
        return real(secret, secret_hash)

    monkeypatch.setattr(auth_module, "check_secret", counting)
    return calls


def make(store: FakeStore, scopes: frozenset[Scope] = frozenset(Scope)) -> str:
    key, parts = generate_key()
    store.records[parts.key_id] = KeyRecord(
        key_id=parts.key_id,
        account_id="acc",
        secret_hash=hash_secret(parts.secret, 4),
        scopes=scopes,
        status=KeyStatus.ACTIVE,
        rate_limit_per_minute=60,
    )
    return key


async def test_concurrent_first_requests_share_one_bcrypt_check(bcrypt_calls: list[str]) -> None:
    store = FakeStore()
    key = make(store)
    auth = Authenticator(store, ttl_s=30, max_entries=10, dummy_rounds=4)
    records = await asyncio.gather(*(auth.authenticate(f"Bearer {key}", Scope.INGEST) for _ in range(20)))
    assert {r.account_id for r in records} == {"acc"}
    assert len(bcrypt_calls) == 1
    await auth.authenticate(f"Bearer {key}", Scope.INGEST)
    assert len(bcrypt_calls) == 1
    assert store.reads == 1


async def test_after_the_ttl_the_record_is_read_again_without_bcrypt(bcrypt_calls: list[str]) -> None:
    store, clock = FakeStore(), Clock()
    key = make(store)
    auth = Authenticator(store, ttl_s=30, max_entries=10, dummy_rounds=4, clock=clock)
    await auth.authenticate(f"Bearer {key}", Scope.INGEST)
    key_id = next(iter(store.records))
    await store.update(key_id, status=KeyStatus.REVOKED)
    await auth.authenticate(f"Bearer {key}", Scope.INGEST)  # still cached: allowed
    clock.now = 31
    with pytest.raises(Forbidden):
        await auth.authenticate(f"Bearer {key}", Scope.INGEST)
    assert len(bcrypt_calls) == 1  # the hash did not change: no second bcrypt


async def test_unknown_key_costs_a_bcrypt_check_too(bcrypt_calls: list[str]) -> None:
    store = FakeStore()
    auth = Authenticator(store, ttl_s=30, max_entries=10, dummy_rounds=4)
    key, _ = generate_key()
    with pytest.raises(Unauthenticated):
        await auth.authenticate(f"Bearer {key}", Scope.INGEST)
    assert len(bcrypt_calls) == 1


async def test_a_wrong_secret_is_never_cached(bcrypt_calls: list[str]) -> None:
    store = FakeStore()
    key = make(store)
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    auth = Authenticator(store, ttl_s=30, max_entries=10, dummy_rounds=4)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(f"Bearer {wrong}", Scope.INGEST)
    assert len(bcrypt_calls) == 2
    assert (await auth.authenticate(f"bearer {key}", Scope.INGEST)).account_id == "acc"


async def test_scope_is_checked_on_cached_keys() -> None:
    store = FakeStore()
    key = make(store, frozenset({Scope.INBOX}))
    auth = Authenticator(store, ttl_s=30, max_entries=10, dummy_rounds=4)
    await auth.authenticate(f"Bearer {key}", Scope.INBOX)
    with pytest.raises(Forbidden):
        await auth.authenticate(f"Bearer {key}", Scope.INGEST)


async def test_a_client_that_keeps_failing_is_refused_before_any_check(bcrypt_calls: list[str]) -> None:
    store = FakeStore()
    key = make(store)
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    auth = Authenticator(store, ttl_s=30, max_entries=10, dummy_rounds=4, failures_per_minute=3)
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(f"Bearer {wrong}", Scope.INGEST, client="10.0.0.1")
    checks = len(bcrypt_calls)
    with pytest.raises(RateLimited) as refused:
        await auth.authenticate(f"Bearer {key}", Scope.INGEST, client="10.0.0.1")
    assert int(refused.value.headers["Retry-After"]) >= 1
    assert len(bcrypt_calls) == checks  # refused without spending a bcrypt check
    # Another client is not affected, and successes cost nothing.
    assert (await auth.authenticate(f"Bearer {key}", Scope.INGEST, client="10.0.0.2")).account_id == "acc"


async def test_a_verified_key_passes_a_locked_out_client_and_an_unverified_one_does_not(
    bcrypt_calls: list[str],
) -> None:
    store, clock = FakeStore(), Clock()
    verified, newcomer = make(store), make(store)
    auth = Authenticator(store, ttl_s=30, max_entries=10, dummy_rounds=4, failures_per_minute=2, clock=clock)
    await auth.authenticate(f"Bearer {verified}", Scope.INGEST, client="nat")
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await auth.authenticate("Bearer trg_0123456789abcdef_" + "x" * 43, Scope.INGEST, client="nat")
    with pytest.raises(RateLimited):
        await auth.authenticate(f"Bearer {newcomer}", Scope.INGEST, client="nat")
    assert (await auth.authenticate(f"Bearer {verified}", Scope.INGEST, client="nat")).account_id == "acc"
    clock.now = 31  # past the TTL: a refresh (one read, no bcrypt) is not a guess either
    assert (await auth.authenticate(f"Bearer {verified}", Scope.INGEST, client="nat")).account_id == "acc"
    assert len(bcrypt_calls) == 3  # the verified key once, the two guesses; none for the refused


@pytest.mark.parametrize(
    "secret",
    ["\u00e9" * 43, "\U0001f600" * 43, "!" * 43, "a" * 42 + "\u00e9", "\x00" * 43],
    ids=["latin1", "astral", "punctuation", "one-non-ascii", "nul"],
)
async def test_a_secret_outside_the_key_alphabet_is_malformed_and_counted(bcrypt_calls: list[str], secret: str) -> None:
    store = FakeStore()
    key = make(store)
    key_id = key.split("_")[1]
    auth = Authenticator(store, ttl_s=30, max_entries=10, dummy_rounds=4, failures_per_minute=1)
    with pytest.raises(Unauthenticated, match="malformed"):
        await auth.authenticate(f"Bearer trg_{key_id}_{secret}", Scope.INGEST, client="c")
    with pytest.raises(RateLimited):  # the one failure allowed was spent
        await auth.authenticate(f"Bearer trg_{key_id}_{secret}", Scope.INGEST, client="c")
    assert bcrypt_calls == []
    assert store.reads == 0  # refused on its shape: no lookup either


def test_check_secret_never_raises_on_input_bcrypt_refuses() -> None:
    secret_hash = hash_secret("x" * 43, 4)
    assert check_secret("\u00e9" * 43, secret_hash) is False
    assert check_secret("x" * 43, secret_hash) is True


# --- concurrent guesses, check slots, and entries that stop verifying ----------------------------


def unknown_key() -> str:
    key, _ = generate_key()  # well formed, its id in no store
    return key


async def test_concurrent_guesses_from_one_client_reach_the_store_at_most_its_failure_budget(
    bcrypt_calls: list[str],
) -> None:
    store = FakeStore()
    legit = make(store)
    auth = Authenticator(store, ttl_s=30, max_entries=10, dummy_rounds=4, failures_per_minute=5)
    outcomes = await asyncio.gather(
        *(auth.authenticate(f"Bearer {unknown_key()}", Scope.INGEST, client="a") for _ in range(50)),
        return_exceptions=True,
    )
    assert all(isinstance(o, Unauthenticated | RateLimited) for o in outcomes), outcomes
    assert sum(isinstance(o, Unauthenticated) for o in outcomes) <= 5
    assert store.reads <= 5
    assert len(bcrypt_calls) <= 5
    # Another client's never-verified key is checked and served.
    assert (await auth.authenticate(f"Bearer {legit}", Scope.INGEST, client="b")).account_id == "acc"
    # Waves of guesses, one after another, never pass the budget either.
    for _ in range(5):
        await asyncio.gather(
            *(auth.authenticate(f"Bearer {unknown_key()}", Scope.INGEST, client="a") for _ in range(10)),
            return_exceptions=True,
        )
    assert store.reads <= 5 + 1


class GatedStore(FakeStore):
    """Reads wait until the test opens the gate: checks stay in flight meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def get(self, key_id: str) -> KeyRecord:
        self.reads += 1
        await self.gate.wait()
        return await super().get(key_id)


async def test_checks_in_flight_are_capped_per_client_and_per_process_with_429_not_a_queue() -> None:
    store = GatedStore()
    legit, late = make(store), make(store)
    auth = Authenticator(store, ttl_s=30, max_entries=10, dummy_rounds=4, failures_per_minute=3, checks_per_process=3)
    guesses = [
        asyncio.create_task(auth.authenticate(f"Bearer {unknown_key()}", Scope.INGEST, client="a")) for _ in range(2)
    ]
    served = asyncio.create_task(auth.authenticate(f"Bearer {legit}", Scope.INGEST, client="b"))
    await asyncio.sleep(0)
    assert store.reads == 3  # two of a's guesses and b's key are being checked
    with pytest.raises(RateLimited) as third:  # a's third at once would wait: refused instead
        # (a bound, so that a check that queues fails the test instead of hanging it)
        await asyncio.wait_for(auth.authenticate(f"Bearer {unknown_key()}", Scope.INGEST, client="a"), 5)
    assert third.value.headers["Retry-After"] == "1"
    with pytest.raises(RateLimited):  # the process has no slot left for anyone
        await asyncio.wait_for(auth.authenticate(f"Bearer {late}", Scope.INGEST, client="c"), 5)
    assert store.reads == 3  # neither refusal reached the store
    store.gate.set()
    assert (await served).account_id == "acc"
    for guess in guesses:
        with pytest.raises(Unauthenticated):
            await guess
    # The refused request cost no failure token: a has one left of its three.
    with pytest.raises(Unauthenticated):
        await auth.authenticate(f"Bearer {unknown_key()}", Scope.INGEST, client="a")
    with pytest.raises(RateLimited):
        await auth.authenticate(f"Bearer {unknown_key()}", Scope.INGEST, client="a")
    assert (await auth.authenticate(f"Bearer {late}", Scope.INGEST, client="c")).account_id == "acc"


async def test_a_cached_key_that_stops_verifying_faces_the_lock_out_again(bcrypt_calls: list[str]) -> None:
    store, clock = FakeStore(), Clock()
    key = make(store)
    auth = Authenticator(store, ttl_s=30, max_entries=10, dummy_rounds=4, failures_per_minute=1, clock=clock)
    await auth.authenticate(f"Bearer {key}", Scope.INGEST, client="c")
    del store.records[key.split("_")[1]]  # the record is gone (deleted by hand, restored table...)
    clock.now = 31
    with pytest.raises(Unauthenticated):  # the refresh finds nothing: a failure
        await auth.authenticate(f"Bearer {key}", Scope.INGEST, client="c")
    reads, checks = store.reads, len(bcrypt_calls)
    for _ in range(5):  # no longer exempt: refused before any read or bcrypt
        with pytest.raises(RateLimited):
            await auth.authenticate(f"Bearer {key}", Scope.INGEST, client="c")
    assert (store.reads, len(bcrypt_calls)) == (reads, checks)
