"""The ingest service: its routes, declared once (``INGEST_ROUTES``: router and OpenAPI
document both come from them), and ``create_app()``, which wires routes, errors, logging and
AWS clients."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from litestar import Litestar, Request, Response
from litestar.response.base import ASGIResponse

from ingest_api.batcher import SQS_MAX_REQUEST_BYTES, SqsBatcher
from ingest_api.schemas import (
    ACCEPTED_EXAMPLE,
    BATCH_ACCEPTED_EXAMPLE,
    BATCH_EXAMPLE,
    EVENT_EXAMPLE,
    MAX_IDEMPOTENCY_KEY_CHARS,
    Accepted,
    BatchIn,
    BatchItem,
    BatchResult,
    EventIn,
    ItemError,
)
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
    VERSION,
    client_address,
    health_routes,
    json_answer,
    request_id_of,
    with_request_context,
    worker_startup,
)
from shared.web.openapi import build_openapi, document_routes, error_example
from shared.web.ratelimit import RateLimiter
from shared.web.routes import Content, Parameter, Refusal, Route, RouteGroup, route_handlers

log = structlog.get_logger()

TITLE = "Triggers ingest API"
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


_WANTED_HEADERS = frozenset({b"authorization", b"content-type", b"idempotency-key", b"content-length", b"expect"})
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


async def _admit(request: Request[Any, Any, Any], scope: Scope) -> KeyRecord:
    """The caller's key (401/403/429 otherwise): the ingest group's check (``INGEST_ROUTES``)."""
    context = _context(request)
    client = client_address(request.scope, context.proxy_hops)
    key = await context.auth.authenticate(_wanted_headers(request).get(b"authorization"), scope, client)
    # The bucket as it stands (taking nothing), so that every authenticated answer, a 400
    # or 413 before any token is taken included, carries the rate headers.
    decision = context.limiter.take(key.key_id, key.rate_limit_per_minute, 0)
    request.scope["state"][STATE_EXTRA_HEADERS] = decision.headers()
    return key


def _count_refused(exc: AppError) -> None:
    """Every error answer of an ingest route refuses its event (or its batch, as one)."""
    EVENTS_REFUSED.labels(exc.error_code).inc()


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
    """The body of a request declared as JSON (415 otherwise), within ``limit`` bytes (413;
    an over-limit body is dropped up to a bound first, so that the client reads it:
    shared/web/body.py)."""
    headers = _wanted_headers(request)
    require_json(headers.get(b"content-type"))
    declared = headers.get(b"content-length")
    return await _context(request).bodies.read(request.receive, declared, limit, headers.get(b"expect"))


def _take_tokens(request: Request[Any, Any, Any], key: KeyRecord, event_count: int) -> None:
    """Rate limits count events, refused ones too: tokens are taken before any event is
    checked, so that checking costs only its sender. The rate headers go on every
    authenticated answer."""
    decision = _context(request).limiter.take(key.key_id, key.rate_limit_per_minute, event_count)
    request.scope["state"][STATE_EXTRA_HEADERS] = decision.headers()
    if not decision.allowed:
        raise RateLimited(decision.retry_after_s)


async def post_event(request: Request[Any, Any, Any], key: KeyRecord) -> ASGIResponse:  # body: Accepted
    context = _context(request)
    body = await _json_body(request, context.max_body_bytes)
    _take_tokens(request, key, 1)
    event = context.service.parse_event(body, header_key=_idempotency_header(request))
    (outcome,) = await context.service.accept(key, [event], request_id_of(request.scope))
    if isinstance(outcome, AppError):
        raise outcome
    EVENTS_ACCEPTED.inc()
    return json_answer(Accepted(outcome.event_id, "accepted", outcome.received_at), 202)


async def post_batch(request: Request[Any, Any, Any], key: KeyRecord) -> Response[BatchResult]:
    results = await _accept_batch(request, key)
    for result in results:
        if result.error is None:
            EVENTS_ACCEPTED.inc()
        else:
            EVENTS_REFUSED.labels(result.error.error_code).inc()
    all_ok = all(r.error is None for r in results)
    return Response(BatchResult(results), status_code=202 if all_ok else 207)


async def _accept_batch(request: Request[Any, Any, Any], key: KeyRecord) -> list[BatchItem]:
    context = _context(request)
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


_IDEMPOTENCY_HEADER = Parameter(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
    "Alternative to the body's idempotency_key. Both may be sent only if equal: a header that differs"
    " from the body's idempotency_key is a 400 VALIDATION_ERROR naming $.idempotency_key.",
)
# Text the service refuses although its schema allows it (ingest_api/service.py).
_CONTROL_CHARACTERS = "Contains control characters (U+0000 to U+001F, U+007F to U+009F)."
_TEXT_FIELDS = ("$.event_type", "$.idempotency_key", "Idempotency-Key")
_ERROR_ITEM = {k: v for k, v in error_example(400).items() if k != "correlation_id"}
_SOME_REFUSED = Content(
    BatchResult, {"results": [{"event_id": ACCEPTED_EXAMPLE["event_id"], "status": "accepted"}, {"error": _ERROR_ITEM}]}
)
# What either send can answer besides its success: a bad, oversized or non-JSON body, an
# empty bucket, SQS unavailable.
_SEND_ERRORS = (400, 413, 415, 429, 503)
# Every route of the group needs a key with the ingest scope; none takes a query parameter.
INGEST_ROUTES = RouteGroup(
    "ingest",
    (
        Route(
            "post",
            "/events",
            "Send one event; 202 once SQS has it",
            post_event,
            202,
            answer=Content(Accepted, ACCEPTED_EXAMPLE),
            body=Content(EventIn, EVENT_EXAMPLE),
            parameters=(_IDEMPOTENCY_HEADER,),
            errors=_SEND_ERRORS,
            refusals=(
                Refusal(
                    "VALIDATION_ERROR",
                    "Idempotency-Key",
                    "Differs from the body's idempotency_key.",
                    field="$.idempotency_key",
                ),
                *(Refusal("VALIDATION_ERROR", name, _CONTROL_CHARACTERS, field=name) for name in _TEXT_FIELDS),
            ),
        ),
        Route(
            "post",
            "/events/batch",
            "Send 1 to 500 events; one result per event, in order",
            post_batch,
            202,
            answer=Content(BatchResult, BATCH_ACCEPTED_EXAMPLE),
            body=Content(BatchIn, BATCH_EXAMPLE),
            errors=_SEND_ERRORS,
            also={207: ("Some events were refused; each result says which and why.", _SOME_REFUSED)},
        ),
    ),
    scope=Scope.INGEST,
    admit=_admit,
    on_refused=_count_refused,
)


def document() -> bytes:
    """The OpenAPI document of the public listener's routes (GET /schema/openapi.json)."""
    return build_openapi(TITLE, VERSION, [INGEST_ROUTES, health_routes()])


