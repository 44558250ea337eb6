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
        per_minute = max(1, round(per_minute * self._share))
        rate = per_minute / 60.0
        tokens = min(float(per_minute), bucket.tokens + (self._clock() - bucket.updated_at) * rate)
        return 0 if tokens >= 1 else max(1, math.ceil((1 - tokens) / rate))

    def take(self, key_id: str, per_minute: int, count: int = 1) -> RateDecision:
        """Take ``count`` tokens from the key's bucket (capacity = one minute of events)."""
        now = self._clock()
        per_minute = max(1, round(per_minute * self._share))
        rate = per_minute / 60.0
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = _Bucket(float(per_minute), now)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key_id)
            bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.updated_at) * rate)
            bucket.updated_at = now
        allowed = count <= bucket.tokens
        if allowed:
            bucket.tokens -= count
        missing = max(0.0, count - bucket.tokens) if not allowed else 0.0
        return RateDecision(
            allowed=allowed,
            limit=per_minute,
            remaining=int(bucket.tokens),
            reset_s=math.ceil((per_minute - bucket.tokens) / rate) if rate else 0,
            retry_after_s=max(1, math.ceil(missing / rate)) if not allowed and rate else 0,
        )
