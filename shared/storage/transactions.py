"""TransactWriteItems with named items: a cancellation's reasons come back mapped to them.

Every item of a transaction says what it stands for (its ``Role``, the thing it writes for:
an event, a claim, an account's counter). DynamoDB answers a cancelled transaction with one
reason per item, in item order; ``transact`` zips them with the items once, here, and raises
``TransactionCancelled`` holding one ``Cancellation`` per item, so no caller indexes reasons
by position. Other failures keep botocore's exception types (callers and the web layer
classify those: ``unavailable`` here, for the writer and the copies; shared/web/http.py).

Transactions cancelled by conflicts are retried under ``TRANSACTION_RETRY``, the one policy
for every transaction (the writer's groups, its aliases, acknowledgements): ``retrying``.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from shared.aws.lean import RETRYABLE_CODES
from shared.retry import CONFLICT_RETRY, retry_pending

R = TypeVar("R")
# A transaction's items are read, never changed: a list of counter items (ref None) joins
# a list of copies or events (ref Copy | None) as it is.
R_co = TypeVar("R_co", covariant=True)
P = TypeVar("P")

TRANSACTION_RETRY = CONFLICT_RETRY
# Cancellation reasons of an item over its partition's throughput: they concern the item's
# account, never the whole transaction.
THROTTLE_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded", "RequestLimitExceeded"})
CONDITION_FAILED = "ConditionalCheckFailed"
CONFLICT = "TransactionConflict"
INVALID = "ValidationError"
# Not a DynamoDB code: the answer did not say (see _named).
UNKNOWN = "Unknown"
# Answers that say no write can succeed until something outside the writer changes (keys,
# permissions, a table): like an outage, they hold messages rather than counting against them.
_SERVICE_WIDE_CODES = frozenset(
    {
        "AccessDeniedException",
        "ExpiredTokenException",
        "ExpiredToken",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "ResourceNotFoundException",
    }
)


class Role(enum.StrEnum):
    EVENT_PUT = "event_put"
    CLAIM = "claim"
    COUNTER = "counter"
    ALIAS = "alias"
    ACK_UPDATE = "ack_update"
    COPY_PUT = "copy_put"  # a named consumer's copy of an event (shared.storage.copies)
    CONSUMER = "consumer"  # a consumer item, under its name or its deleted name (shared.storage.registry)
    CONSUMER_COUNT = "consumer_count"  # an account's count of consumers
    LEASE = "lease"  # an event's move between available, leased and failed (shared.storage.leases)


@dataclass(frozen=True, slots=True)
class TxItem(Generic[R_co]):
    """One item of a transaction: its role, the request as sent, and what it is written for."""

    role: Role
    request: dict[str, Any]  # {"Put": {...}} or {"Update": {...}}
    ref: R_co
    account: str = ""  # whose item it is: a throttled item concerns this account alone


@dataclass(frozen=True, slots=True)
class Cancellation(Generic[R]):
    """Why DynamoDB cancelled a transaction, for one of its items."""

    item: TxItem[R]
    code: str  # "None" for an item that was fine
    message: str = ""
    old: dict[str, Any] | None = None  # the stored item (ReturnValuesOnConditionCheckFailure: ALL_OLD)

    @property
    def condition_failed(self) -> bool:
        return self.code == CONDITION_FAILED

    @property
    def throttled(self) -> bool:
        return self.code in THROTTLE_REASONS


class TransactionCancelled(Exception, Generic[R]):
    """A transaction that wrote nothing, with each item's reason (see ``Cancellation``)."""

    def __init__(self, cancellations: list[Cancellation[R]]) -> None:
        super().__init__("transaction cancelled: " + ", ".join(sorted({c.code for c in cancellations})))
        self.cancellations = cancellations

    def codes(self) -> set[str]:
        return {c.code for c in self.cancellations}

    def of(self, role: Role) -> list[Cancellation[R]]:
        return [c for c in self.cancellations if c.item.role is role]


async def transact(client: Any, items: Sequence[TxItem[R]], *, token: str | None = None) -> None:
    """Write ``items`` all or nothing; ``TransactionCancelled`` (from botocore's) if cancelled.

    ``token`` (``ClientRequestToken``): the client's own retry of a call whose answer was lost
    then finds it done instead of failing its conditions. For a writer whose conditions already
    tell a repeat from a conflict, none is needed.
    """
    params: dict[str, Any] = {"TransactItems": [i.request for i in items]}
    if token is not None:
        params["ClientRequestToken"] = token
    try:
        await client.transact_write_items(**params)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "TransactionCanceledException":
            raise
        raise TransactionCancelled(_named(items, exc.response.get("CancellationReasons", []))) from exc


def _named(items: Sequence[TxItem[R]], reasons: Sequence[Any]) -> list[Cancellation[R]]:
    """DynamoDB answers one reason per item, in item order: named here, once.

    An answer with another number of reasons cannot say which item failed: every item gets
    ``UNKNOWN``, which no caller takes for a verdict, so each is tried again rather than
    dropped (a short list once left an alias with no result at all).
    """
    if len(reasons) != len(items):
        return [Cancellation(item, UNKNOWN) for item in items]
    return [
        Cancellation(item, str(r.get("Code", "None")), str(r.get("Message", "")), r.get("Item"))
        for item, r in zip(items, reasons, strict=True)
    ]


async def retrying(pending: list[P], attempt: Callable[[list[P]], Awaitable[list[P]]]) -> list[P]:
    """``attempt`` on what is pending under ``TRANSACTION_RETRY``; what was still pending at the end."""
    return await retry_pending(TRANSACTION_RETRY, pending, attempt)


def unavailable(exc: Exception) -> bool:
    """Is this service-wide (unreachable, 5xx, the call itself throttled, credentials,
    permissions, a missing table), not something about the items?"""
    if isinstance(exc, BotoCoreError):
        return True  # connection refused or reset, timeouts
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = exc.response["Error"]["Code"]
        return status >= 500 or code in RETRYABLE_CODES or code in _SERVICE_WIDE_CODES
    return False