def route_groups() -> list[RouteGroup]:
    """Every route the public listener serves, by group: the document's own included."""
    return [INGEST_ROUTES, health_routes(), document_routes(document())]


async def _queue_message_limit(clients: AwsClients, queue_url: str) -> int:
    """The queue's MaximumMessageSize: queues made before SQS raised its default to 1 MiB
    keep 256 KiB, and the edge sizes its messages (and the largest payload) to fit."""
    attributes = await clients.sqs.admin.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["MaximumMessageSize"])
    limit = int(attributes.get("Attributes", {}).get("MaximumMessageSize", SQS_MAX_REQUEST_BYTES))
    if limit < SQS_MAX_REQUEST_BYTES:
        log.warning("queue_message_limit_below_1_mib", maximum_message_size=limit)
    return limit


async def _ready(app: Litestar) -> None:
    context: IngestContext = app.state.ingest
    await context.clients.sqs.admin.get_queue_attributes(QueueUrl=context.queue_url, AttributeNames=["QueueArn"])


def _lifespan(settings: Settings) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_clients(settings) as clients:
            queue_url = (await clients.sqs.admin.get_queue_url(QueueName=settings.events_queue))["QueueUrl"]
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
        route_handlers=route_handlers(route_groups()),
        lifespan=[_lifespan(settings)],
        on_startup=[worker_startup],
        exception_handlers=EXCEPTION_HANDLERS,
        # The edge reads its bodies itself (shared/web/body.py, same limits, an over-limit body
        # dropped up to a bound so that its 413 is read); this guards any other route.
        request_max_body_size=settings.max_body_bytes,
        openapi_config=None,  # the document is built from the route declarations: shared/web/openapi.py
        logging_config=None,  # shared.observability.logging owns logging: one JSON renderer for everything
    )
    return with_request_context(app, _ready)
