"""``triggers``: the operators' command line. Every command has ``--help``."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import msgspec

from shared.aws.clients import AwsClients, open_clients
from shared.errors import KeyNotFound
from shared.keys.admin import check_account_id, create_key, new_account_id
from shared.keys.model import KeyRecord, KeyStatus, Scope
from shared.keys.store import DynamoKeyStore
from shared.local import embedded, processes
from shared.ops.dlq import DeadLetterQueue, ReplayFilter, ReplayReport
from shared.ops.migrate import migrate_counters, migrate_inbox_positions
from shared.ops.resources import ensure_resources
from shared.settings import Settings, field_docs, get_settings, inbox_cursor_secret

T = TypeVar("T")
SERVICE_START_TIMEOUT_S = 30.0
EMBEDDED_LINGER_MS = 25


def _with_clients(settings: Settings, action: Callable[[AwsClients], Awaitable[T]]) -> T:
    async def run() -> T:
        async with open_clients(settings, pool_size=8) as clients:
            return await action(clients)

    return asyncio.run(run())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Triggers API: event ingestion (HTTP -> SQS -> writer -> DynamoDB inbox).

    Configuration comes from TRIGGERS_* environment variables; `triggers config` lists them.
    """
    if click.get_current_context().invoked_subcommand != "up":  # `up` starts an endpoint of its own
        _use_embedded_endpoint()


def _use_embedded_endpoint() -> None:
    """With no endpoint configured, use the one a running `triggers up` wrote down.

    Settings read the environment only; this command line is what hands the local endpoint
    to itself and to every process it starts, by setting the variable they all read.
    """
    variable = "TRIGGERS_AWS_ENDPOINT_URL"
    if not os.environ.get(variable):
        endpoint = embedded.read_embedded_endpoint()
        if endpoint is not None:
            os.environ[variable] = endpoint


@main.command()
def config() -> None:
    """List every setting: environment variable, default and meaning."""
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
    _supervise(children)


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
@click.option("--moto-port", type=int, help="Port of the embedded AWS endpoint (default: a free one).")
def up(moto_port: int | None) -> None:
    """Run everything locally: embedded AWS endpoint, resources, a dev key, all services.

    With TRIGGERS_AWS_ENDPOINT_URL set (LocalStack, real AWS...), no embedded endpoint starts.
    Ctrl-C stops everything.
    """
    children: list[subprocess.Popen[bytes]] = []
    endpoint = os.environ.get("TRIGGERS_AWS_ENDPOINT_URL")
    try:
        if not endpoint:
            if importlib.util.find_spec("moto") is None:
                raise click.ClickException(
                    "the embedded endpoint needs the local extra: pip install 'triggers-api[local]'"
                )
            moto, endpoint = processes.start_moto(port=moto_port)
            children.append(moto)
            embedded.write_embedded_endpoint(endpoint)
            click.echo(f"embedded AWS endpoint (moto): {endpoint}")
        settings = msgspec.structs.replace(get_settings(), aws_endpoint_url=endpoint)
        key = _with_clients(settings, lambda c: _prepare(settings, c))
        env = {"TRIGGERS_AWS_ENDPOINT_URL": endpoint}
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
        children[:0] = services  # services stop before the endpoint they use
        for port, process in ((settings.ingest_port, services[0]), (settings.inbox_port, services[1])):
            processes.wait_http(f"http://{settings.host}:{port}/status", SERVICE_START_TIMEOUT_S, process)
        _print_tour(settings, key)
        code = _supervise(children)
    finally:
        processes.stop(children)
        embedded.clear_embedded_endpoint()
    sys.exit(code)


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


if __name__ == "__main__":
    main()
