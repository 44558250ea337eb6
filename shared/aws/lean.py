"""The lean AWS JSON-protocol transport under the typed clients of the hot paths
(shared/aws/dynamodb.py, shared/aws/sqs.py).

aiobotocore spends about a millisecond of CPU on every call (model-driven serialization and
parsing, endpoint rules, event hooks, user-agent assembly), which is most of the writer's
cost per event and most of an inbox page's. DynamoDB and SQS speak the AWS JSON protocol:
POST the parameters as JSON with an ``X-Amz-Target`` header, signed with SigV4; the answer
is JSON too. ``LeanTransport`` does exactly that for one service (msgspec for JSON, SigV4 by
shared/aws/sigv4.py, tested against botocore's signer, a keep-alive connection pool from
shared/aws/http1.py). It raises botocore's own exception types, with the same ``response``
shape, so callers cannot tell the difference. The parameters and answers of the operations
it serves hold only strings, numbers, booleans, lists and maps, which is why plain JSON is
exactly what botocore would have sent and returned.

Retries: throttling, 5xx and connection errors are retried up to ``max_attempts`` in all,
with full-jitter exponential backoff from ``RETRY_BASE_S``, capped at ``RETRY_MAX_S``.
Every attempt is counted once, by ``Operation.counted_as`` ("dynamodb.Query"), as botocore's
``before-send`` hook counts the aiobotocore clients' attempts. An answer over the pool's cap
(shared/aws/http1.py) is not retried (it would come again): it raises botocore's
``HTTPClientError`` naming the cap, which callers handle as every other transport failure.

Endpoint, signing region and User-Agent are the aiobotocore client's own, as botocore
resolved them (shared/aws/clients.py), so hot and cold calls of one client reach the same
endpoint whatever selects it (settings, ``AWS_ENDPOINT_URL_DYNAMODB``, FIPS, partitions).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from botocore.exceptions import ClientError, EndpointConnectionError, HTTPClientError, NoCredentialsError

from shared.aws.http1 import AnswerTooLarge, Http1Pool
from shared.aws.sigv4 import JsonPostSigner


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of a service, with the strings a call needs worked out once."""

    name: str  # botocore's operation name ("Query"), which ClientError carries
    target: str  # the X-Amz-Target header ("DynamoDB_20120810.Query")
    counted_as: str  # its key in the request counts ("dynamodb.Query")


@dataclass(frozen=True, slots=True)
class Service:
    signing_name: str  # "dynamodb", "sqs": the SigV4 service, and the host's first label on AWS
    target_prefix: str  # "DynamoDB_20120810."

    def operation(self, name: str) -> Operation:
        return Operation(name, self.target_prefix + name, f"{self.signing_name}.{name}")


DYNAMODB = Service("dynamodb", "DynamoDB_20120810.")
SQS = Service("sqs", "AmazonSQS.")
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "RequestThrottled",
        # A resend under the same ClientRequestToken while the first is still committing:
        # botocore retries it too (its standard mode's transient errors).
        "TransactionInProgressException",
    }
)
RETRY_BASE_S = 0.025
RETRY_MAX_S = 2.0
_CONTENT_TYPE = "application/x-amz-json-1.0"

_encoder = msgspec.json.Encoder()
# Answers as botocore hands them over: dicts, lists, strings, numbers.
PLAIN: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

CredentialsSource = Callable[[], Awaitable[Any]]  # returns botocore ReadOnlyCredentials
T = TypeVar("T")


async def no_credentials() -> Any:
    """The credentials source when the chain found none: every call fails as aiobotocore's would."""
    raise NoCredentialsError


class LeanTransport:
    """Signed JSON POSTs to one service's endpoint, retried and counted."""

    def __init__(
        self,
        service: Service,
        http: Http1Pool,
        *,
        url: str,
        region: str,
        credentials: CredentialsSource,
        max_attempts: int,
        on_request: Callable[[str], None],
        user_agent: str,
    ) -> None:
        self._http = http
        self._url = url
        self._user_agent = user_agent
        self._credentials = credentials
        self._max_attempts = max(1, max_attempts)
        self._on_request = on_request
        self._signer = JsonPostSigner(url, region, service.signing_name)

    @property
    def url(self) -> str:
        """The endpoint every call goes to."""
        return self._url

    async def call(self, operation: Operation, params: Mapping[str, object], answer: msgspec.json.Decoder[T]) -> T:
        """The answer of ``operation`` decoded straight from the wire by ``answer``."""
        body = _encoder.encode(params)
        for attempt in range(self._max_attempts):
            last = attempt + 1 == self._max_attempts
            self._on_request(operation.counted_as)
            try:
                status, data = await self._send(operation, body)
            except AnswerTooLarge as exc:
                raise HTTPClientError(error=exc) from exc
            except (TimeoutError, OSError) as exc:
                if last:
                    raise EndpointConnectionError(endpoint_url=self._url, error=exc) from exc
                await self._backoff(attempt)
                continue
            if status == 200:
                return answer.decode(data or b"{}")
            error = _error_response(status, data)
            if not last and (status >= 500 or error["Error"]["Code"] in RETRYABLE_CODES):
                await self._backoff(attempt)
                continue
            raise ClientError(error, operation.name)  # type: ignore[arg-type]
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, operation: Operation, body: bytes) -> tuple[int, bytes]:
        headers = self._signer.headers(body, operation.target, _CONTENT_TYPE, await self._credentials())
        headers["user-agent"] = self._user_agent  # unsigned, as botocore leaves it
        return await self._http.post(headers, body)

    @staticmethod
    async def _backoff(attempt: int) -> None:
        await asyncio.sleep(random.uniform(0, min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt)))


def _error_response(status: int, data: bytes) -> dict[str, Any]:
    """The error in botocore's shape: {"Error": {"Code", "Message"}, ...extra fields}."""
    try:
        raw: dict[str, Any] = PLAIN.decode(data) if data else {}
    except msgspec.DecodeError:
        raw = {}
    code = str(raw.pop("__type", "") or f"HTTP{status}").rsplit("#", 1)[-1].rsplit(".", 1)[-1]
    message = raw.pop("message", None) or raw.pop("Message", None) or ""
    return {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
        **raw,
    }
