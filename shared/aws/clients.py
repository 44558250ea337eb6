"""AWS client construction: one place decides timeouts, retries and local credentials.

Clients are async context managers; services open them in their lifespan (or an
``AsyncExitStack``), never at import time.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.credentials import Credentials
from types_aiobotocore_dynamodb import DynamoDBClient
from types_aiobotocore_sqs import SQSClient

from shared.aws.http1 import Http1Pool
from shared.aws.lean import DYNAMODB, SQS, LeanClient, Service
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


def _read_timeout_s(settings: Settings, *, long_poll: bool) -> float:
    # Long polls (SQS only) wait up to the writer's wait time on their own; the read timeout
    # must outlast them. No other call waits: DynamoDB's must not (an outage would take 20 s
    # more per call to notice).
    return settings.aws_read_timeout_s + (settings.writer_wait_time_s if long_poll else 0)


def _client_config(settings: Settings, *, pool_size: int, long_poll: bool = True) -> AioConfig:
    return AioConfig(
        region_name=settings.aws_region,
        # botocore's "standard" mode retries throttling and transient 5xx with jittered backoff.
        retries={"mode": "standard", "max_attempts": settings.aws_max_attempts},
        connect_timeout=settings.aws_connect_timeout_s,
        read_timeout=_read_timeout_s(settings, long_poll=long_poll),
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
                config=_client_config(settings, pool_size=pool_size, long_poll=False),
                aws_access_key_id=key_id,
                aws_secret_access_key=secret,
            )
        )
        for client in (sqs, dynamodb):
            client.meta.events.register("before-send", _count_request)
        yield await _lean(stack, session, settings, (sqs, dynamodb), pool_size=pool_size)


async def _lean(
    stack: contextlib.AsyncExitStack,
    session: AioSession,
    settings: Settings,
    clients: tuple[SQSClient, DynamoDBClient],
    *,
    pool_size: int,
) -> AwsClients:
    """The clients the code uses: lean on hot operations (see shared/aws/lean.py)."""
    sqs, dynamodb = clients
    key_id, secret = _credentials(settings)
    credentials: Any = Credentials(key_id, secret) if key_id and secret else await session.get_credentials()
    if credentials is None:
        return AwsClients(sqs=sqs, dynamodb=dynamodb)  # no credentials: aiobotocore says so on first use

    async def frozen() -> Any:
        # aiobotocore's refreshable credentials answer with a coroutine, static ones do not.
        current = credentials.get_frozen_credentials()
        return await current if inspect.isawaitable(current) else current

    def lean(service: Service, fallback: Any, endpoint: str | None, *, long_poll: bool) -> Any:
        default = f"https://{service.signing_name}.{settings.aws_region}.amazonaws.com"
        url = (endpoint or default).rstrip("/") + "/"
        http = Http1Pool(
            url,
            limit=pool_size,
            connect_timeout_s=settings.aws_connect_timeout_s,
            read_timeout_s=_read_timeout_s(settings, long_poll=long_poll),
        )
        stack.callback(http.close)
        return LeanClient(
            service,
            fallback,
            http,
            url=url,
            region=settings.aws_region,
            credentials=frozen,
            max_attempts=settings.aws_max_attempts,
            on_request=lambda operation: AWS_REQUESTS.update((operation,)),
        )

    # Same methods, same answers, same exceptions: typed as the clients they stand in for.
    return AwsClients(
        sqs=cast(SQSClient, lean(SQS, sqs, settings.sqs_endpoint_url or settings.aws_endpoint_url, long_poll=True)),
        dynamodb=cast(
            DynamoDBClient,
            lean(DYNAMODB, dynamodb, settings.dynamodb_endpoint_url or settings.aws_endpoint_url, long_poll=False),
        ),
    )
