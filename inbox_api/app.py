"""The inbox service: ``create_app()`` wires routes, errors, logging and AWS clients."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Litestar, Request, delete, get, post
from litestar.response.base import ASGIResponse

from inbox_api import openapi
from inbox_api.acks import Acknowledger, AckOutcome
from inbox_api.cursor import CursorCodec, CursorState
from inbox_api.schemas import AckIn, AckOut, EventOut, InboxPage, event_out
from inbox_api.store import InboxStore
from shared.aws.clients import AwsClients, open_clients
from shared.contract.ids import is_event_id
from shared.errors import ErrorDetail, NotFound, RateLimited, ValidationError
from shared.keys.authenticator import Authenticator, build_authenticator
from shared.keys.model import KeyRecord, Scope
from shared.keys.store import DynamoKeyStore
from shared.observability.logging import configure_logging
from shared.settings import Settings, get_settings, inbox_cursor_secret
from shared.web.body import BodyDeadlines
from shared.web.decoding import decode_json, require_json
from shared.web.http import (
    EXCEPTION_HANDLERS,
    STATE_EXTRA_HEADERS,
    client_address,
    health_handlers,
    json_answer,
    refuse_unknown_query,
    with_request_context,
    worker_startup,
)
from shared.web.openapi import openapi_handler
from shared.web.ratelimit import RateLimiter

_ack_decoder = msgspec.json.Decoder(AckIn)
MAX_ACK_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class InboxContext:
    clients: AwsClients
    auth: Authenticator
    proxy_hops: int
    store: InboxStore
    acks: Acknowledger
    cursors: CursorCodec
    events_table: str
    limiter: RateLimiter
    requests_per_minute: int
    bodies: BodyDeadlines


def _context(request: Request[Any, Any, Any]) -> InboxContext:
    context: InboxContext = request.app.state.inbox
    return context


_INBOX_QUERY = frozenset({"limit", "cursor", "event_type", "order"})


async def _account(request: Request[Any, Any, Any], query: frozenset[str] = frozenset()) -> KeyRecord:
    """The caller's key (401/403/429 otherwise); then 400 for query parameters not in ``query``."""
    context = _context(request)
    client = client_address(request.scope, context.proxy_hops)
    key = await context.auth.authenticate(request.headers.get("authorization"), Scope.INBOX, client)
    _take_token(request, context, key)
    refuse_unknown_query(request.scope, query)
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


_ORDERS = ("asc", "desc")


def _page_query(request: Request[Any, Any, Any]) -> _PageQuery:
    """GET /inbox's query, read after authentication: a caller without a key learns nothing
    from a 400, and a refused query still spends its token and carries the rate headers."""
    values = {name: request.query_params.get(name) for name in _INBOX_QUERY}
    details: list[ErrorDetail] = []
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
    return _PageQuery(limit, values["cursor"], values["event_type"], order)


@get("/inbox", tags=["inbox"], summary="Page through the account's undelivered events")
async def get_inbox(request: Request[Any, Any, Any]) -> ASGIResponse:  # body: InboxPage
    key = await _account(request, _INBOX_QUERY)
    context = _context(request)
    params = _page_query(request)
    limit, cursor, event_type, order = params.limit, params.cursor, params.event_type, params.order
    query = CursorState(key.account_id, event_type, order, "")
    after = context.cursors.decode(cursor, query) if cursor is not None else None
    counting = asyncio.ensure_future(context.store.count(key.account_id, event_type))  # beside the page
    try:
        page = await context.store.page_from(key.account_id, event_type, order == "desc", limit, after)
    except BaseException:
        counting.cancel()
        raise
    total = await counting
    next_cursor = None
    if page.has_more and page.after is not None:  # the position after the last event returned
        next_cursor = context.cursors.encode(msgspec.structs.replace(query, after=page.after))
    return json_answer(InboxPage([event_out(e) for e in page.events], next_cursor, page.has_more, total))


@get("/events/{event_id:str}", tags=["inbox"], summary="One event of the account, delivered or not")
async def get_event(request: Request[Any, Any, Any], event_id: str) -> EventOut:
    key = await _account(request)
    if not is_event_id(event_id):
        raise NotFound("No such event.")
    return event_out(await _context(request).store.get(key.account_id, event_id))


@delete("/events/{event_id:str}", tags=["inbox"], summary="Acknowledge one event (idempotent)")
async def ack_event(request: Request[Any, Any, Any], event_id: str) -> None:
    key = await _account(request)
    if not is_event_id(event_id):
        raise NotFound("No such event.")
    outcomes = await _context(request).acks.ack(key.account_id, [event_id])
    if outcomes[event_id] is AckOutcome.NOT_FOUND:
        raise NotFound("No such event.")


@post("/inbox/ack", status_code=200, tags=["inbox"], summary="Acknowledge up to 100 events")
async def ack_many(request: Request[Any, Any, Any]) -> AckOut:
    key = await _account(request)
    require_json(request.headers.get("content-type"))
    raw = await _context(request).bodies.read(
        request.receive, request.headers.get("content-length"), MAX_ACK_BODY_BYTES
    )
    body = decode_json(_ack_decoder, raw)
    ids = list(dict.fromkeys(body.event_ids))  # the same id twice is acknowledged once
    outcomes = await _context(request).acks.ack(key.account_id, [i for i in ids if is_event_id(i)])
    found = {i for i, outcome in outcomes.items() if outcome is not AckOutcome.NOT_FOUND}
    return AckOut(acknowledged=[i for i in ids if i in found], not_found=[i for i in ids if i not in found])


async def _ready(app: Litestar) -> None:
    context: InboxContext = app.state.inbox
    await context.clients.dynamodb.describe_table(TableName=context.events_table)


def _lifespan(settings: Settings) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_clients(settings) as clients:
            bodies = BodyDeadlines(settings.body_timeout_s)
            await bodies.start()
            app.state.inbox = InboxContext(
                clients=clients,
                auth=build_authenticator(settings, DynamoKeyStore(clients.dynamodb, settings.keys_table)),
                proxy_hops=settings.trusted_proxy_hops,
                store=InboxStore(clients.dynamodb, settings),
                acks=Acknowledger(clients.dynamodb, settings),
                cursors=CursorCodec(inbox_cursor_secret(settings)),
                events_table=settings.events_table,
                limiter=RateLimiter(share=1 / settings.inbox_instances),
                requests_per_minute=settings.inbox_requests_per_minute,
                bodies=bodies,
            )
            try:
                yield
            finally:
                await bodies.close()

    return lifespan


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    inbox_cursor_secret(settings)  # refuse to start without one outside local use
    configure_logging(settings.log_level, json=settings.log_json)
    app = Litestar(
        route_handlers=[
            get_inbox,
            get_event,
            ack_event,
            ack_many,
            *health_handlers(_ready),
            openapi_handler(openapi.document()),
        ],
        lifespan=[_lifespan(settings)],
        on_startup=[worker_startup],
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=MAX_ACK_BODY_BYTES,
        openapi_config=None,  # the document is written out: shared/web/openapi.py
        logging_config=None,  # shared.observability.logging owns logging: one JSON renderer for everything
    )
    return with_request_context(app)
