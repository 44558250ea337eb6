"""Session fixtures: the servers `triggers up` runs by default (SQS on a moto server, DynamoDB on
DynamoDB Local), each one process, and the project's services as real processes.

Every test gets its own account (and so its own inbox), so tests share the servers without
sharing data.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shared.aws.clients import open_clients
from shared.keys.admin import create_key, new_account_id
from shared.keys.model import Scope
from shared.keys.store import DynamoKeyStore
from shared.local import dynamodb_local as dynamodb_local_server
from shared.local import processes
from shared.ops.resources import ensure_resources
from shared.settings import Settings, settings_from_env
from tests.faults import SUMMARIES

SERVICE_START_TIMEOUT_S = 30.0
# Settings that point a process's DynamoDB at the discard port (nothing listens: every call
# is refused at once) and give up after one attempt: DynamoDB "down", quickly.
BROKEN_DYNAMODB = {"TRIGGERS_DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:9", "TRIGGERS_AWS_MAX_ATTEMPTS": "1"}


@dataclass(frozen=True)
class Stack:
    """Where the test session's servers listen, and the environment that reaches them."""

    settings: Settings
    env: dict[str, str]
    logs: Path  # each service writes its log lines to <logs>/<part>-<port>.log


def init_resources(settings: Settings) -> None:
    """`triggers init`, in process: the queues and tables of ``settings``."""

    async def init() -> None:
        async with open_clients(settings) as clients:
            await ensure_resources(settings, clients)

    asyncio.run(init())


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    process, endpoint = processes.start_moto()
    yield endpoint
    processes.stop([process])


@pytest.fixture(scope="session")
def dynamodb_local_endpoint() -> Iterator[str]:
    process, endpoint = dynamodb_local_server.start()
    yield endpoint
    processes.stop([process])


