"""AWS client construction: one place decides timeouts, retries and local credentials.

Clients are async context managers; services open them in their lifespan (or an
``AsyncExitStack``), never at import time.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import ssl
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, cast

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.credentials import Credentials

from shared.aws.dynamodb import LeanDynamoDB
from shared.aws.http1 import Http1Pool
from shared.aws.lean import DYNAMODB, SQS, CredentialsSource, LeanTransport, Service, no_credentials
from shared.aws.sqs import LeanSqs
from shared.observability.metrics import AWS_REQUESTS_SENT
from shared.settings import Settings

if TYPE_CHECKING:  # types-aiobotocore is a development dependency: types only
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_sqs import SQSClient

# Any non-empty credentials satisfy moto and LocalStack; real AWS uses the normal chain.
_LOCAL_CREDENTIALS = ("local", "local")

try:
    _VERSION = version("triggers-api")
except PackageNotFoundError:  # running from a source tree never installed
    _VERSION = "0.0.0"
# What the lean transport sends before botocore's own User-Agent: AWS-side request logs
# (CloudTrail data events, support cases) tell the lean calls and their version apart.
LEAN_USER_AGENT_PREFIX = f"triggers-api/{_VERSION} lean"


@dataclass(frozen=True, slots=True)
class AwsClients:
    """The two clients: typed hot operations on the lean transport, ``.admin`` for the rest."""

    sqs: LeanSqs
    dynamodb: LeanDynamoDB


# AWS requests this process sent, by "service.Operation" (retries included): the cost
# figures of benchmarks and the writer's shutdown summary come from here.
AWS_REQUESTS: Counter[str] = Counter()


def _counted(operation: str) -> None:
    AWS_REQUESTS[operation] += 1
    AWS_REQUESTS_SENT.labels(operation).inc()  # the same, on /metrics (benchmarks read it there too)


def _count_request(event_name: str, **_: object) -> None:
    # event_name is "before-send.<service>.<Operation>"
    _counted(event_name.split(".", 1)[1])


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
    credentials = await _credentials_source(session, settings)
    tls = tls_context(session)

    def transport(service: Service, client: SQSClient | DynamoDBClient, *, long_poll: bool) -> LeanTransport:
        # The endpoint botocore resolved for the client (settings, AWS_ENDPOINT_URL_<SERVICE>,
        # the config file, FIPS and dual-stack flags, the region's partition): hot and cold
        # calls of one client go to one place.
        url = client.meta.endpoint_url.rstrip("/") + "/"
        http = Http1Pool(
            url,
            limit=pool_size,
            connect_timeout_s=settings.aws_connect_timeout_s,
            read_timeout_s=_read_timeout_s(settings, long_poll=long_poll),
            ssl_context=tls,
        )
        stack.callback(http.close)
        return LeanTransport(
            service,
            http,
            url=url,
            region=client.meta.region_name,
            credentials=credentials,
            max_attempts=settings.aws_max_attempts,
            on_request=_counted,
            user_agent=f"{LEAN_USER_AGENT_PREFIX} {botocore_user_agent(client)}",
        )

    return AwsClients(
        sqs=LeanSqs(transport(SQS, sqs, long_poll=True), sqs),
        dynamodb=LeanDynamoDB(transport(DYNAMODB, dynamodb, long_poll=False), dynamodb),
    )


def tls_context(session: AioSession) -> ssl.SSLContext | None:
    """How the lean pool verifies https endpoints: the CA bundle botocore would use
    (``AWS_CA_BUNDLE`` or a profile's ``ca_bundle``, as its ``ca_bundle`` setting resolves),
    else the system's trust store (None). A deployment behind a TLS-inspecting proxy sets
    one for both kinds of call at once."""
    bundle = session.get_config_variable("ca_bundle")
    return ssl.create_default_context(cafile=bundle) if bundle else None


def botocore_user_agent(client: SQSClient | DynamoDBClient) -> str:
    """The User-Agent botocore sends for ``client`` (session, SDK, OS, language, config), as
    it stands when the client is made.

    botocore keeps its builder on the client as ``_user_agent_creator`` (since botocore 1.31;
    the aiobotocore range in pyproject.toml bounds the botocore it brings)."""
    return str(cast(Any, client)._user_agent_creator.to_string())


async def _credentials_source(session: AioSession, settings: Settings) -> CredentialsSource:
    """Where the lean transports take their credentials from, frozen per call."""
    key_id, secret = _credentials(settings)
    credentials: Any = Credentials(key_id, secret) if key_id and secret else await session.get_credentials()
    if credentials is None:
        return no_credentials  # as aiobotocore does: every call raises NoCredentialsError

    async def frozen() -> Any:
        # aiobotocore's refreshable credentials answer with a coroutine, static ones do not.
        current = credentials.get_frozen_credentials()
        return await current if inspect.isawaitable(current) else current

    return frozen
