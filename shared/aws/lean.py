"""Lean AWS JSON-protocol clients for the hot paths: writer transactions and queue calls,
inbox pages, counts and acknowledgements, the edge's SendMessageBatch.

aiobotocore spends about a millisecond of CPU on every call (model-driven serialization and
parsing, endpoint rules, event hooks, user-agent assembly), which is most of the writer's
cost per event and most of an inbox page's. DynamoDB and SQS speak the AWS JSON protocol:
POST the parameters as JSON with an ``X-Amz-Target`` header, signed with SigV4; the answer
is JSON too. This client does exactly that for the operations the project calls on its hot
paths (msgspec for JSON, SigV4 by shared/aws/sigv4.py, tested against botocore's signer, a
keep-alive connection pool from shared/aws/http1.py), and hands every other operation to the
aiobotocore client. It raises botocore's own exception types, with the same ``response``
shape, so callers cannot tell the difference. The
parameters and answers of these operations hold only strings, numbers, booleans, lists and
maps, which is why plain JSON is exactly what botocore would have sent and returned.

Retries: throttling, 5xx and connection errors are retried up to ``max_attempts`` in all,
with full-jitter exponential backoff from ``RETRY_BASE_S``, capped at ``RETRY_MAX_S``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from botocore.exceptions import ClientError, EndpointConnectionError

from shared.aws.http1 import Http1Pool
from shared.aws.sigv4 import JsonPostSigner


@dataclass(frozen=True)
class Service:
    signing_name: str
    target_prefix: str
    operations: dict[str, str]  # client method name -> operation name


DYNAMODB = Service(
    "dynamodb",
    "DynamoDB_20120810.",
    {
        "transact_write_items": "TransactWriteItems",
        "query": "Query",
        "get_item": "GetItem",
        "put_item": "PutItem",
        "update_item": "UpdateItem",
        "batch_get_item": "BatchGetItem",
    },
)
SQS = Service(
    "sqs",
    "AmazonSQS.",
    {
        "receive_message": "ReceiveMessage",
        "delete_message_batch": "DeleteMessageBatch",
        "change_message_visibility_batch": "ChangeMessageVisibilityBatch",
        "send_message_batch": "SendMessageBatch",
    },
)
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "RequestThrottled",
    }
)
RETRY_BASE_S = 0.025
RETRY_MAX_S = 2.0
_CONTENT_TYPE = "application/x-amz-json-1.0"

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

CredentialsSource = Callable[[], Awaitable[Any]]  # returns botocore ReadOnlyCredentials
T = TypeVar("T")


class LeanClient:
    """Duck-types an aiobotocore client: lean for the service's operations, else delegated."""

    def __init__(
        self,
        service: Service,
        fallback: Any,
        http: Http1Pool,
        *,
        url: str,
        region: str,
        credentials: CredentialsSource,
        max_attempts: int,
        on_request: Callable[[str], None],
    ) -> None:
        self._service = service
        self._fallback = fallback
        self._http = http
        self._url = url
        self._credentials = credentials
        self._max_attempts = max(1, max_attempts)
        self._on_request = on_request
        self._signer = JsonPostSigner(url, region, service.signing_name)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names not set on the instance: each lean method is made once.
        operation = self._service.operations.get(name)
        if operation is None:
            return getattr(self._fallback, name)

        async def call(**params: Any) -> dict[str, Any]:
            answer: dict[str, Any] = await self._call(operation, params, _decoder)
            return answer

        setattr(self, name, call)
        return call

    async def decoded(self, method: str, answer: msgspec.json.Decoder[T], params: dict[str, Any]) -> T:
        """The answer of ``method`` decoded straight from the wire into ``answer``'s type."""
        decoded: T = await self._call(self._service.operations[method], params, answer)
        return decoded

    async def _call(self, operation: str, params: dict[str, Any], answer: msgspec.json.Decoder[Any]) -> Any:
        body = _encoder.encode(params)
        for attempt in range(self._max_attempts):
            last = attempt + 1 == self._max_attempts
            self._on_request(f"{self._service.signing_name}.{operation}")
            try:
                status, data = await self._send(operation, body)
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
            raise ClientError(error, operation)  # type: ignore[arg-type]
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(self, operation: str, body: bytes) -> tuple[int, bytes]:
        target = self._service.target_prefix + operation
        headers = self._signer.headers(body, target, _CONTENT_TYPE, await self._credentials())
        return await self._http.post(headers, body)

    @staticmethod
    async def _backoff(attempt: int) -> None:
        await asyncio.sleep(random.uniform(0, min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt)))


async def call_decoded(client: Any, method: str, answer: msgspec.json.Decoder[T], **params: Any) -> T:
    """A typed answer: decoded from the wire by a lean client, converted from botocore's otherwise.

    Typed decoding skips building a dict per attribute value, which is most of the cost of
    reading a page of items.
    """
    if isinstance(client, LeanClient):
        return await client.decoded(method, answer, params)
    converted: T = msgspec.convert(await getattr(client, method)(**params), answer.type, strict=answer.strict)
    return converted


def _error_response(status: int, data: bytes) -> dict[str, Any]:
    """The error in botocore's shape: {"Error": {"Code", "Message"}, ...extra fields}."""
    try:
        raw: dict[str, Any] = _decoder.decode(data) if data else {}
    except msgspec.DecodeError:
        raw = {}
    code = str(raw.pop("__type", "") or f"HTTP{status}").rsplit("#", 1)[-1].rsplit(".", 1)[-1]
    message = raw.pop("message", None) or raw.pop("Message", None) or ""
    return {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
        **raw,
    }
