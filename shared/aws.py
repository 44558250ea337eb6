"""AWS client construction: one place decides timeouts, retries and local credentials.

Clients are async context managers; services open them in their lifespan (or an
``AsyncExitStack``), never at import time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

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


def _client_config(settings: Settings, *, pool_size: int) -> AioConfig:
    return AioConfig(
        region_name=settings.aws_region,
        # botocore's "standard" mode retries throttling and transient 5xx with jittered backoff.
        retries={"mode": "standard", "max_attempts": settings.aws_max_attempts},
        connect_timeout=settings.aws_connect_timeout_s,
        # Long polls wait up to 20 s on their own; the read timeout must outlast them.
        read_timeout=settings.aws_read_timeout_s + settings.writer_wait_time_s,
        max_pool_connections=pool_size,
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
        yield AwsClients(sqs=sqs, dynamodb=dynamodb)
