"""One typed settings object, read once from ``TRIGGERS_*`` environment variables.

Every field documents itself; ``triggers config`` prints the list. Values come from the
environment only: there is no settings file to drift from what the process really uses.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec

ENV_PREFIX = "TRIGGERS_"


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Configuration of every Triggers process. Field ``foo_bar`` is ``TRIGGERS_FOO_BAR``."""

    # --- AWS -------------------------------------------------------------------------------
    aws_endpoint_url: Annotated[
        str | None,
        _doc(
            "AWS endpoint for SQS and DynamoDB (moto, LocalStack). Unset: real AWS, or the "
            "endpoint of a running `triggers up` on this machine."
        ),
    ] = None
    sqs_endpoint_url: Annotated[
        str | None, _doc("SQS endpoint only, overriding TRIGGERS_AWS_ENDPOINT_URL for SQS.")
    ] = None
    dynamodb_endpoint_url: Annotated[
        str | None, _doc("DynamoDB endpoint only, overriding TRIGGERS_AWS_ENDPOINT_URL for DynamoDB.")
    ] = None
    aws_region: Annotated[str, _doc("AWS region.")] = "us-east-1"
    aws_max_attempts: Annotated[
        int, _doc("Attempts per AWS call, botocore 'standard' retry mode (throttling, 5xx).")
    ] = 3
    aws_connect_timeout_s: Annotated[float, _doc("Connect timeout of AWS calls, seconds.")] = 2.0
    aws_read_timeout_s: Annotated[
        float, _doc("Read timeout of AWS calls, seconds (long polls add their own wait).")
    ] = 10.0

    # --- resources -------------------------------------------------------------------------
    resource_prefix: Annotated[
        str, _doc("Prefix of every queue and table name, so several stacks share an account.")
    ] = "triggers"
    queue_visibility_timeout_s: Annotated[
        int,
        _doc(
            "Visibility timeout of the events queue: how long a received message stays hidden. "
            "Must exceed the writer's worst batch time."
        ),
    ] = 60
    queue_max_receive_count: Annotated[int, _doc("Receives before SQS moves a message to the dead-letter queue.")] = 5
    queue_retention_s: Annotated[int, _doc("How long SQS keeps a message (both queues).")] = 1_209_600
    event_retention_s: Annotated[int, _doc("How long an acknowledged event stays readable by id (DynamoDB TTL).")] = (
        7 * 24 * 3600
    )

    # --- ingest ----------------------------------------------------------------------------
    dedup_window_s: Annotated[int, _doc("Deduplication window: copies received within it are one event.")] = 300
    max_payload_bytes: Annotated[int, _doc("Largest encoded `payload` of one event.")] = 256 * 1024
    max_body_bytes: Annotated[int, _doc("Largest body of POST /events.")] = 512 * 1024
    body_timeout_s: Annotated[
        float, _doc("Longest the ingest edge waits for a whole request body before answering 408.")
    ] = 10.0
    default_rate_limit_per_minute: Annotated[
        int, _doc("Events per minute for a key created without its own limit.")
    ] = 6000
    ingest_instances: Annotated[
        int,
        _doc(
            "How many ingest instances share each key's rate limit. Each instance allows "
            "limit / instances, so the account-wide limit holds behind a load balancer."
        ),
    ] = 1
    enqueue_linger_ms: Annotated[
        float,
        _doc(
            "How long the SQS batcher waits for more events before sending. Longer packs "
            "more events per SQS request; it adds at most this much latency."
        ),
    ] = 4.0
    enqueue_max_waiting_events: Annotated[
        int, _doc("Events waiting for SQS, per ingest process, beyond which requests get 503 at once.")
    ] = 20_000
    enqueue_max_waiting_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=16 * 1024 * 1024,
            description=(
                "Bytes of encoded events waiting for SQS or being sent, per ingest process, beyond "
                "which requests get 503 at once: the edge's memory bound, whatever the event sizes. "
                "At least 16 MiB, so a full batch (5 MiB body, escapes included) always fits."
            ),
        ),
    ] = 64 * 1024 * 1024
    enqueue_timeout_s: Annotated[
        float,
        _doc("Deadline of one SQS send; its requests then get 503 (a request waits at most about twice this)."),
    ] = 5.0

    # --- keys ------------------------------------------------------------------------------
    key_cache_ttl_s: Annotated[
        float,
        _doc(
            "How long a verified key is trusted before its record is read again; a revoked or "
            "deactivated key stops working within this time."
        ),
    ] = 30.0
    key_cache_max_entries: Annotated[int, _doc("Most keys held in the verified-key cache.")] = 10_000
    bcrypt_rounds: Annotated[int, _doc("bcrypt cost of newly created keys.")] = 12
    auth_failures_per_minute: Annotated[
        int,
        _doc(
            "Failed authentications one client may make per minute (burst the same) before "
            "its requests get 429 without any key check: bcrypt is too costly to offer freely."
        ),
    ] = 30
    trusted_proxy_hops: Annotated[
        int,
        _doc(
            "Proxies in front of the services that append to X-Forwarded-For (1 behind an "
            "ALB). 0: the client is the TCP peer. Decides who 'one client' is for the above."
        ),
    ] = 0

    # --- writer ----------------------------------------------------------------------------
    writer_receivers: Annotated[int, _doc("Concurrent long-poll receive loops per writer process.")] = 4
    writer_wait_time_s: Annotated[int, _doc("SQS long-poll wait, seconds (0 to 20).")] = 20
    writer_shutdown_grace_s: Annotated[
        float, _doc("On SIGTERM, how long in-flight batches may take before being given back.")
    ] = 10.0
    metrics_port: Annotated[
        int | None, _doc("Port of the writer's /metrics (the HTTP services serve it themselves).")
    ] = None
    counter_shards: Annotated[
        int,
        _doc(
            "Most shards an undelivered-count counter spreads over when writes to one account "
            "contend (one shard otherwise). A count is one consistent Query however many exist."
        ),
    ] = 8

    # --- inbox -----------------------------------------------------------------------------
    inbox_shards: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=64,
            description=(
                "Partitions each account's inbox indexes are spread over. One partition takes "
                "about 1,000 writes/s; S shards take S times that, and a page queries all S. "
                "Only ever raise it: events stay in the shard they were written to."
            ),
        ),
    ] = 1
    inbox_settle_ms: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            description=(
                "A page shows an event once its inbox position (the writer's clock when it stored "
                "it) is this much in the past. It covers the time from the writer's stamp to the "
                "index showing the event (commit, index propagation), plus clock differences "
                "between hosts, so a consumer paging forward never passes an event stored late. "
                "A commit slower than a quarter of it is re-stamped. Same value on writers and inboxes."
            ),
        ),
    ] = 3000
    cursor_secret: Annotated[
        str,
        _doc(
            "HMAC secret that signs inbox cursors (16 characters or more). Set the same value on "
            "every inbox instance. Unset (or a value published in this repository), the inbox "
            "starts only when its DynamoDB endpoint and TRIGGERS_HOST are both loopback addresses."
        ),
    ] = ""
    inbox_requests_per_minute: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            description=(
                "Requests per minute one key may make to the inbox (token bucket, burst the same); "
                "every authenticated answer carries X-RateLimit-* headers, 429 beyond it."
            ),
        ),
    ] = 1200
    inbox_instances: Annotated[
        int,
        msgspec.Meta(
            ge=1, description="How many inbox instances share each key's inbox limit (each allows limit / instances)."
        ),
    ] = 1
    inbox_wait_poll_ms: Annotated[
        int,
        msgspec.Meta(
            ge=50,
            le=5000,
            description=(
                "How often an inbox process reads the counts of each consumer someone waits on "
                "(wait_s): one Query per consumer per poll, however many requests wait on it. "
                "A waiting claim answers within about this much of an event's storage."
            ),
        ),
    ] = 250
    inbox_waits_per_key: Annotated[
        int,
        msgspec.Meta(
            ge=1, description="Requests one key may have waiting (wait_s) on one inbox instance at once; 429 beyond."
        ),
    ] = 50

    # --- consumers (docs/architecture.md, "Consumers") -----------------------------------
    consumers_per_account: Annotated[
        int, msgspec.Meta(ge=1, le=1000, description="Most named consumers one account may have (`default` aside).")
    ] = 20
    consumer_view_s: Annotated[
        float,
        msgspec.Meta(
            gt=0,
            le=60,
            description=(
                "Longest a writer uses its view of an account's consumers before reading it again: "
                "a new consumer, a filter change or a deletion reaches every writer within this. "
                "Same value on writers and inboxes."
            ),
        ),
    ] = 2.0
    consumer_margin_s: Annotated[
        float,
        msgspec.Meta(
            ge=0,
            description=(
                "Added to TRIGGERS_CONSUMER_VIEW_S before a new consumer's backfill (or a deleted "
                "one's clean-up) starts: the longest a writer's commit may take, plus clock "
                "differences between hosts."
            ),
        ),
    ] = 30.0
    backfill_events_per_s: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            description=(
                "Events per second one consumer job (backfill, clean-up) handles, per inbox "
                "process running it: it never takes an account's partitions from its writers."
            ),
        ),
    ] = 2000
    job_poll_s: Annotated[
        float, msgspec.Meta(gt=0, description="How often each inbox process looks for a consumer job to run.")
    ] = 2.0

    # --- HTTP and logging ------------------------------------------------------------------
    host: Annotated[str, _doc("Address the HTTP services bind to.")] = "127.0.0.1"
    ingest_port: Annotated[int, _doc("Port of the ingest API.")] = 8000
    inbox_port: Annotated[int, _doc("Port of the inbox API.")] = 8001
    admin_port: Annotated[
        int | None,
        _doc(
            "Port of this HTTP service's /metrics, /ready and /status, apart from the public "
            "listener (the load balancer must not route it). `triggers run ingest|inbox` sets it "
            "from --admin-port, default the service's port + 1000; 0: none."
        ),
    ] = None
    admin_host: Annotated[
        str,
        _doc(
            "Address the admin listener binds to. Loopback by default, whatever TRIGGERS_HOST is: "
            "a load balancer's health check or a scraper on another host needs it set (the "
            "services template sets 0.0.0.0, its security group admitting the load balancer only)."
        ),
    ] = "127.0.0.1"
    log_level: Annotated[str, _doc("Lowest log level written (DEBUG, INFO, WARNING...).")] = "INFO"
    log_json: Annotated[bool, _doc("JSON log lines (true) or human-readable console (false).")] = True

    @property
    def events_queue(self) -> str:
        return f"{self.resource_prefix}-events"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.resource_prefix}-events-dlq"

    @property
    def events_table(self) -> str:
        return f"{self.resource_prefix}-events"

    @property
    def keys_table(self) -> str:
        return f"{self.resource_prefix}-keys"

    @property
    def dedup_table(self) -> str:
        return f"{self.resource_prefix}-dedup"

    @property
    def counters_table(self) -> str:
        # "-counts", not "-counters": the key schema changed (a sort key per shard), which a
        # table cannot do in place. `triggers migrate-counters` carries the old table over.
        return f"{self.resource_prefix}-counts"

    @property
    def consumers_table(self) -> str:
        return f"{self.resource_prefix}-consumers"

    @property
    def legacy_counters_table(self) -> str:
        """The counters table of versions before the shard sort key (one item per shard)."""
        return f"{self.resource_prefix}-counters"


