"""What both HTTP services share: error answers, request ids, the canonical log line, health
(/status here, /ready and /metrics on the admin listener, shared/web/admin.py).

Errors become HTTP answers here and nowhere else, through the table of shared/errors.py.
Every response carries ``X-Request-ID``; every error body has the contract's shape.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
import structlog
from botocore.exceptions import BotoCoreError, ClientError
from litestar import Litestar, Request, Response
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException, ValidationException
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, ExceptionHandlersMap, Message, Receive, Scope, Send

from shared.contract.ids import sanitize_request_id
from shared.errors import INTERNAL_ERROR, SERVICE_UNAVAILABLE, AppError, ErrorAnswer, ErrorDetail, answer_for
from shared.observability.metrics import HTTP_REQUESTS, HTTP_SECONDS, exposition
from shared.runtime import die_with_parent, tune_gc
from shared.settings import get_settings
from shared.web.admin import AdminServer, Answer, SharedCheck
from shared.web.routes import Content, Route, RouteGroup

log = structlog.get_logger()

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_HEADER_BYTES = REQUEST_ID_HEADER.encode()
STATE_REQUEST_ID = "request_id"
# Handlers put extra response headers here (rate-limit headers); they reach every answer,
# errors included.
STATE_EXTRA_HEADERS = "extra_headers"

try:
    VERSION = version("triggers-api")
except PackageNotFoundError:  # running from a source tree without installing
    VERSION = "0.0.0"


class ErrorBody(msgspec.Struct, frozen=True):
    status: int
    error_code: str
    message: str
    details: list[ErrorDetail]
    correlation_id: str


def client_address(scope: Scope, trusted_proxy_hops: int) -> str:
    """Who sent the request: the TCP peer, or the address the trusted proxies recorded."""
    if trusted_proxy_hops > 0:
        forwarded = _header(scope, b"x-forwarded-for")
        if forwarded:
            hops = [part.strip() for part in forwarded.split(",")]
            if len(hops) >= trusted_proxy_hops:
                return hops[-trusted_proxy_hops]
    client = scope.get("client")
    return str(client[0]) if client else ""


def request_id_of(scope: Scope) -> str:
    return str(scope.get("state", {}).get(STATE_REQUEST_ID, ""))


_answer_encoder = msgspec.json.Encoder()


def json_answer(value: msgspec.Struct, status_code: int = 200) -> ASGIResponse:
    """A hot route's answer, encoded by msgspec into an ASGI response.

    Returning the struct would have Litestar build a Response, then convert it, per request,
    for the same bytes (~13 µs on the edge). The OpenAPI documents come from the route
    declarations (shared/web/routes.py), which name the struct, not from return annotations.
    """
    return ASGIResponse(body=_answer_encoder.encode(value), status_code=status_code, media_type="application/json")


def error_response(
    scope: Scope, answer: ErrorAnswer, message: str, details: list[ErrorDetail] | None = None, status: int = 0
) -> Response[ErrorBody]:
    """``answer``'s body; ``status`` only for a status the table does not hold (HTTP_ERROR)."""
    status = status or answer.status
    body = ErrorBody(status, answer.code, message, details or [], request_id_of(scope))
    return Response(body, status_code=status, media_type="application/json")


def _app_error(request: Request[Any, Any, Any], exc: AppError) -> Response[ErrorBody]:
    response = error_response(request.scope, exc.answer, exc.message, exc.details)
    response.headers.update(exc.headers)
    return response


def _litestar_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    status = exc.status_code
    if status >= 500:
        return _internal_error(request, exc)
    details: list[ErrorDetail] = []
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        details = [
            ErrorDetail(field=str(item.get("key", "")), message=str(item.get("message", "")))
            for item in exc.extra
            if isinstance(item, dict)
        ]
    response = error_response(request.scope, answer_for(status), exc.detail, details, status)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


_UNAVAILABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalServerError",
        "TransactionConflictException",
    }
)


