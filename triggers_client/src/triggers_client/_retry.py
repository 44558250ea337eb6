"""The retry policy: which failures are tried again, and how long to wait before each retry.

Retried: no answer at all (connection refused, reset or dropped, timeouts) and 429, 502, 503,
504. Every call of this API is safe to repeat: reads and acknowledgements are idempotent, and
every event is sent with an idempotency key (the caller's, or one the client made up once per
send) that each attempt repeats, so the service stores the event once however many attempts
reached it. Nothing else is retried: another 4xx will not change by being asked again, a
500 is a bug to report, not to hammer, and a base URL or key the client cannot use, a
request HTTP cannot carry or a body that cannot be decoded stays so. The error's class
decides (``retryable``); ``_errors.NO_ANSWER`` lists the httpx errors that count as no answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from triggers_client._errors import TriggersError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded in attempts and in each wait.

    Before retry ``n`` (0 for the first) the client waits a random time in
    ``[0, min(cap_s, base_s * 2**n)]``, or the answer's ``Retry-After`` if that is longer.
    A ``Retry-After`` above ``max_retry_after_s`` ends the retries at once (asking sooner
    would be refused again): the error raised carries it in ``retry_after_s``.

    With the defaults a call makes at most 4 attempts and waits at most 3 x 30 s between them:
    well inside the service's 5-minute deduplication window, which is what makes repeating a
    send's idempotency key safe. Keep custom policies inside it too.
    """

    attempts: int = 4
    base_s: float = 0.5
    cap_s: float = 8.0
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1 (the first try)")
        if not 0 <= self.base_s <= self.cap_s:
            raise ValueError("need 0 <= base_s <= cap_s")
        if self.max_retry_after_s < 0:
            raise ValueError("max_retry_after_s must not be negative")

    def backoff_s(self, retry: int, rng: random.Random | None = None) -> float:
        """The jittered wait before retry ``retry`` (0-based), without a Retry-After."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(retry, 64))
        return (rng or _RANDOM).uniform(0.0, ceiling)

    def delay_s(self, retry: int, error: TriggersError, rng: random.Random | None = None) -> float | None:
        """How long to wait before retry ``retry`` after ``error``; None: give up and raise it."""
        if not error.retryable or retry + 1 >= self.attempts:
            return None
        wait = self.backoff_s(retry, rng)
        if error.retry_after_s is not None:
            if error.retry_after_s > self.max_retry_after_s:
                return None
            wait = max(wait, error.retry_after_s)
        return wait


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)

_RANDOM = random.Random()
