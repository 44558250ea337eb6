"""The inbox service: its routes, declared once (``INBOX_ROUTES``, the ``/consumers`` ones
from inbox_api/consumers.py among them: router and OpenAPI document both come from them), and
``create_app()``, which wires routes, errors, logging and AWS clients.

Every inbox call takes ``consumer``: without it (or ``default``) the call reads and writes
the account's own partition, as before consumers existed; with a name, the named consumer's
partition (``inbox_api.consumers.partition_of``), through the very same code."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from litestar import Litestar, Request
from litestar.response.base import ASGIResponse

from inbox_api.acks import Acknowledger, AckOutcome
from inbox_api.consumers import CONSUMER_PARAMETER, CONSUMER_ROUTES, consumer_name, partition_of, target_of
from inbox_api.cursor import CursorCodec, CursorState
from inbox_api.jobs import JobRunner
from inbox_api.leases import Leaser, LeaseRefusal
from inbox_api.schemas import (
    ACK_EXAMPLE,
    ACK_OUT_EXAMPLE,
    CLAIM_EXAMPLE,
    CLAIMED_EXAMPLE,
    EVENT_EXAMPLE,
    EXTEND_EXAMPLE,
    EXTEND_OUT_EXAMPLE,
    FAILED_PAGE_EXAMPLE,
    MAX_ACK_IDS,
    MAX_WAIT_S,
    NACK_EXAMPLE,
    NACK_OUT_EXAMPLE,
    PAGE_EXAMPLE,
    AckIn,
    AckOut,
    ClaimIn,
    ClaimOut,
    EventOut,
    ExtendIn,
    ExtendOut,
    FailedPage,
    InboxPage,
    NackIn,
    NackOut,
    TokenRefused,
    claimed_out,
    event_out,
    failed_out,
)
from inbox_api.store import InboxStore, Page
from inbox_api.tokens import LeaseTokens, TokenRefusal
from inbox_api.waiting import Doorbell, Reads, Watch
from shared.aws.clients import AwsClients, open_clients
from shared.contract.ids import is_event_id, rfc3339
from shared.errors import ErrorDetail, NotFound, RateLimited, ValidationError
from shared.keys.authenticator import Authenticator, build_authenticator
from shared.keys.model import KeyRecord, Scope
from shared.keys.store import DynamoKeyStore
from shared.observability.logging import configure_logging
from shared.settings import Settings, get_settings, inbox_cursor_secret
from shared.storage.counters import Counts, peek_shards, shard_counts
from shared.storage.layout import counter_id
from shared.storage.registry import ConsumerRegistry
from shared.web.body import BodyDeadlines
from shared.web.decoding import decode_unique_json, require_json
from shared.web.http import (
    EXCEPTION_HANDLERS,
    STATE_EXTRA_HEADERS,
    VERSION,
    client_address,
    health_routes,
    json_answer,
    with_request_context,
    worker_startup,
)
from shared.web.openapi import build_openapi, document_routes
from shared.web.ratelimit import RateLimiter
from shared.web.routes import Content, Parameter, Refusal, Route, RouteGroup, route_handlers

TITLE = "Triggers inbox API"
_B = TypeVar("_B")
_ack_decoder = msgspec.json.Decoder(AckIn)
_claim_decoder = msgspec.json.Decoder(ClaimIn)
_nack_decoder = msgspec.json.Decoder(NackIn)
_extend_decoder = msgspec.json.Decoder(ExtendIn)
FAILED_LISTING = "failed"
MAX_ACK_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class InboxContext:
    clients: AwsClients
    auth: Authenticator
    proxy_hops: int
    store: InboxStore
    acks: Acknowledger
    cursors: CursorCodec
    registry: ConsumerRegistry
    events_table: str
    limiter: RateLimiter
    requests_per_minute: int
    bodies: BodyDeadlines
    leaser: Leaser
    tokens: LeaseTokens
    doorbell: Doorbell
    settle_s: float  # a page's settle margin: what a waiting page lets pass before reading again


def _context(request: Request[Any, Any, Any]) -> InboxContext:
    context: InboxContext = request.app.state.inbox
    return context


def _query(name: str, schema: dict[str, Any], description: str) -> Parameter:
    return Parameter(name, "query", schema, description)


_WAIT = _query(
    "wait_s",
    {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0},
    "With nothing to return, wait up to this long for an event (long polling; docs/api.md).",
)
_PAGE_PARAMETERS = (
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "Page size."),
    _query(
        "cursor",
        {"type": "string", "minLength": 1, "maxLength": 4096},
        "next_cursor of the previous page, as given: opaque and signed. Any other string, a well-formed one"
        " this service never issued or one issued for another filter or order included, is a 400"
        " INVALID_CURSOR (start again without a cursor).",
    ),
    _query("event_type", {"type": "string", "minLength": 1, "maxLength": 255}, "Only this type."),
    _query("order", {"type": "string", "enum": ["asc", "desc"], "default": "asc"}, "Oldest or newest first."),
    CONSUMER_PARAMETER,
    _WAIT,
)
_FAILED_PARAMETERS = tuple(p for p in _PAGE_PARAMETERS if p.name not in ("event_type", "wait_s"))
_EVENT_ID = Parameter("event_id", "path", {"type": "string", "minLength": 1, "maxLength": 64}, required=True)


async def _admit(request: Request[Any, Any, Any], scope: Scope) -> KeyRecord:
    """The caller's key (401/403/429 otherwise): the inbox group's check (``INBOX_ROUTES``)."""
    context = _context(request)
    client = client_address(request.scope, context.proxy_hops)
    key = await context.auth.authenticate(request.headers.get("authorization"), scope, client)
    _take_token(request, context, key)
    return key


def _take_token(request: Request[Any, Any, Any], context: InboxContext, key: KeyRecord) -> None:
    """One token per request, whatever it answers: a page of S shards reads up to S x 201
    items, so requests are what costs. The rate headers go on every authenticated answer."""
    decision = context.limiter.take(key.key_id, context.requests_per_minute)
    request.scope["state"][STATE_EXTRA_HEADERS] = decision.headers()
    if not decision.allowed:
        raise RateLimited(decision.retry_after_s)


class _PageQuery(msgspec.Struct, frozen=True):
    limit: int = 50
    cursor: str | None = None
    event_type: str | None = None
    order: str = "asc"
    wait_s: int = 0


_ORDERS = ("asc", "desc")


def _page_query(request: Request[Any, Any, Any]) -> _PageQuery:
    """GET /inbox's query, read after authentication: a caller without a key learns nothing
    from a 400, and a refused query still spends its token and carries the rate headers."""
    values = {p.name: request.query_params.get(p.name) for p in _PAGE_PARAMETERS if p is not CONSUMER_PARAMETER}
    details: list[ErrorDetail] = []
    wait_text = "0" if values["wait_s"] is None else values["wait_s"]
    wait_s = int(wait_text) if wait_text.isascii() and wait_text.isdigit() and len(wait_text) <= 2 else -1
    if not 0 <= wait_s <= MAX_WAIT_S:
        details.append(ErrorDetail("wait_s", f"Must be an integer from 0 to {MAX_WAIT_S}."))
    limit_text = "50" if values["limit"] is None else values["limit"]
    limit = int(limit_text) if limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 3 else 0
    if not 1 <= limit <= 200:
        details.append(ErrorDetail("limit", "Must be an integer from 1 to 200."))
    if values["cursor"] is not None and not 1 <= len(values["cursor"]) <= 4096:
        details.append(ErrorDetail("cursor", "Must be 1 to 4096 characters."))
    if values["event_type"] is not None and not 1 <= len(values["event_type"]) <= 255:
        details.append(ErrorDetail("event_type", "Must be 1 to 255 characters."))
    order = "asc" if values["order"] is None else values["order"]
    if order not in _ORDERS:
        details.append(ErrorDetail("order", "Must be 'asc' or 'desc'."))
    if details:
        raise ValidationError("Invalid query parameters.", details)
    return _PageQuery(limit, values["cursor"], values["event_type"], order, max(wait_s, 0))


async def get_inbox(request: Request[Any, Any, Any], key: KeyRecord) -> ASGIResponse:  # body: InboxPage
    context = _context(request)
    params = _page_query(request)
    target = await target_of(request, key, consumer_name(request))
    partition, event_type, order = target.partition, params.event_type, params.order
    # Bound to the partition: a consumer's cursor is refused for another, or a re-created name.
    query = CursorState(partition, event_type, order, "")
    after = context.cursors.decode(params.cursor, query) if params.cursor is not None else None
    page, counts = await _page_and_counts(context, partition, params, after)
    if counts.in_flight:  # leases are out: those that ended go back first (seen once settled)
        await context.leaser.release_ended(partition, target.max_deliveries)
    # Below a cursor of a newest-first pass nothing new ever comes: no wait for that.
    waiting = params.wait_s > 0 and not (order == "desc" and after is not None)
    if not page.events and not page.has_more and waiting:
        watch = Watch(counter_id(partition, event_type), partition, claims=False)
        deadline = time.monotonic() + params.wait_s
        async with context.doorbell.session(key.key_id, request.receive) as waits:
            quiet = 0.0
            while await waits.until(watch, deadline, quiet):
                page, counts = await _page_and_counts(context, partition, params, after)
                if page.events or page.has_more:
                    break
                quiet = context.settle_s  # stored, not settled yet: read again once it is
    next_cursor = None
    if page.has_more and page.after is not None:  # the position after the last event returned
        next_cursor = context.cursors.encode(msgspec.structs.replace(query, after=page.after))
    events = [event_out(e) for e in page.events]
    return json_answer(InboxPage(events, next_cursor, page.has_more, counts.undelivered))


async def _page_and_counts(
    context: InboxContext, partition: str, params: _PageQuery, after: str | None
) -> tuple[Page, Counts]:
    counting = asyncio.ensure_future(context.store.counts(partition, params.event_type))  # beside the page
    try:
        page = await context.store.page_from(partition, params.event_type, params.order == "desc", params.limit, after)
    except BaseException:
        counting.cancel()
        raise
    return page, await counting


async def get_failed(request: Request[Any, Any, Any], key: KeyRecord) -> FailedPage:
    context = _context(request)
    params = _page_query(request)
    partition = await partition_of(request, key, consumer_name(request))
    query = CursorState(partition, None, params.order, "", listing=FAILED_LISTING)
    after = context.cursors.decode(params.cursor, query) if params.cursor is not None else None
    counting = asyncio.ensure_future(context.store.counts(partition))
    try:
        page = await context.store.failed_page(partition, params.order == "desc", params.limit, after)
    except BaseException:
        counting.cancel()
        raise
    counts = await counting
    next_cursor = None
    if page.has_more and page.after is not None:
        next_cursor = context.cursors.encode(msgspec.structs.replace(query, after=page.after))
    events = [failed_out(h) for h in page.events]
    return FailedPage(events, next_cursor, page.has_more, counts.failed)


async def get_event(request: Request[Any, Any, Any], key: KeyRecord, event_id: str) -> EventOut:
    name = consumer_name(request)
    if not is_event_id(event_id):
        raise NotFound("No such event.")
    partition = await partition_of(request, key, name)
    return event_out(await _context(request).store.get(partition, event_id, key.account_id))


async def ack_event(request: Request[Any, Any, Any], key: KeyRecord, event_id: str) -> None:
    name = consumer_name(request)
    if not is_event_id(event_id):
        raise NotFound("No such event.")
    partition = await partition_of(request, key, name)
    outcomes = await _context(request).acks.ack(partition, [event_id], key.account_id)
    if outcomes[event_id] is AckOutcome.NOT_FOUND:
        raise NotFound("No such event.")


async def ack_many(request: Request[Any, Any, Any], key: KeyRecord) -> AckOut:
    name = consumer_name(request)
    body = await _body(request, _ack_decoder)
    ids = list(dict.fromkeys(body.event_ids or ()))  # the same id twice is acknowledged once
    if not ids and not body.lease_tokens:  # the schema's minProperties: 1
        raise ValidationError("Invalid request body.", [ErrorDetail("$", "Give event_ids, lease_tokens or both.")])
    partition = await partition_of(request, key, name)
    acks = _context(request).acks
    outcomes = await acks.ack(partition, [i for i in ids if is_event_id(i)], key.account_id) if ids else {}
    found = {i for i, outcome in outcomes.items() if outcome is not AckOutcome.NOT_FOUND}
    acknowledged = [i for i in ids if i in found]
    refused: list[TokenRefused] | msgspec.UnsetType = msgspec.UNSET  # present only when tokens were given
    if body.lease_tokens:
        batch = _TokenBatch(_context(request).tokens, partition, body.lease_tokens)
        by_event = await acks.ack_leases(partition, batch.wanted) if batch.wanted else {}
        acknowledged += batch.settle({event_id: _ACK_REFUSALS[o] for event_id, o in by_event.items()})
        refused = batch.refused()
    not_found = [i for i in ids if i not in found]
    return AckOut(list(dict.fromkeys(acknowledged)), not_found, refused)


# What acknowledging by token answers for each lease (None: acknowledged).
_ACK_REFUSALS: dict[AckOutcome, LeaseRefusal | None] = {
    AckOutcome.ACKNOWLEDGED: None,
    AckOutcome.ALREADY_DELIVERED: None,
    AckOutcome.LEASE_LOST: LeaseRefusal.LEASE_LOST,
    AckOutcome.NOT_FOUND: LeaseRefusal.NOT_FOUND,
}


async def claim(request: Request[Any, Any, Any], key: KeyRecord) -> ClaimOut:
    name = consumer_name(request)
    body = await _body(request, _claim_decoder)
    context = _context(request)
    target = await target_of(request, key, name)
    claimed = await context.leaser.claim(target.partition, body.limit, body.lease_s, target.max_deliveries)
    if not claimed and body.wait_s:
        watch = Watch(counter_id(target.partition), target.partition, claims=True)
        deadline = time.monotonic() + body.wait_s
        async with context.doorbell.session(key.key_id, request.receive) as waits:
            while not claimed and await waits.until(watch, deadline):
                claimed = await context.leaser.claim(target.partition, body.limit, body.lease_s, target.max_deliveries)
            if claimed and waits.gone:  # its client left meanwhile: nobody would handle them
                leases = {c.event.event_id: c.lease_id for c in claimed}
                await context.leaser.nack(target.partition, leases, 0, target.max_deliveries)
                claimed = []
    counts = await context.store.counts(target.partition)
    tokens = context.tokens
    events = [claimed_out(c, tokens.encode(target.partition, c.event.event_id, c.lease_id)) for c in claimed]
    return ClaimOut(events, counts.undelivered, counts.in_flight, counts.failed)


async def nack(request: Request[Any, Any, Any], key: KeyRecord) -> NackOut:
    name = consumer_name(request)
    body = await _body(request, _nack_decoder)
    context = _context(request)
    target = await target_of(request, key, name)
    batch = _TokenBatch(context.tokens, target.partition, body.lease_tokens)
    answers = {}
    if batch.wanted:
        answers = await context.leaser.nack(target.partition, batch.wanted, body.delay_s, target.max_deliveries)
    return NackOut(batch.settle(answers), batch.refused())


async def extend(request: Request[Any, Any, Any], key: KeyRecord) -> ExtendOut:
    name = consumer_name(request)
    body = await _body(request, _extend_decoder)
    context = _context(request)
    partition = await partition_of(request, key, name)
    batch = _TokenBatch(context.tokens, partition, body.lease_tokens)
    answers, until_us = await context.leaser.extend(partition, batch.wanted, body.lease_s)
    return ExtendOut(batch.settle(answers), rfc3339(until_us), batch.refused())


async def _body(request: Request[Any, Any, Any], decoder: msgspec.json.Decoder[_B]) -> _B:
    require_json(request.headers.get("content-type"))
    raw = await _context(request).bodies.read(
        request.receive, request.headers.get("content-length"), MAX_ACK_BODY_BYTES
    )
    return decode_unique_json(decoder, raw)


class _TokenBatch:
    """One call's lease tokens: those genuine and this consumer's become leases to move
    (``wanted``: event id -> lease id), the others refusals. The same token twice counts once;
    two tokens of one event: the first decides, the other is not its lease."""

    def __init__(self, codec: LeaseTokens, partition: str, tokens: list[str]) -> None:
        self._tokens = list(dict.fromkeys(tokens))
        self.wanted: dict[str, str] = {}
        self._held: dict[str, tuple[str, str]] = {}  # token -> (event id, lease id)
        self._refused: list[TokenRefused] = []
        for token in self._tokens:
            state = codec.decode(token, partition)
            if isinstance(state, TokenRefusal):
                self._refused.append(TokenRefused(token, state.value))
            elif self.wanted.setdefault(state.event_id, state.lease_id) != state.lease_id:
                self._refused.append(TokenRefused(token, LeaseRefusal.LEASE_LOST.value))
            else:
                self._held[token] = (state.event_id, state.lease_id)

    def settle(self, answers: dict[str, LeaseRefusal | None]) -> list[str]:
        """The events whose move was made (None in ``answers``); the others' refusals are kept."""
        done: list[str] = []
        for token, (event_id, _) in self._held.items():
            refusal = answers.get(event_id, LeaseRefusal.NOT_FOUND)
            if refusal is None:
                done.append(event_id)
            else:
                self._refused.append(TokenRefused(token, refusal.value))
        return list(dict.fromkeys(done))

    def refused(self) -> list[TokenRefused]:
        """Every refusal, in the order the tokens came."""
        place = {t: n for n, t in enumerate(self._tokens)}
        return sorted(self._refused, key=lambda r: place[r.lease_token])


