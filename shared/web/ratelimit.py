"""Per-key token buckets: smooth refill, counted in events.

Each process holds its own buckets, so the edge needs no shared state and no extra request.
With N ingest instances behind a load balancer, set ``TRIGGERS_INGEST_INSTANCES=N``: each
instance then enforces limit / N, and a key spread evenly over the instances gets its
configured account-wide limit (see docs/api.md for what that means for a skewed spread).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the bucket is full again
    retry_after_s: int  # seconds until the refused request could pass (0 when allowed)

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated_at: float


class RateLimiter:
    def __init__(
        self, *, share: float = 1.0, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``share``: the part of each key's limit this process enforces (1 / instances)."""
        self._share = share
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock

    def blocked_for(self, key_id: str, per_minute: int) -> int:
        """Seconds until one token is back, 0 if there is one now (nothing is taken)."""
        bucket = self._buckets.get(key_id)
        if bucket is None:
            return 0
        capacity = self._capacity(per_minute)
        tokens = _refilled(bucket, capacity, self._clock())
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) * 60 / capacity))

    def take(self, key_id: str, per_minute: int, count: int = 1) -> RateDecision:
        """Take ``count`` tokens from the key's bucket (capacity = one minute of events)."""
        now = self._clock()
        capacity = self._capacity(per_minute)
        rate = capacity / 60.0
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(float(capacity), now)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key_id)
            bucket.tokens = _refilled(bucket, capacity, now)
            bucket.updated_at = now
        allowed = count <= bucket.tokens
        if allowed:
            bucket.tokens -= count
        return RateDecision(
            allowed=allowed,
            limit=capacity,
            remaining=int(bucket.tokens),
            reset_s=math.ceil((capacity - bucket.tokens) / rate),
            retry_after_s=0 if allowed else max(1, math.ceil((count - bucket.tokens) / rate)),
        )

    def give_back(self, key_id: str, per_minute: int, count: int = 1) -> None:
        """Return ``count`` tokens taken for something that turned out not to count (never
        above capacity)."""
        bucket = self._buckets.get(key_id)
        if bucket is not None:
            capacity = self._capacity(per_minute)
            now = self._clock()
            bucket.tokens = min(float(capacity), _refilled(bucket, capacity, now) + count)
            bucket.updated_at = now

    def _capacity(self, per_minute: int) -> int:
        """This process's share of a per-minute limit (at least one token)."""
        return max(1, round(per_minute * self._share))


def _refilled(bucket: _Bucket, capacity: int, now: float) -> float:
    """The bucket's tokens at ``now``: refilled smoothly, never above capacity."""
    return min(float(capacity), bucket.tokens + (now - bucket.updated_at) * capacity / 60.0)
