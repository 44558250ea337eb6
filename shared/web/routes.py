"""Route declarations: each route is written once, and that one declaration feeds the
router, the OpenAPI document (shared/web/openapi.py) and the tests.

A ``Route`` says everything about one operation: method, path, handler, summary, the bodies
it takes and answers (msgspec Structs with an example each), its parameters and the error
statuses it can answer with (their codes and meanings come from the table in
shared/errors.py). Routes come in a ``RouteGroup``, which says who may call them: the
scope a key needs and the service's ``admit`` step (authentication, then its rate step).

The group's check is not a Litestar guard: the route is built around a wrapper made once,
when the router is made, that admits the caller, refuses query parameters the declaration
does not list, and only then calls the handler with the caller's key. A handler never
authenticates by hand, so a new route in a group cannot forget to; and the wrapper is one
more coroutine call: POST /events costs the same CPU as with the call inside the handler
(about 80 µs, bench/edge_asgi.py), where a Litestar guard doing nothing adds 10 to 20 µs.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from litestar import Request, Response
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler

from shared.errors import AppError, ErrorDetail, ValidationError
from shared.keys.model import KeyRecord, Scope

Method = Literal["get", "post", "patch", "delete"]
# The service's admission of a caller for a route of a group: its key (401/403/429 otherwise).
Admit = Callable[[Request[Any, Any, Any], Scope], Awaitable[KeyRecord]]
_PATH_PARAMETER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Content:
    """A JSON body: the Struct the code decodes or encodes, and an example of it."""

    schema: type
    example: Any


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    where: Literal["query", "path", "header"]
    schema: Mapping[str, Any]
    description: str = ""
    required: bool = False

    def document(self) -> dict[str, Any]:
        described = {"description": self.description} if self.description else {}
        return {"name": self.name, "in": self.where, "required": self.required, **described, "schema": self.schema}


@dataclass(frozen=True, slots=True)
class Refusal:
    """A 400 for a request its schema allows (a signature checked, two fields compared): the
    document names each one (its code, the parameter, when), so that a client,
    and a fuzzer that sends schema-valid requests, knows the refusal is meant."""

    code: str  # the error_code, from the table in shared/errors.py
    parameter: str  # the parameter whose value is refused, or a body field: $.event_type
    when: str
    field: str | None = None  # what the answer's details name; None: its details are empty


@dataclass(frozen=True, slots=True)
class Route:
    method: Method
    path: str  # as OpenAPI writes it: /events/{event_id}; every path parameter is text
    summary: str
    handler: Callable[..., Any]
    status: int  # of success
    answer: Content | None = None  # None: no body (204)
    body: Content | None = None  # the request's, if it takes one
    parameters: tuple[Parameter, ...] = ()
    errors: tuple[int, ...] = ()  # statuses besides 400 (any request) and 401/403 (a group with a scope)
    also: Mapping[int, tuple[str, Content]] = field(default_factory=dict)  # other successes: 207
    refusals: tuple[Refusal, ...] = ()  # 400s for schema-valid requests, as the document states them
    documented: bool = True  # False only for the document's own route

    @property
    def query(self) -> frozenset[str]:
        """The query parameters the route takes: any other is a 400 (``refuse_unknown_query``)."""
        return frozenset(p.name for p in self.parameters if p.where == "query")

    @property
    def router_path(self) -> str:
        return _PATH_PARAMETER.sub(r"{\1:str}", self.path)


@dataclass(frozen=True, slots=True)
class RouteGroup:
    """Routes that share a tag and who may call them: ``scope`` and ``admit`` both, or
    neither (public routes: health, status, the document)."""

    tag: str
    routes: tuple[Route, ...]
    scope: Scope | None = None
    admit: Admit | None = None
    # Sees every AppError the group's routes answer with, the admission's included (metrics).
    on_refused: Callable[[AppError], None] | None = None

    def __post_init__(self) -> None:
        if (self.scope is None) != (self.admit is None):
            raise ValueError(f"route group {self.tag!r}: a scope needs an admit step, and an admit step a scope")


def route_handlers(groups: Sequence[RouteGroup]) -> list[HTTPRouteHandler]:
    """The Litestar handlers of every route of ``groups``, each built around its group's
    check, and before them one OPTIONS handler per path (``_options_handler``)."""
    methods: dict[str, set[str]] = {}
    for group in groups:
        for route in group.routes:
            methods.setdefault(route.router_path, set()).add(route.method.upper())
    options = [_options_handler(path, declared) for path, declared in methods.items()]
    return options + [_route_handler(group, route) for group in groups for route in group.routes]


def _options_handler(path: str, methods: set[str]) -> HTTPRouteHandler:
    """OPTIONS ``path``: 204 with ``Allow`` listing every method declared on the path.

    Litestar makes an OPTIONS handler by itself when a path's first handler is registered,
    and its Allow lists the methods the path had then: GET /events/{event_id}, then DELETE,
    answered ``Allow: GET, OPTIONS``. A path that already has an OPTIONS handler gets none,
    so this one, registered first, answers for the whole path. Public, like Litestar's: a
    CORS preflight carries no credentials."""
    allow = ", ".join(sorted({*methods, "OPTIONS"}))

    def options() -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": allow})

    handler = HTTPRouteHandler(path, http_method=HttpMethod.OPTIONS, sync_to_thread=False, include_in_schema=False)
    return handler(options)


def _route_handler(group: RouteGroup, route: Route) -> HTTPRouteHandler:
    endpoint = route.handler if group.admit is None else _admitted(group, route)
    # Every handler here is quick or awaits: none needs a thread (None: a coroutine's own).
    threads = None if inspect.iscoroutinefunction(endpoint) else False
    handler = HTTPRouteHandler(
        route.router_path,
        http_method=HttpMethod(route.method.upper()),
        status_code=route.status,
        sync_to_thread=threads,
    )
    return handler(endpoint)


def _admitted(group: RouteGroup, route: Route) -> Callable[..., Awaitable[Any]]:
    """``route.handler`` behind its group's check; the handler gets the caller's key, then
    the path parameters by name."""
    admit, scope, handler, query = group.admit, group.scope, route.handler, route.query
    assert admit is not None  # a group with a check: RouteGroup's rule says it has both
    assert scope is not None
    on_refused = group.on_refused or _ignore

    async def endpoint(request: Request[Any, Any, Any]) -> Any:
        try:
            key = await admit(request, scope)
            refuse_unknown_query(request.scope, query)
            return await handler(request, key, **request.path_params)
        except AppError as exc:
            on_refused(exc)
            raise

    # Litestar reads the answer's kind (bytes as they are, a Struct to encode, nothing for a
    # 204) from the return annotation: the handler's own.
    endpoint.__annotations__ = {"request": Request, "return": typing.get_type_hints(handler)["return"]}
    endpoint.__name__, endpoint.__qualname__ = handler.__name__, handler.__qualname__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def _ignore(exc: AppError) -> None:
    del exc


def refuse_unknown_query(scope: Mapping[str, Any], allowed: frozenset[str] = frozenset()) -> None:
    """400 for query parameters a route does not take, and for one given twice: a misspelt
    filter (``?evnet_type=``) would otherwise page through the whole inbox, and with
    ``?consumer=a&consumer=b`` a proxy and this service could each read another consumer."""
    raw: bytes = scope.get("query_string", b"")
    if not raw:
        return
    names = Counter(name for name, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True))
    unknown = sorted(names.keys() - allowed)
    if unknown:
        details = [ErrorDetail(name[:100], "Unknown query parameter.") for name in unknown[:10]]
        raise ValidationError("Unknown query parameters.", details)
    repeated = sorted(name for name, count in names.items() if count > 1)
    if repeated:
        details = [ErrorDetail(name, "Given more than once.") for name in repeated]
        raise ValidationError("Repeated query parameters.", details)