# Every route of the group needs a key with the inbox scope and costs one token.
INBOX_ROUTES = RouteGroup(
    "inbox",
    (
        Route(
            "get",
            "/inbox",
            "Page through the account's undelivered events",
            get_inbox,
            200,
            answer=Content(InboxPage, PAGE_EXAMPLE),
            parameters=_PAGE_PARAMETERS,
            errors=(400, 404, 429, 503),
            refusals=(
                Refusal("INVALID_CURSOR", "cursor", "The cursor is not one this service issued for this query."),
            ),
        ),
        Route(
            "get",
            "/events/{event_id}",
            "One event of the account, delivered or not",
            get_event,
            200,
            answer=Content(EventOut, EVENT_EXAMPLE),
            parameters=(_EVENT_ID, CONSUMER_PARAMETER),
            errors=(404, 429, 503),
        ),
        Route(
            "delete",
            "/events/{event_id}",
            "Acknowledge one event (204 also when already delivered)",
            ack_event,
            204,
            parameters=(_EVENT_ID, CONSUMER_PARAMETER),
            errors=(404, 429, 503),
        ),
        Route(
            "post",
            "/inbox/ack",
            f"Acknowledge 1 to {MAX_ACK_IDS} events, by id or by lease token",
            ack_many,
            200,
            answer=Content(AckOut, ACK_OUT_EXAMPLE),
            body=Content(AckIn, ACK_EXAMPLE),
            parameters=(CONSUMER_PARAMETER,),
            errors=(400, 404, 413, 415, 429, 503),
        ),
        Route(
            "post",
            "/inbox/claim",
            "Lease events nobody holds, oldest first (waiting up to wait_s for one)",
            claim,
            200,
            answer=Content(ClaimOut, CLAIMED_EXAMPLE),
            body=Content(ClaimIn, CLAIM_EXAMPLE),
            parameters=(CONSUMER_PARAMETER,),
            errors=(400, 404, 413, 415, 429, 503),
        ),
        Route(
            "post",
            "/inbox/nack",
            "Give leased events back, visible again after delay_s",
            nack,
            200,
            answer=Content(NackOut, NACK_OUT_EXAMPLE),
            body=Content(NackIn, NACK_EXAMPLE),
            parameters=(CONSUMER_PARAMETER,),
            errors=(400, 404, 413, 415, 429, 503),
        ),
        Route(
            "post",
            "/inbox/extend",
            "Make leases end lease_s from now",
            extend,
            200,
            answer=Content(ExtendOut, EXTEND_OUT_EXAMPLE),
            body=Content(ExtendIn, EXTEND_EXAMPLE),
            parameters=(CONSUMER_PARAMETER,),
            errors=(400, 404, 413, 415, 429, 503),
        ),
        Route(
            "get",
            "/inbox/failed",
            "Page through the consumer's failed list (claimed max_deliveries times without an ack)",
            get_failed,
            200,
            answer=Content(FailedPage, FAILED_PAGE_EXAMPLE),
            parameters=_FAILED_PARAMETERS,
            errors=(400, 404, 429, 503),
            refusals=(Refusal("INVALID_CURSOR", "cursor", "The cursor is not one this service issued for this list."),),
        ),
        *CONSUMER_ROUTES,  # the account's consumers: the same key scope, a token each
    ),
    scope=Scope.INBOX,
    admit=_admit,
)


