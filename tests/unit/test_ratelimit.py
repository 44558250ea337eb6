"""Token buckets: a minute of capacity, smooth refill, counted in events."""

from __future__ import annotations

from shared.web.ratelimit import RateLimiter
from tests.helpers import ManualClock


def test_a_full_bucket_allows_a_minute_of_events_then_refuses() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock=clock)
    first = limiter.take("k", per_minute=60, count=60)
    assert first.allowed
    assert first.remaining == 0
    refused = limiter.take("k", per_minute=60, count=1)
    assert not refused.allowed
    assert refused.retry_after_s == 1
    assert refused.headers()["X-RateLimit-Limit"] == "60"


def test_tokens_refill_smoothly() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock=clock)
    limiter.take("k", per_minute=60, count=60)
    clock.now = 10.0
    decision = limiter.take("k", per_minute=60, count=10)
    assert decision.allowed
    assert decision.remaining == 0
    assert not limiter.take("k", per_minute=60, count=1).allowed


def test_retry_after_covers_the_missing_tokens_and_reset_the_refill() -> None:
    clock = ManualClock()
    limiter = RateLimiter(clock=clock)
    limiter.take("k", per_minute=6, count=6)  # one token every 10 s
    refused = limiter.take("k", per_minute=6, count=3)
    assert not refused.allowed
    assert refused.retry_after_s == 30
    assert refused.reset_s == 60


def test_keys_have_separate_buckets_and_the_map_is_bounded() -> None:
    limiter = RateLimiter(max_keys=2, clock=ManualClock())
    limiter.take("a", per_minute=1)
    assert limiter.take("b", per_minute=1).allowed
    assert not limiter.take("a", per_minute=1).allowed
    limiter.take("c", per_minute=1)  # evicts the least recently used bucket ("b")
    assert limiter.take("b", per_minute=1).allowed


def test_each_of_n_instances_enforces_its_share_of_the_limit() -> None:
    limiter = RateLimiter(share=1 / 4, clock=ManualClock())
    decision = limiter.take("k", per_minute=100, count=25)
    assert decision.allowed
    assert decision.limit == 25
    assert not limiter.take("k", per_minute=100, count=1).allowed
