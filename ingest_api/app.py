"""The ingest service: ``create_app()`` wires routes, errors, logging and AWS clients."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from litestar import Litestar, Request, Response, post
from litestar.response.base import ASGIResponse

from ingest_api import openapi
from ingest_api.batcher import SQS_MAX_REQUEST_BYTES, SqsBatcher
from ingest_api.schemas import Accepted, BatchIn, BatchItem, BatchResult, EventIn, ItemError
from ingest_api.service import AcceptedEvent, IngestService
from shared.aws.clients import AwsClients, open_clients
from shared.errors import AppError, ErrorDetail, RateLimited, ValidationError
from shared.keys.authenticator import Authenticator, build_authenticator
from shared.keys.model import KeyRecord, Scope
from shared.keys.store import DynamoKeyStore
from shared.observability.logging import configure_logging
from shared.observability.metrics import EVENTS_ACCEPTED, EVENTS_REFUSED
from shared.settings import Settings, get_settings
from shared.web.body import BodyDeadlines
from shared.web.decoding import decode_json, require_json
from shared.web.http import (
    EXCEPTION_HANDLERS,
    STATE_EXTRA_HEADERS,
    client_address,
    health_handlers,
    json_answer,
    refuse_unknown_query,
    request_id_of,
    with_request_context,
    worker_startup,
)
from shared.web.openapi import openapi_handler
from shared.web.ratelimit import RateLimiter

log = structlog.get_logger()

MAX_BATCH_BODY_BYTES = 5 * 1024 * 1024
_batch_decoder = msgspec.json.Decoder(BatchIn)


@dataclass(frozen=True, slots=True)
class IngestContext:
    clients: AwsClients
    queue_url: str
    auth: Authenticator
    limiter: RateLimiter
    proxy_hops: int
    service: IngestService
    max_body_bytes: int
    bodies: BodyDeadlines


_WANTED_HEADERS = frozenset({b"authorization", b"content-type", b"idempotency-key", b"content-length"})
_STATE_HEADERS = "ingest_headers"


def _wanted_headers(request: Request[Any, Any, Any]) -> dict[bytes, str]:
    """The headers the edge reads, found in one pass over the raw ASGI headers (as
    latin-1, which keeps every byte: ``_idempotency_header`` reads its own as UTF-8).

    Litestar's ``request.headers`` builds a multidict of every header on each access; the
    hot path needs three values.
    """
    state = request.scope["state"]
    found: dict[bytes, str] | None = state.get(_STATE_HEADERS)
    if found is None:
        found = {k: v.decode("latin-1") for k, v in request.scope["headers"] if k in _WANTED_HEADERS}
        state[_STATE_HEADERS] = found
    return found


def _context(request: Request[Any, Any, Any]) -> IngestContext:
    context: IngestContext = request.app.state.ingest
    return context


async def _authenticate(request: Request[Any, Any, Any]) -> KeyRecord:
    """The caller's key (401/403/429 otherwise); then 400 for any query parameter (the
    ingest routes take none)."""
    context = _context(request)
    client = client_address(request.scope, context.proxy_hops)
    key = await context.auth.authenticate(_wanted_headers(request).get(b"authorization"), Scope.INGEST, client)
    # The bucket as it stands (taking nothing), so that every authenticated answer, a 400
    # or 413 before any token is taken included, carries the rate headers.
    decision = context.limiter.take(key.key_id, key.rate_limit_per_minute, 0)
    request.scope["state"][STATE_EXTRA_HEADERS] = decision.headers()
    refuse_unknown_query(request.scope)
    return key


def _idempotency_header(request: Request[Any, Any, Any]) -> str | None:
    """The Idempotency-Key header as UTF-8 text, so that a key sent in the header and the
    same key in a body (JSON: UTF-8) are one key; 400 naming the header if not UTF-8."""
    value = _wanted_headers(request).get(b"idempotency-key")
    if value is None or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        message = "Must be UTF-8 text."
        raise ValidationError(
            f"Invalid Idempotency-Key header: {message}", [ErrorDetail("Idempotency-Key", message)]
        ) from None


async def _json_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """The body of a request declared as JSON (415 otherwise), within ``limit`` bytes (413)."""
    headers = _wanted_headers(request)
    require_json(headers.get(b"content-type"))
    return await _context(request).bodies.read(request.receive, headers.get(b"content-length"), limit)


def _take_tokens(request: Request[Any, Any, Any], key: KeyRecord, event_count: int) -> None:
    """Rate limits count events, refused ones too: tokens are taken before any event is
    checked, so that checking costs only its sender. The rate headers go on every
    authenticated answer."""
    decision = _context(request).limiter.take(key.key_id, key.rate_limit_per_minute, event_count)
    request.scope["state"][STATE_EXTRA_HEADERS] = decision.headers()
    if not decision.allowed:
        raise RateLimited(decision.retry_after_s)


@post("/events", status_code=202, tags=["ingest"], summary="Send one event")
async def post_event(request: Request[Any, Any, Any]) -> ASGIResponse:  # body: Accepted
    try:
        accepted = await _accept_one(request)
    except AppError as exc:
        EVENTS_REFUSED.labels(exc.error_code).inc()
        raise
    EVENTS_ACCEPTED.inc()
    return json_answer(accepted, 202)


async def _accept_one(request: Request[Any, Any, Any]) -> Accepted:
    context = _context(request)
    key = await _authenticate(request)
    body = await _json_body(request, context.max_body_bytes)
    _take_tokens(request, key, 1)
    event = context.service.parse_event(body, header_key=_idempotency_header(request))
    (outcome,) = await context.service.accept(key, [event], request_id_of(request.scope))
    if isinstance(outcome, AppError):
        raise outcome
    return Accepted(outcome.event_id, "accepted", outcome.received_at)


@post(
    "/events/batch",
    tags=["ingest"],
    summary="Send up to 500 events; one result per event, in order",
)
async def post_batch(request: Request[Any, Any, Any]) -> Response[BatchResult]:
    try:
        results = await _accept_batch(request)
    except AppError as exc:
        EVENTS_REFUSED.labels(exc.error_code).inc()
        raise
    for result in results:
        if result.error is None:
            EVENTS_ACCEPTED.inc()
        else:
            EVENTS_REFUSED.labels(result.error.error_code).inc()
    all_ok = all(r.error is None for r in results)
    return Response(BatchResult(results), status_code=202 if all_ok else 207)


async def _accept_batch(request: Request[Any, Any, Any]) -> list[BatchItem]:
    context = _context(request)
    key = await _authenticate(request)
    batch = decode_json(_batch_decoder, await _json_body(request, MAX_BATCH_BODY_BYTES))
    _take_tokens(request, key, len(batch.events))
    parsed = await context.service.parse_batch(batch.events)
    valid = [p for p in parsed if isinstance(p, EventIn)]
    accepted = iter(await context.service.accept(key, valid, request_id_of(request.scope)) if valid else [])
    return [_batch_item(next(accepted) if isinstance(p, EventIn) else p) for p in parsed]


def _batch_item(outcome: AcceptedEvent | AppError) -> BatchItem:
    if isinstance(outcome, AcceptedEvent):
        return BatchItem(event_id=outcome.event_id, status="accepted")
    return BatchItem(error=ItemError(outcome.status, outcome.error_code, outcome.message, outcome.details))


async def _queue_message_limit(clients: AwsClients, queue_url: str) -> int:
    """The queue's MaximumMessageSize: queues made before SQS raised its default to 1 MiB
    keep 256 KiB, and the edge sizes its messages (and the largest payload) to fit."""
    attributes = await clients.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["MaximumMessageSize"])
    limit = int(attributes.get("Attributes", {}).get("MaximumMessageSize", SQS_MAX_REQUEST_BYTES))
    if limit < SQS_MAX_REQUEST_BYTES:
        log.warning("queue_message_limit_below_1_mib", maximum_message_size=limit)
    return limit


async def _ready(app: Litestar) -> None:
    context: IngestContext = app.state.ingest
    await context.clients.sqs.get_queue_attributes(QueueUrl=context.queue_url, AttributeNames=["QueueArn"])


def _lifespan(settings: Settings) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_clients(settings) as clients:
            queue_url = (await clients.sqs.get_queue_url(QueueName=settings.events_queue))["QueueUrl"]
            message_limit = await _queue_message_limit(clients, queue_url)
            batcher = SqsBatcher(
                clients.sqs,
                queue_url,
                linger_s=settings.enqueue_linger_ms / 1000,
                max_waiting_events=settings.enqueue_max_waiting_events,
                max_waiting_bytes=settings.enqueue_max_waiting_bytes,
                send_timeout_s=settings.enqueue_timeout_s,
                max_message_bytes=message_limit,
            )
            await batcher.start()
            bodies = BodyDeadlines(settings.body_timeout_s)
            await bodies.start()
            store = DynamoKeyStore(clients.dynamodb, settings.keys_table)
            app.state.ingest = IngestContext(
                clients=clients,
                queue_url=queue_url,
                auth=build_authenticator(settings, store),
                proxy_hops=settings.trusted_proxy_hops,
                limiter=RateLimiter(share=1 / settings.ingest_instances),
                service=IngestService(
                    batcher,
                    max_payload_bytes=settings.max_payload_bytes,
                    max_message_bytes=batcher.max_event_bytes,
                ),
                max_body_bytes=settings.max_body_bytes,
                bodies=bodies,
            )
            try:
                yield
            finally:
                await bodies.close()
                await batcher.close()  # flush what was accepted before the clients close

    return lifespan


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    app = Litestar(
        route_handlers=[post_event, post_batch, *health_handlers(_ready), openapi_handler(openapi.document())],
        lifespan=[_lifespan(settings)],
        on_startup=[worker_startup],
        exception_handlers=EXCEPTION_HANDLERS,
        # The edge reads its bodies itself (shared/web/body.py, same limits); this guards any other route.
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,  # the document is written out: shared/web/openapi.py
        logging_config=None,  # shared.observability.logging owns logging: one JSON renderer for everything
    )
    return with_request_context(app)
