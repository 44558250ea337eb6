"""Named backoff policies, and the one loop that retries "what is still pending".

Each policy is a full-jitter exponential backoff (a pause drawn uniformly from
``[0, min(cap, base * 2**attempt)]``): concurrent writers that collided once spread out
instead of colliding again in step. A policy has a name, so logs and docs can say which one
applied, and an attempt bound (``None``: retry until told to stop, for waits on an outage).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    name: str
    base_s: float
    cap_s: float
    attempts: int | None = None  # None: unbounded

    def delay_s(self, attempt: int) -> float:
        """The jittered pause after failed attempt number ``attempt`` (0-based)."""
        # min() before the power would overflow for very long outages: cap the exponent.
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** min(attempt, 30)))

    async def pause(self, attempt: int) -> None:
        await asyncio.sleep(self.delay_s(attempt))


# Transactions cancelled by a conflict (two writers touching one counter shard, or one
# acknowledgement racing another): retried a few times within one batch; what still
# conflicts is left for the message's next delivery.
CONFLICT_RETRY = BackoffPolicy("conflict", base_s=0.02, cap_s=1.0, attempts=6)

# While DynamoDB is unreachable or throttling, the writer probes it with one cheap call
# after each pause of this policy, until it answers (writer_worker/worker.py).
STORAGE_PROBE = BackoffPolicy("storage_probe", base_s=0.25, cap_s=5.0)


async def retry_pending(
    policy: BackoffPolicy, pending: list[T], attempt: Callable[[list[T]], Awaitable[list[T]]]
) -> list[T]:
    """Call ``attempt`` on what is pending until nothing is, or the policy's attempts run out.

    ``attempt`` settles what it can and returns what must be tried again; the result is what
    was still pending at the end (empty when everything was settled).
    """
    tries = 0
    while pending:
        pending = await attempt(pending)
        tries += 1
        if not pending or (policy.attempts is not None and tries >= policy.attempts):
            break
        await policy.pause(tries - 1)
    return pending
