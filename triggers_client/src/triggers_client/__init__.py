"""The Triggers API client: ``TriggersClient`` (sync) and ``AsyncTriggersClient`` (async).

Both have the same calls (send, send_batch, inbox_page, iter_pages, iter_events, get, ack,
ack_many, status; create_consumer, consumers, consumer, update_consumer, delete_consumer;
claim, ack_claimed, nack, extend), and a worker helper each (``work``, ``awork``),
answer with msgspec Structs, retry what is safe to retry with the same
idempotency key (``RetryPolicy``), and raise a ``TriggersError`` subclass for the rest.
See README.md next to this distribution's pyproject.toml.
"""

from triggers_client._async import AsyncTriggersClient
from triggers_client._calls import USER_AGENT
from triggers_client._errors import (
    ApiError,
    AuthError,
    ConfigurationError,
    Conflict,
    ConnectionFailed,
    NotFound,
    RateLimited,
    ServerError,
    TriggersError,
    Unavailable,
    UnexpectedAnswer,
    ValidationFailed,
)
from triggers_client._models import (
    Accepted,
    AckResult,
    BackfillProgress,
    BatchItem,
    BatchResult,
    Claim,
    ClaimedEvent,
    ConsumerInfo,
    ErrorDetail,
    Event,
    ExtendResult,
    Health,
    InboxPage,
    ItemError,
    NackResult,
    NewEvent,
    ServiceStatus,
    TokenRefused,
)
from triggers_client._retry import DEFAULT_RETRY, NO_RETRY, RetryPolicy
from triggers_client._sync import TriggersClient
from triggers_client._version import __version__
from triggers_client._worker import NackBackoff, WorkSummary, awork, work

__all__ = [
    "DEFAULT_RETRY",
    "NO_RETRY",
    "USER_AGENT",
    "Accepted",
    "AckResult",
    "ApiError",
    "AsyncTriggersClient",
    "AuthError",
    "BackfillProgress",
    "BatchItem",
    "BatchResult",
    "Claim",
    "ClaimedEvent",
    "ConfigurationError",
    "Conflict",
    "ConnectionFailed",
    "ConsumerInfo",
    "ErrorDetail",
    "Event",
    "ExtendResult",
    "Health",
    "InboxPage",
    "ItemError",
    "NackBackoff",
    "NackResult",
    "NewEvent",
    "NotFound",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "ServiceStatus",
    "TokenRefused",
    "TriggersClient",
    "TriggersError",
    "Unavailable",
    "UnexpectedAnswer",
    "ValidationFailed",
    "WorkSummary",
    "__version__",
    "awork",
    "work",
]