def _aws_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """An AWS dependency that cannot be reached or pushes back is a 503, not our fault."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code not in _UNAVAILABLE_CODES and status < 500:
            return _internal_error(request, exc)
    log.warning("dependency_unavailable", error=type(exc).__name__)
    response = error_response(request.scope, SERVICE_UNAVAILABLE, "A dependency is unavailable; retry.")
    response.headers["Retry-After"] = "1"
    return response


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    # The type and traceback go to the log; the client sees only the correlation id.
    log.error("unhandled_error", error=type(exc).__name__, exc_info=exc)
    return error_response(request.scope, INTERNAL_ERROR, "Internal error; quote the correlation id.")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    AppError: _app_error,
    HTTPException: _litestar_error,
    BotoCoreError: _aws_error,
    ClientError: _aws_error,
    TimeoutError: _aws_error,
    Exception: _internal_error,
}


# Methods outside this set (anything a client makes up) share one label value: each new
# value would add a series to every scrape, so a client could grow the registry at will.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"


@functools.cache
def _requests_counter(method: str, status: int) -> Any:
    """The counter child of one (method, status): looked up once, not per request.

    ``method`` is already folded (``_method_label``) and ``status`` is one the app answers
    with, so this cache and the registry stay small whatever clients send. Paths are not a
    label: an unrouted path cannot add a series either.
    """
    return HTTP_REQUESTS.labels(method, str(status))


def _method_label(method: str) -> str:
    return method if method in _KNOWN_METHODS else OTHER_METHOD


def request_context_middleware(app: ASGIApp) -> ASGIApp:
    """Request id in, request id out, and one log line per request with what it did."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = sanitize_request_id(_header(scope, b"x-request-id"))
        state = scope.setdefault("state", {})
        state[STATE_REQUEST_ID] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Appending raw pairs: these names are never set by the handlers themselves.
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER_BYTES, request_id.encode()))
                for name, value in state.get(STATE_EXTRA_HEADERS, {}).items():
                    headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await app(scope, receive, send_with_headers)
        finally:
            elapsed = time.perf_counter() - started
            _requests_counter(_method_label(scope.get("method", "")), status).inc()
            HTTP_SECONDS.observe(elapsed)
            log.info(
                "request",
                method=scope.get("method"),
                path=scope.get("path"),
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )

    return middleware


def with_request_context(app: Litestar, ready_check: ReadyCheck | None = None) -> Litestar:
    """Put ``request_context_middleware`` around the whole app, routing included, and give
    the app its admin listener (shared/web/admin.py: /metrics, /ready running
    ``ready_check``, /status).

    In Litestar's ``middleware=`` list it would wrap matched routes only, so a 404 or 405
    for an unknown path would go out without X-Request-ID and without a log line.
    """
    app.asgi_handler = request_context_middleware(app.asgi_handler)
    if ready_check is not None:
        admin = _admin_server(app, ready_check)

        async def start_admin() -> None:
            await _start_admin(admin)

        app.on_startup.append(start_admin)
        app.on_shutdown.append(admin.close)
    return app


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class Status(msgspec.Struct, frozen=True):
    status: str
    version: str
    uptime_seconds: float


def worker_startup(app: Litestar) -> None:
    """Startup hook of each server worker: GC tuning (shared/runtime.py), and no worker
    outliving the server process that forked it (``die_with_parent``)."""
    del app  # a startup hook's signature
    tune_gc()
    die_with_parent()


ReadyCheck = Callable[[Litestar], Awaitable[None]]
STATUS_EXAMPLE = {"status": "ok", "version": VERSION, "uptime_seconds": 12.5}


def health_routes() -> RouteGroup:
    """GET /status on the public listener: liveness, no dependency touched, no key asked.

    GET /ready (the AWS dependencies) and GET /metrics are on the admin listener only
    (``_admin_server``), so they are not part of the public document.
    """
    started = time.monotonic()

    def status() -> Status:
        return Status("ok", VERSION, round(time.monotonic() - started, 3))

    answer = Content(Status, STATUS_EXAMPLE)
    return RouteGroup("health", (Route("get", "/status", "Liveness; touches no dependency", status, 200, answer),))


_status_encoder = msgspec.json.Encoder()


def _admin_server(app: Litestar, ready_check: ReadyCheck) -> AdminServer:
    started = time.monotonic()

    def status_body(state: str) -> bytes:
        return _status_encoder.encode(Status(state, VERSION, round(time.monotonic() - started, 3)))

    async def status() -> Answer:
        return Answer(200, status_body("ok"))

    async def ready() -> Answer:
        try:
            await ready_check(app)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            log.warning("not_ready", error=type(exc).__name__)
            return Answer(503, status_body("unavailable"), headers={"Retry-After": "1"})
        return Answer(200, status_body("ok"))

    async def metrics() -> Answer:
        body, content_type = exposition()
        return Answer(200, body, content_type)

    return AdminServer(
        [
            Route("get", "/status", "Liveness; touches no dependency", status, 200),
            Route(
                "get",
                "/ready",
                "Readiness: the service's AWS dependencies answer",
                SharedCheck(ready, READY_CACHE_S),
                200,
            ),
            Route("get", "/metrics", "Prometheus metrics", metrics, 200),
        ]
    )


# How long one readiness outcome answers every /ready: a health check every few seconds
# sees a fresh one, a flood of /ready makes one AWS call a second.
READY_CACHE_S = 1.0


async def _start_admin(admin: AdminServer) -> None:
    """Listen on TRIGGERS_ADMIN_HOST:TRIGGERS_ADMIN_PORT (set by `triggers run`); unset or 0:
    no admin listener. A port that cannot be had stops the worker, with a log line saying
    why (the server itself logs nothing): a service whose health check cannot answer must
    not serve as if nothing were wrong."""
    settings = get_settings()
    if settings.admin_port:
        try:
            await admin.start(settings.admin_host, settings.admin_port)
        except OSError as exc:
            log.error(
                "admin_listener_failed",
                host=settings.admin_host,
                port=settings.admin_port,
                error=exc.strerror or type(exc).__name__,
            )
            raise
