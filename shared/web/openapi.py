"""OpenAPI 3.1 documents, built from the route declarations (shared/web/routes.py).

The handlers read their bodies themselves (decode once, errors in the contract's shape), so
Litestar cannot infer request schemas from their signatures. Each route's declaration states
its bodies instead, as the very msgspec Structs the code decodes and encodes, with an example
of each request and answer; error answers take their codes and meanings from the table in
shared/errors.py. The document is built once at startup from the same declarations the
router is built from, and served as bytes from GET /schema/openapi.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from litestar import Response

from shared.errors import answer_for
from shared.web.docs_ui import docs_ui_routes
from shared.web.http import ErrorBody
from shared.web.routes import Content, Refusal, Route, RouteGroup

REF = "#/components/schemas/{name}"
DOCUMENT_PATH = "/schema/openapi.json"
_SECURITY_SCHEME = "bearer"


def error_example(status: int) -> dict[str, Any]:
    answer = answer_for(status)
    details = [{"field": "$.event_type", "message": "Expected `str`, got `int`"}] if status == 400 else []
    return {
        "status": status,
        "error_code": answer.code,
        "message": answer.meaning,
        "details": details,
        "correlation_id": "6f1c2b9e0d4a4f7e9a3b2c1d",
    }


def _json(content: Content | None, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {}
    if content is not None:
        media["schema"] = {"$ref": REF.format(name=content.schema.__name__)}
        example = content.example
    if example is not None:
        media["example"] = example
    return {"application/json": media}


def _error_json(status: int, refusals: tuple[Refusal, ...] = ()) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": {"$ref": REF.format(name=ErrorBody.__name__)}}
    if not refusals:
        media["example"] = error_example(status)
        return {"application/json": media}
    # One named example per documented refusal, beside the schema-invalid request's.
    examples = {"invalid_request": {"summary": "A request the schema forbids", "value": error_example(status)}}
    for number, refusal in enumerate(refusals, 1):
        examples[f"refusal_{number}"] = {
            "summary": f"{refusal.parameter}: {refusal.when}",
            "value": refusal_example(refusal),
        }
    media["examples"] = examples
    return {"application/json": media}


def refusal_example(refusal: Refusal) -> dict[str, Any]:
    return {
        **error_example(400),
        "error_code": refusal.code,
        "message": refusal.when,
        "details": [{"field": refusal.field, "message": refusal.when}] if refusal.field else [],
    }


def _error_description(status: int, refusals: tuple[Refusal, ...]) -> str:
    meaning = answer_for(status).meaning
    if not refusals:
        return meaning
    listed = " ".join(f"{r.code} (`{r.parameter}`): {r.when}" for r in refusals)
    return f"{meaning} Also refused although the schema allows them: {listed}"


def operation_id(route: Route) -> str:
    """The route's operationId: get_events_event_id (the docs pages name operations by it)."""
    path = route.path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    return f"{route.method}_{path}"


def _operation(group: RouteGroup, route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(route.status): {"description": "No content." if route.answer is None else "Success."}
    }
    if route.answer is not None:
        responses[str(route.status)]["content"] = _json(route.answer)
    for status, (description, content) in route.also.items():
        responses[str(status)] = {"description": description, "content": _json(content)}
    authenticated = group.scope is not None
    # Any request can be malformed (an invalid Host header, an unknown query parameter).
    for status in sorted({400, *route.errors, *((401, 403) if authenticated else ())}):
        refusals = route.refusals if status == 400 else ()
        responses[str(status)] = {
            "description": _error_description(status, refusals),
            "content": _error_json(status, refusals),
        }
    document: dict[str, Any] = {
        "summary": route.summary,
        "tags": [group.tag],
        "operationId": operation_id(route),
        "responses": responses,
    }
    if group.scope is not None:
        # OpenAPI 3.1 lets a non-OAuth scheme list the roles a call needs: the key's scope.
        document["security"] = [{_SECURITY_SCHEME: [group.scope.value]}]
    if route.parameters:
        document["parameters"] = [p.document() for p in route.parameters]
    if route.body is not None:
        document["requestBody"] = {"required": True, "content": _json(route.body)}
    return document


def _structs(groups: Sequence[RouteGroup]) -> list[type]:
    structs: set[type] = {ErrorBody}
    for group in groups:
        for route in group.routes:
            structs.update(c.schema for c in (route.answer, route.body) if c is not None)
            structs.update(content.schema for _, content in route.also.values())
    return sorted(structs, key=lambda t: t.__name__)


def build_openapi(title: str, version: str, groups: Sequence[RouteGroup]) -> bytes:
    """The document of every documented route of ``groups``."""
    structs = _structs(groups)
    _, components = msgspec.json.schema_components(structs, ref_template=REF)
    for struct in structs:  # what a Struct's schema cannot say by its fields (inbox_api/schemas.py)
        schema = components.get(struct.__name__, {})
        schema.update(getattr(struct, "json_schema_extra", {}))  # AckIn: one field at least
        for name in getattr(struct, "whole_numbers", ()):  # a float field held to whole numbers
            schema["properties"][name]["type"] = "integer"
    paths: dict[str, dict[str, Any]] = {}
    for group in groups:
        for route in group.routes:
            if route.documented:
                paths.setdefault(route.path, {})[route.method] = _operation(group, route)
    document = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                _SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "description": "trg_<key id>_<secret>"}
            },
        },
    }
    return msgspec.json.encode(document)


def document_routes(document: bytes) -> RouteGroup:
    """GET /schema/openapi.json, serving ``document``, and the interactive pages over it
    (Swagger UI at /docs, ReDoc at /redoc: shared/web/docs_ui.py): public, and not in the
    document."""

    def openapi() -> Response[bytes]:
        return Response(document, media_type="application/json")

    route = Route("get", DOCUMENT_PATH, "This OpenAPI document", openapi, 200, documented=False)
    title = str(msgspec.json.decode(document)["info"]["title"])
    return RouteGroup("openapi", (route, *docs_ui_routes(title, DOCUMENT_PATH)))