@pytest.fixture(scope="session")
def stack(moto_endpoint: str, dynamodb_local_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Stack:
    """The default users get from `triggers up`: SQS on moto, DynamoDB on DynamoDB Local."""
    env = {
        # moto for SQS (and for whatever else a test asks of AWS: CloudFormation), DynamoDB
        # Local for DynamoDB; a test that needs DynamoDB's address reads dynamodb_endpoint_url.
        "TRIGGERS_AWS_ENDPOINT_URL": moto_endpoint,
        "TRIGGERS_DYNAMODB_ENDPOINT_URL": dynamodb_local_endpoint,
        "TRIGGERS_RESOURCE_PREFIX": f"t{uuid.uuid4().hex[:8]}",
        "TRIGGERS_BCRYPT_ROUNDS": "4",  # creating keys fast; the cost is not what is tested
        "TRIGGERS_KEY_CACHE_TTL_S": "1",
        "TRIGGERS_WRITER_WAIT_TIME_S": "1",
        "TRIGGERS_WRITER_RECEIVERS": "2",
        "TRIGGERS_WRITER_SHUTDOWN_GRACE_S": "5",
        "TRIGGERS_STATE_DIR": str(tmp_path_factory.mktemp("state")),
        "TRIGGERS_LOG_LEVEL": "INFO",
        # Many tests send bad keys from this one address on purpose.
        "TRIGGERS_AUTH_FAILURES_PER_MINUTE": "10000",
        # Pages show events at once: these tests read right after storing, one step at a time.
        # The paging tests that race writers set a margin of their own (test_paging_property).
        "TRIGGERS_INBOX_SETTLE_MS": "0",
        # Tests poll the inbox in tight loops (wait_until); tests/e2e/test_auth.py checks the limit.
        "TRIGGERS_INBOX_REQUESTS_PER_MINUTE": "1000000",
    }
    settings = settings_from_env(env)
    init_resources(settings)
    logs = Path(os.environ.get("TRIGGERS_TEST_LOGS") or tmp_path_factory.mktemp("logs"))
    logs.mkdir(parents=True, exist_ok=True)
    return Stack(settings, env, logs)


def _tables_of_their_own(stack: Stack, prefix: str, **env: str) -> Stack:
    env = {**stack.env, "TRIGGERS_RESOURCE_PREFIX": f"{prefix}{uuid.uuid4().hex[:8]}", **env}
    settings = settings_from_env(env)
    init_resources(settings)
    return Stack(settings, env, stack.logs)


@pytest.fixture(scope="session")
def moto_stack(stack: Stack) -> Stack:
    """The fallback of `triggers up` with no Java: SQS and DynamoDB both on the moto server."""
    return _tables_of_their_own(stack, "m", TRIGGERS_DYNAMODB_ENDPOINT_URL="")


# DynamoDB Local runs its background jobs on 10 threads per database (one database per
# access key and region): 3 schedulers, and one job per table with TTL that never ends. Past 7
# such tables an index added by UpdateTable stays CREATING for good (seen: the session's and
# private stacks' tables starved test_inbox_upgrade). The data-layer tests, which add indexes,
# get a database of their own: another region, on the same process.
DATA_LAYER_REGION = "eu-west-1"


@pytest.fixture(scope="session")
def dynamodb_local(stack: Stack) -> Stack:
    """DynamoDB Local for the data-layer tests alone: their own database, queues on moto."""
    return _tables_of_their_own(stack, "d", TRIGGERS_AWS_REGION=DATA_LAYER_REGION)


@pytest.fixture(params=["moto", "dynamodb_local"])
def data_stack(request: pytest.FixtureRequest) -> Stack:
    """For tests of the data layer alone: each runs on moto (the fallback) and on DynamoDB Local."""
    chosen: Stack = request.getfixturevalue("moto_stack" if request.param == "moto" else "dynamodb_local")
    return chosen


def private_stack(stack: Stack, **overrides: str) -> Stack:
    """Queues and tables of a test's own (new prefix) on the session's servers.

    For tests that kill, break or flood writers: they must not disturb the session's.
    ``overrides`` are settings by field name, e.g. ``queue_max_receive_count="2"``.
    """
    env = {
        **stack.env,
        "TRIGGERS_RESOURCE_PREFIX": f"p{uuid.uuid4().hex[:8]}",
        **{f"TRIGGERS_{name.upper()}": value for name, value in overrides.items()},
    }
    settings = settings_from_env(env)
    init_resources(settings)
    return Stack(settings, env, stack.logs)


def run_triggers(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `triggers` CLI against the test stack, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "shared.ops.cli", *args],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


@dataclass
class Service:
    url: str
    process: subprocess.Popen[bytes]
    admin_url: str = ""  # /metrics, /ready, /status of an HTTP service, apart from the public port


def start_service(stack: Stack, part: str, extra_env: dict[str, str] | None = None) -> Service:
    port = processes.free_port()
    admin_port = processes.free_port()
    args = [sys.executable, "-m", "shared.ops.cli", "run", part]
    if part != "writer":
        args += ["--port", str(port), "--admin-port", str(admin_port)]
    log = (stack.logs / f"{part}-{port}.log").open("ab")
    process = processes.spawn(args, {**stack.env, **(extra_env or {})}, output=log)
    log.close()  # the child holds its own descriptor
    url = f"http://127.0.0.1:{port}"
    if part != "writer":
        processes.wait_http(f"{url}/status", SERVICE_START_TIMEOUT_S, process)
        return Service(url, process, f"http://127.0.0.1:{admin_port}")
    return Service(url, process)


@pytest.fixture(scope="session")
def ingest(stack: Stack) -> Iterator[Service]:
    service = start_service(stack, "ingest")
    yield service
    processes.stop([service.process])


@pytest.fixture(scope="session")
def inbox(stack: Stack) -> Iterator[Service]:
    service = start_service(stack, "inbox")
    yield service
    processes.stop([service.process])


@pytest.fixture(scope="session")
def writer(stack: Stack) -> Iterator[Service]:
    service = start_service(stack, "writer")
    yield service
    processes.stop([service.process])


@dataclass(frozen=True)
class ApiKey:
    key: str
    key_id: str
    account_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_key(
    stack: Stack,
    scopes: frozenset[Scope] = frozenset(Scope),
    *,
    account_id: str | None = None,
    rate_limit: int = 100_000,
) -> ApiKey:
    async def create() -> ApiKey:
        async with open_clients(stack.settings) as clients:
            key, record = await create_key(
                DynamoKeyStore(clients.dynamodb, stack.settings.keys_table),
                account_id=account_id or new_account_id(),
                scopes=scopes,
                rate_limit_per_minute=rate_limit,
                bcrypt_rounds=4,
            )
        return ApiKey(key, record.key_id, record.account_id)

    return asyncio.run(create())


@pytest.fixture
def api_key(stack: Stack) -> ApiKey:
    """A fresh account with a key holding both scopes."""
    return make_key(stack)


@pytest.fixture
def key_factory(stack: Stack) -> Callable[..., ApiKey]:
    return lambda *args, **kwargs: make_key(stack, *args, **kwargs)


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


def wait_until(predicate: Callable[[], object], timeout_s: float = 15.0, interval_s: float = 0.1) -> object:
    """Poll an eventually-true condition (the writer is asynchronous); its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def queue_counts(stack: Stack, queue: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue of ``stack``."""

    async def read() -> tuple[int, int]:
        async with open_clients(stack.settings) as clients:
            url = (await clients.sqs.admin.get_queue_url(QueueName=queue))["QueueUrl"]
            attributes = (
                await clients.sqs.admin.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )
            )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])

    return asyncio.run(read())


ROOT = Path(__file__).resolve().parent.parent


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault-injection suite's figures, one line per fault (tests/e2e/test_fault_injection.py)."""
    if SUMMARIES:
        terminalreporter.section("fault injection")
        for summary in SUMMARIES:
            terminalreporter.write_line(summary.line())
