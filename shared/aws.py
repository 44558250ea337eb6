"""AWS client construction: one place decides timeouts, retries and local credentials.

Clients are async context managers; services open them in their lifespan (or an
``AsyncExitStack``), never at import time.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from types_aiobotocore_dynamodb import DynamoDBClient
from types_aiobotocore_sqs import SQSClient

from shared.settings import Settings

# Any non-empty credentials satisfy moto and LocalStack; real AWS uses the normal chain.
_LOCAL_CREDENTIALS = ("local", "local")


@dataclass(frozen=True, slots=True)
class AwsClients:
    sqs: SQSClient
    dynamodb: DynamoDBClient


# AWS requests this process sent, by "service.Operation" (retries included): the cost
# figures of benchmarks and the writer's shutdown summary come from here.
AWS_REQUESTS: Counter[str] = Counter()


def _count_request(event_name: str, **_: object) -> None:
    # event_name is "before-send.<service>.<Operation>"
    AWS_REQUESTS[event_name.split(".", 1)[1]] += 1


# DynamoDB requests whose parameters this project builds itself, from strings, numbers,
# booleans, lists and maps only. For them botocore's serializer (a pure-Python walk of the
# service model) produces exactly the JSON of the parameters, at a third of the writer's
# CPU; msgspec writes the same bytes directly.
_PASS_THROUGH_OPERATIONS = frozenset(
    {"TransactWriteItems", "PutItem", "UpdateItem", "GetItem", "Query", "BatchGetItem"}
)
_json_encoder = msgspec.json.Encoder()


class _PassThroughSerializer:
    """Wraps the DynamoDB client's serializer; see ``_PASS_THROUGH_OPERATIONS``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def serialize_to_request(self, parameters: dict[str, Any], operation_model: Any) -> dict[str, Any]:
        if operation_model.name not in _PASS_THROUGH_OPERATIONS:
            request: dict[str, Any] = self._inner.serialize_to_request(parameters, operation_model)
            return request
        # Method, URL and headers as botocore makes them; the body straight from msgspec.
        request = self._inner.serialize_to_request({}, operation_model)
        request["body"] = _json_encoder.encode(parameters)
        return request


# The successful answers to those requests are plain JSON of strings, numbers, booleans,
# lists and maps too (no blobs, no timestamps): botocore's parser would walk the model to
# produce the very same dicts. A 50-event page costs ~5 ms of CPU that way.
_PASS_THROUGH_OUTPUTS = frozenset(f"{name}Output" for name in _PASS_THROUGH_OPERATIONS)
_json_decoder = msgspec.json.Decoder()


class _PassThroughParser:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def parse(self, response: dict[str, Any], shape: Any) -> dict[str, Any]:
        if response["status_code"] != 200 or shape is None or shape.name not in _PASS_THROUGH_OUTPUTS:
            parsed: dict[str, Any] = await self._inner.parse(response, shape)
            return parsed
        parsed = _json_decoder.decode(response["body"]) if response["body"] else {}
        parsed["ResponseMetadata"] = {"HTTPStatusCode": 200, "HTTPHeaders": response["headers"], "RetryAttempts": 0}
        return parsed


class _PassThroughParserFactory:
    """Wraps the DynamoDB endpoint's parser factory; see ``_PASS_THROUGH_OUTPUTS``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_parser(self, protocol: str) -> _PassThroughParser:
        return _PassThroughParser(self._inner.create_parser(protocol))


def _no_operation_context(*_: object) -> None:
    return None


def _client_config(settings: Settings, *, pool_size: int) -> AioConfig:
    return AioConfig(
        region_name=settings.aws_region,
        # botocore's "standard" mode retries throttling and transient 5xx with jittered backoff.
        retries={"mode": "standard", "max_attempts": settings.aws_max_attempts},
        connect_timeout=settings.aws_connect_timeout_s,
        # Long polls wait up to 20 s on their own; the read timeout must outlast them.
        read_timeout=settings.aws_read_timeout_s + settings.writer_wait_time_s,
        max_pool_connections=pool_size,
        # Our requests are built by our own code, not by users: validating every parameter
        # against the service model costs ~20% of the writer's CPU and finds nothing.
        parameter_validation=False,
    )


def _credentials(settings: Settings) -> tuple[str | None, str | None]:
    """(access key, secret): placeholders for a local endpoint, else the normal AWS chain."""
    has_own = os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")
    local = settings.aws_endpoint_url or settings.sqs_endpoint_url or settings.dynamodb_endpoint_url
    if local and not has_own:
        return _LOCAL_CREDENTIALS
    return None, None


@contextlib.asynccontextmanager
async def open_clients(settings: Settings, *, pool_size: int = 64) -> AsyncIterator[AwsClients]:
    """Open one SQS and one DynamoDB client sharing the process's settings."""
    session = get_session()
    config = _client_config(settings, pool_size=pool_size)
    key_id, secret = _credentials(settings)
    sqs_endpoint = settings.sqs_endpoint_url or settings.aws_endpoint_url
    dynamodb_endpoint = settings.dynamodb_endpoint_url or settings.aws_endpoint_url
    async with contextlib.AsyncExitStack() as stack:
        sqs = await stack.enter_async_context(
            session.create_client(
                "sqs", endpoint_url=sqs_endpoint, config=config, aws_access_key_id=key_id, aws_secret_access_key=secret
            )
        )
        dynamodb = await stack.enter_async_context(
            session.create_client(
                "dynamodb",
                endpoint_url=dynamodb_endpoint,
                config=config,
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
            )
        )
        for client in (sqs, dynamodb):
            client.meta.events.register("before-send", _count_request)
        dynamodb._serializer = _PassThroughSerializer(dynamodb._serializer)  # type: ignore[attr-defined]
        endpoint = dynamodb._endpoint  # type: ignore[attr-defined]
        endpoint._response_parser_factory = _PassThroughParserFactory(endpoint._response_parser_factory)
        # DynamoDB's one "operation context parameter" is ResourceArnList: a jmespath search
        # of every item of every transaction, per request (a fifth of the writer's CPU), to
        # route calls that name tables by ARN. This project names tables, never ARNs, and
        # routing by name does not need it.
        resolver = dynamodb._ruleset_resolver  # type: ignore[attr-defined]
        resolver._resolve_param_as_operation_context_param = _no_operation_context
        yield AwsClients(sqs=sqs, dynamodb=dynamodb)