# Signs cursors only where every endpoint is on this machine: published in the source, it
# would let anyone forge cursors of a real deployment.
LOCAL_CURSOR_SECRET = "local-development-cursor-secret"  # noqa: S105 - documented local default
MIN_CURSOR_SECRET_CHARS = 16
# Every value this repository ever showed as a cursor secret: refused like an unset one.
PUBLISHED_CURSOR_SECRETS = frozenset({LOCAL_CURSOR_SECRET, "change-me-for-anything-but-local-use"})


def is_local_endpoint(url: str | None) -> bool:
    """Whether ``url`` names this machine (loopback); None (real AWS) is not local."""
    if not url:
        return False
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback; 0.0.0.0 is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def inbox_cursor_secret(settings: Settings) -> str:
    """The secret the inbox signs cursors with; SystemExit when a deployment lacks one.

    A random per-process secret would let the inbox start, but a cursor made by one
    instance would be refused by the others (and by itself after a restart): refusing to
    start says what is wrong at once.
    """
    secret = settings.cursor_secret
    if secret and secret not in PUBLISHED_CURSOR_SECRETS:
        if len(secret) < MIN_CURSOR_SECRET_CHARS:
            raise SystemExit(
                f"invalid configuration: TRIGGERS_CURSOR_SECRET needs {MIN_CURSOR_SECRET_CHARS} characters or more"
            )
        return secret
    # Local use is where no one else can reach the inbox nor its data: both the DynamoDB
    # endpoint and the address the inbox listens on are this machine's. A local endpoint
    # alone is not enough: an inbox on 0.0.0.0 next to DynamoDB Local still serves the network.
    if is_local_endpoint(settings.dynamodb_endpoint_url or settings.aws_endpoint_url) and is_loopback_host(
        settings.host
    ):
        return secret or LOCAL_CURSOR_SECRET
    what = "is one published in this repository" if secret else "is not set"
    raise SystemExit(
        f"invalid configuration: TRIGGERS_CURSOR_SECRET {what}; set a random value of "
        f"{MIN_CURSOR_SECRET_CHARS} characters or more (the same on every inbox instance). Only an "
        "inbox whose DynamoDB endpoint and TRIGGERS_HOST are both loopback may run without one"
    )


def field_docs() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) of every setting."""
    rows = []
    for field in msgspec.structs.fields(Settings):
        meta = getattr(field.type, "__metadata__", ())
        description = next((m.description for m in meta if isinstance(m, msgspec.Meta)), "")
        rows.append((ENV_PREFIX + field.name.upper(), repr(field.default), description or ""))
    return rows


def settings_from_env(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default ``os.environ``); strings are converted by type."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for name in Settings.__struct_fields__:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            raw[name] = value
    try:
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SystemExit(f"invalid configuration: {exc}") from exc


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return settings_from_env()