def document() -> bytes:
    """The OpenAPI document of the public listener's routes (GET /schema/openapi.json)."""
    return build_openapi(TITLE, VERSION, [INBOX_ROUTES, health_routes()])


def route_groups() -> list[RouteGroup]:
    """Every route the public listener serves, by group: the document's own included."""
    return [INBOX_ROUTES, health_routes(), document_routes(document())]


async def _ready(app: Litestar) -> None:
    context: InboxContext = app.state.inbox
    await context.clients.dynamodb.admin.describe_table(TableName=context.events_table)


def _lifespan(settings: Settings) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_clients(settings) as clients:
            bodies = BodyDeadlines(settings.body_timeout_s)
            await bodies.start()
            store = InboxStore(clients.dynamodb, settings)
            leaser = Leaser(clients.dynamodb, settings, store)
            reads = Reads(
                functools.partial(shard_counts, clients.dynamodb, settings.counters_table),
                functools.partial(peek_shards, clients.dynamodb, settings.counters_table),
                leaser.any_ended,
            )
            doorbell = Doorbell(reads, settings.inbox_wait_poll_ms / 1000, settings.inbox_waits_per_key)
            await doorbell.start()
            app.state.inbox = InboxContext(
                clients=clients,
                auth=build_authenticator(settings, DynamoKeyStore(clients.dynamodb, settings.keys_table)),
                proxy_hops=settings.trusted_proxy_hops,
                store=store,
                acks=Acknowledger(clients.dynamodb, settings),
                cursors=CursorCodec(inbox_cursor_secret(settings)),
                registry=ConsumerRegistry(clients.dynamodb, settings),
                events_table=settings.events_table,
                limiter=RateLimiter(share=1 / settings.inbox_instances),
                requests_per_minute=settings.inbox_requests_per_minute,
                bodies=bodies,
                leaser=leaser,
                tokens=LeaseTokens(inbox_cursor_secret(settings)),
                doorbell=doorbell,
                settle_s=settings.inbox_settle_ms / 1000,
            )
            # Consumers' backfills and clean-ups: every inbox process takes its share.
            jobs = JobRunner(clients.dynamodb, settings)
            await jobs.start()
            try:
                yield
            finally:
                await doorbell.close()
                await jobs.close()
                await bodies.close()

    return lifespan


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    inbox_cursor_secret(settings)  # refuse to start without one outside local use
    configure_logging(settings.log_level, json=settings.log_json)
    app = Litestar(
        route_handlers=route_handlers(route_groups()),
        lifespan=[_lifespan(settings)],
        on_startup=[worker_startup],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=MAX_ACK_BODY_BYTES,
        openapi_config=None,  # the document is built from the route declarations: shared/web/openapi.py
        logging_config=None,  # shared.observability.logging owns logging: one JSON renderer for everything
    )
    return with_request_context(app, _ready)
