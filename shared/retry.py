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
        return random.uniform(0, self.ceiling_s(attempt))

    def ceiling_s(self, attempt: int) -> float:
        """The longest pause after failed attempt ``attempt``: the policy without jitter."""
        return min(self.cap_s, self.base_s * float(2 ** min(attempt, 30)))

    async def pause(self, attempt: int) -> None:
        await asyncio.sleep(self.delay_s(attempt))


# Transactions cancelled by a conflict (two writers touching one counter shard, or one
# acknowledgement racing another): the one policy of every transaction
# (shared.storage.transactions: the writer's groups and aliases, acknowledgements). What still
# conflicts is left for the message's next delivery, or answers 503 and the client retries.
CONFLICT_RETRY = BackoffPolicy("conflict", base_s=0.02, cap_s=1.0, attempts=6)

# Keys a BatchGetItem left unprocessed (acknowledgements, DLQ replay) are read again within
# the request (shared.storage.reads); what still fails answers 503 and the client retries.
BATCH_READ_RETRY = BackoffPolicy("batch_read", base_s=0.01, cap_s=0.5, attempts=5)

# While DynamoDB is unreachable or throttling, the writer probes it with one cheap call
# after each pause of this policy, until it answers (writer_worker/worker.py).
STORAGE_PROBE = BackoffPolicy("storage_probe", base_s=0.25, cap_s=5.0)

# Events whose account's items were throttled go back to the events queue in a message of
# their own, delayed by this policy's pause after their n-th deferral (at least 1 s; SQS
# allows 900 s at most): a hot account is tried less often, never dead-lettered for it.
THROTTLE_DEFER = BackoffPolicy("throttle_defer", base_s=1.0, cap_s=60.0)

# SendMessageBatch entries that failed are sent again a few times within one batch, so a
# message is rarely left to come back (and repeat what it had already sent).
SQS_RESEND = BackoffPolicy("sqs_resend", base_s=0.05, cap_s=1.0, attempts=4)

# Lambda, storage unavailable: a message about to be reported as failed is first hidden for
# this policy's ceiling after its receive count (no jitter: 30 s, 60 s, ... 15 min), so each
# receive covers more of an outage (docs/operations.md, "Lambda writer").
OUTAGE_REDELIVERY = BackoffPolicy("outage_redelivery", base_s=30.0, cap_s=900.0)


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
