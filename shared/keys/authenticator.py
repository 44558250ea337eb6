"""API key authentication with an in-memory verified-key cache.

bcrypt costs hundreds of milliseconds, so it runs once per key per cache period, in a
thread, and concurrent first requests with the same key share that one check. A cached
entry is trusted for ``ttl_s``; after that the record is read again (status, scopes and
limit can change) and bcrypt runs again only if the stored hash changed. So a revoked key
stops working within ``ttl_s``, and ``last_used_at`` is written once per key per period
rather than per request.

A key not in the cache is what a guess looks like, so it pays first: one of its client's
failure tokens (``auth_failures_per_minute``) before anything else, and a slot among the
checks running at once (two per client, ``default_checks_per_process()`` in all). No slot
is a 429 at once, not a wait: bcrypt's thread pool is shared, and a queue there would hold
up the first check of every other key.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import Forbidden, KeyNotFound, RateLimited, ServiceUnavailable, Unauthenticated
from shared.keys.model import KeyRecord, KeyStatus, ParsedKey, Scope, check_secret, hash_secret, parse_key
from shared.keys.store import KeyStore
from shared.observability.metrics import KEY_CACHE
from shared.settings import Settings
from shared.web.ratelimit import RateLimiter

log = structlog.get_logger()

_BEARER = "bearer "
_CACHE_HIT, _CACHE_MISS = KEY_CACHE.labels("hit"), KEY_CACHE.labels("miss")


@dataclass(slots=True)
class _Entry:
    record: KeyRecord
    expires_at: float


# bcrypt checks (a key store read, then bcrypt) one client may have running at once, and
# the floor of the process's own cap: beyond either the request gets 429 at once rather than
# a place in the thread pool's queue, where a flood would hold up every other key's check.
CHECKS_PER_CLIENT = 2
MIN_CHECKS_PER_PROCESS = 4


def default_checks_per_process() -> int:
    """Twice the CPUs (bcrypt releases the GIL), and always above one client's share, so a
    single address can never take every slot."""
    return max(MIN_CHECKS_PER_PROCESS, 2 * (os.cpu_count() or 1))


class Authenticator:
    def __init__(
        self,
        store: KeyStore,
        *,
        ttl_s: float,
        max_entries: int,
        dummy_rounds: int = 12,
        failures_per_minute: int = 30,
        checks_per_client: int = CHECKS_PER_CLIENT,
        checks_per_process: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[KeyRecord]] = {}
        self._dummy_rounds = dummy_rounds
        self._dummy_hash: str | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._failures = RateLimiter(clock=clock)
        self._failures_per_minute = failures_per_minute
        self._checks_per_client = checks_per_client
        self._checks_per_process = checks_per_process or default_checks_per_process()
        self._checks: dict[str, int] = {}  # client -> checks running now
        self._checks_running = 0

    async def authenticate(self, authorization: str | None, scope: Scope, client: str = "") -> KeyRecord:
        """The key's record if ``authorization`` carries a valid key allowed ``scope``.

        The verified-key cache comes first: a key this process verified is served whatever
        its client's address did, so one bad client behind a shared address (a NAT, a
        corporate proxy) cannot lock out keys already in use there. Only a key not in the
        cache faces the lock-out: it takes one of its ``client``'s failure tokens before it
        is even parsed (given back once the key proves right), so concurrent guesses cannot
        all pass a check made before any of them failed. Every malformed, unknown or wrong
        key counts as a failure.
        """
        try:
            key = _bearer_token(authorization)
        except Unauthenticated:
            self._count_failure(client)
            raise
        record = await self._verify(key, client)
        if record.status is not KeyStatus.ACTIVE:
            raise Forbidden(f"This API key is {record.status.value}.")
        if scope not in record.scopes:
            raise Forbidden(f"This API key lacks the '{scope.value}' scope.")
        return record

    async def _verify(self, key: str, client: str) -> KeyRecord:
        fingerprint = hashlib.sha256(key.encode()).digest()
        entry = self._cache.get(fingerprint)
        if entry is not None and entry.expires_at > self._clock():
            self._cache.move_to_end(fingerprint)
            _CACHE_HIT.inc()
            return entry.record
        _CACHE_MISS.inc()
        if entry is not None:
            return await self._refresh(key, fingerprint, entry, client)
        return await self._first_check(key, fingerprint, client)

    async def _refresh(self, key: str, fingerprint: bytes, entry: _Entry, client: str) -> KeyRecord:
        """An expired entry still proves the caller holds a key verified here (same sha256):
        its refresh is one read, no bcrypt unless the hash changed, so it skips the lock-out.
        A refresh that fails (key deleted, hash changed) drops the entry: the key faces the
        lock-out from then on, like any other."""
        parsed = parse_key(key)
        try:
            if parsed is None:  # cannot happen for a key once verified; said for the type checker
                raise Unauthenticated("The API key is malformed.")
            return await self._shared_load(fingerprint, parsed, entry, client, capped=False)
        except Unauthenticated:
            if self._cache.get(fingerprint) is entry:
                del self._cache[fingerprint]
            self._count_failure(client)
            raise

    async def _first_check(self, key: str, fingerprint: bytes, client: str) -> KeyRecord:
        """A key not in the cache: one failure token first, then shape, read and bcrypt."""
        if client:
            decision = self._failures.take(client, self._failures_per_minute)
            if not decision.allowed:
                raise RateLimited(decision.retry_after_s)
        try:
            parsed = parse_key(key)
            if parsed is None:  # checked before any lookup or bcrypt: the shape is cheap
                raise Unauthenticated("The API key is malformed.")
            record = await self._shared_load(fingerprint, parsed, None, client, capped=True)
        except Unauthenticated:
            raise  # the token stays spent: this was a failure
        except BaseException:
            self._give_back(client)  # refused for load, or the key store is down: not a guess
            raise
        self._give_back(client)
        return record

    async def _shared_load(
        self, fingerprint: bytes, parsed: ParsedKey, entry: _Entry | None, client: str, *, capped: bool
    ) -> KeyRecord:
        """Concurrent checks of one key share the first one's result."""
        pending = self._pending.get(fingerprint)
        if pending is not None:
            return await asyncio.shield(pending)
        if capped:
            self._claim_check(client)
        future: asyncio.Future[KeyRecord] = asyncio.get_running_loop().create_future()
        self._pending[fingerprint] = future
        try:
            record = await self._load(parsed, entry)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters may be none
            raise
        else:
            future.set_result(record)
            self._remember(fingerprint, record)
            return record
        finally:
            del self._pending[fingerprint]
            if capped:
                self._release_check(client)

    def _claim_check(self, client: str) -> None:
        """A slot for one read-and-bcrypt, or 429 at once (never a queue)."""
        if self._checks_running >= self._checks_per_process or self._checks.get(client, 0) >= self._checks_per_client:
            raise RateLimited(1)
        self._checks_running += 1
        self._checks[client] = self._checks.get(client, 0) + 1

    def _release_check(self, client: str) -> None:
        self._checks_running -= 1
        left = self._checks[client] - 1
        if left:
            self._checks[client] = left
        else:
            del self._checks[client]

    def _count_failure(self, client: str) -> None:
        if client:
            self._failures.take(client, self._failures_per_minute)

    def _give_back(self, client: str) -> None:
        if client:
            self._failures.give_back(client, self._failures_per_minute)

    async def _load(self, parsed: ParsedKey, previous: _Entry | None) -> KeyRecord:
        try:
            record = await self._store.get(parsed.key_id)
        except KeyNotFound:
            # Spend the same time as a wrong secret: no oracle for which key ids exist.
            await asyncio.to_thread(check_secret, parsed.secret, self._dummy())
            raise Unauthenticated("The API key is not valid.") from None
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable("Key store unavailable.") from exc
        reuse = previous is not None and previous.record.secret_hash == record.secret_hash
        if not reuse and not await asyncio.to_thread(check_secret, parsed.secret, record.secret_hash):
            raise Unauthenticated("The API key is not valid.")
        self._touch_later(record.key_id)
        return record

    def _remember(self, fingerprint: bytes, record: KeyRecord) -> None:
        self._cache[fingerprint] = _Entry(record, self._clock() + self._ttl_s)
        self._cache.move_to_end(fingerprint)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = hash_secret("timing-equaliser", self._dummy_rounds)
        return self._dummy_hash

    def _touch_later(self, key_id: str) -> None:
        """Record use without holding up the request; failure only costs freshness."""
        used_at = datetime.now(UTC).isoformat(timespec="seconds")
        task = asyncio.get_running_loop().create_task(self._touch(key_id, used_at))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _touch(self, key_id: str, used_at: str) -> None:
        try:
            await self._store.touch(key_id, used_at)
        except Exception as exc:  # noqa: BLE001 - best effort by design, logged
            log.warning("key_touch_failed", key_id=key_id, error=type(exc).__name__)


def build_authenticator(settings: Settings, store: KeyStore) -> Authenticator:
    """The authenticator both HTTP services use, configured from the settings."""
    return Authenticator(
        store,
        ttl_s=settings.key_cache_ttl_s,
        max_entries=settings.key_cache_max_entries,
        dummy_rounds=settings.bcrypt_rounds,
        failures_per_minute=settings.auth_failures_per_minute,
    )


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("Missing Authorization header; send 'Authorization: Bearer <key>'.")
    if not authorization[: len(_BEARER)].lower() == _BEARER:
        raise Unauthenticated("Authorization must use the Bearer scheme.")
    token = authorization[len(_BEARER) :].strip()
    if not token:
        raise Unauthenticated("The API key is missing after 'Bearer'.")
    return token
