"""The client's answer models stay in step with the OpenAPI documents the services serve.

The client restates the wire format (triggers_client/_models.py) rather than importing the
services', so nothing but this test notices when the API grows a field the client lacks, or
renames one. For each call the client makes, the model it decodes the answer into (read off
the call's own decoder) is held against the schema the served document gives that route and
status, nested models included, and the error body against every documented error answer:

- every property of the schema is a field of the model (by its JSON name), the optional ones
  too: an answer the client decodes would drop it unseen (unknown fields are ignored);
- every field of the model is a property of the schema;
- a field the model requires is required by the schema (else a valid answer fails to decode);
- the field's JSON type is the property's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
import triggers_client._models as models
from triggers_client._calls import Call, Calls

from tests.conftest import Service

Document = dict[str, Any]
Schema = dict[str, Any]
CALLS = Calls("http://ingest.invalid", "http://inbox.invalid")  # the host says whose document
# Each call the client makes that answers with a body (ack's 204 has none).
ANSWERING: dict[str, Callable[[], Call[Any]]] = {
    "send": lambda: CALLS.send("t", {}, None),
    "send_batch": lambda: CALLS.send_batch([{"event_type": "t", "payload": {}}]),
    "inbox_page": lambda: CALLS.inbox_page(50, None, None, "asc"),
    "get": lambda: CALLS.get("01ARZ3NDEKTSV4RRFFQ69G5FAV"),
    "ack_many": lambda: CALLS.ack_many(["01ARZ3NDEKTSV4RRFFQ69G5FAV"]),
    "claim": lambda: CALLS.claim(10, 30, 0),
    "ack_leases": lambda: CALLS.ack_leases(["token"]),
    "nack": lambda: CALLS.nack(["token"], 0),
    "extend": lambda: CALLS.extend(["token"], 30),
    "create_consumer": lambda: CALLS.create_consumer("zap-1", None, "now"),
    "consumers": CALLS.consumers,
    "consumer": lambda: CALLS.consumer("zap-1"),
    "update_consumer": lambda: CALLS.update_consumer("zap-1", None),
    "ingest_status": lambda: CALLS.status("ingest"),
    "inbox_status": lambda: CALLS.status("inbox"),
}
# Models of the client's own making, no API body: both statuses at once, and a request.
NOT_ANSWERS = {models.Health, models.NewEvent}
# JSON Schema's type of each msgspec type a model field may have (datetimes travel as strings).
JSON_TYPES: dict[type[msgspec.inspect.Type], str] = {
    msgspec.inspect.StrType: "string",
    msgspec.inspect.DateTimeType: "string",
    msgspec.inspect.IntType: "integer",
    msgspec.inspect.FloatType: "number",
    msgspec.inspect.BoolType: "boolean",
    msgspec.inspect.DictType: "object",
    msgspec.inspect.ListType: "array",
    msgspec.inspect.NoneType: "null",
    msgspec.inspect.StructType: "object",
}


@pytest.fixture(scope="module")
def documents(http: httpx.Client, ingest: Service, inbox: Service) -> dict[str, Document]:
    """Each service's served document, by the host of the client's base URL for it."""
    return {
        "ingest.invalid": http.get(f"{ingest.url}/schema/openapi.json").raise_for_status().json(),
        "inbox.invalid": http.get(f"{inbox.url}/schema/openapi.json").raise_for_status().json(),
    }


@pytest.mark.parametrize("name", ANSWERING)
def test_each_answer_model_matches_its_documented_schema(documents: dict[str, Document], name: str) -> None:
    call = ANSWERING[name]()
    document = documents[urlsplit(call.url).hostname or ""]
    operation = _operation(document, call)
    model = _model_of(call)
    for status in sorted(call.ok):
        response = operation["responses"].get(str(status))
        assert response is not None, f"{call.method} {call.url}: {status} is not documented"
        schema = response["content"]["application/json"]["schema"]
        mismatches = list(_mismatches(document, model, schema, model.__name__))
        assert not mismatches, "\n".join(mismatches)


def test_the_error_body_matches_every_documented_error_answer(documents: dict[str, Document]) -> None:
    checked = 0
    for document in documents.values():
        for path, item in document["paths"].items():
            for method, operation in item.items():
                for status, response in operation["responses"].items():
                    content = response.get("content", {}).get("application/json")
                    if int(status) < 400 or content is None:
                        continue
                    where = f"ErrorBody ({method} {path} {status})"
                    mismatches = list(_mismatches(document, models.ErrorBody, content["schema"], where))
                    assert not mismatches, "\n".join(mismatches)
                    checked += 1
    assert checked >= 20  # every route documents its 401 and 403 at least


def test_every_answer_model_is_checked() -> None:
    # A model added to _models.py for a new answer must come with its call (ANSWERING above).
    reached = {models.ErrorBody} | {s for build in ANSWERING.values() for s in _structs(_model_of(build()))}
    defined = {v for v in vars(models).values() if isinstance(v, type) and issubclass(v, msgspec.Struct)}
    assert {m.__name__ for m in defined - NOT_ANSWERS - reached} == set()
    assert reached <= defined


def _operation(document: Document, call: Call[Any]) -> Schema:
    path = urlsplit(call.url).path
    for template, item in document["paths"].items():
        if re.fullmatch(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)), path):
            operation = item.get(call.method.lower())
            assert operation is not None, f"{call.method} {template} is not documented"
            return dict(operation)
    raise AssertionError(f"{path} is in no path of the document")


def _model_of(call: Call[Any]) -> type[msgspec.Struct]:
    decoder = call.decode.__self__  # type: ignore[attr-defined]  # a bound Decoder.decode
    assert isinstance(decoder, msgspec.json.Decoder)
    model = decoder.type
    assert isinstance(model, type)
    assert issubclass(model, msgspec.Struct)
    return model


def _structs(model: type[msgspec.Struct]) -> Iterator[type[msgspec.Struct]]:
    """``model`` and every model its fields hold, however deep."""
    yield model
    for field in msgspec.structs.fields(model):
        for nested in _nested(msgspec.inspect.type_info(field.type)):
            yield from _structs(nested.cls)


def _nested(info: msgspec.inspect.Type) -> list[msgspec.inspect.StructType]:
    if isinstance(info, msgspec.inspect.StructType):
        return [info]
    if isinstance(info, msgspec.inspect.ListType):
        return _nested(info.item_type)
    if isinstance(info, msgspec.inspect.UnionType):
        return [s for t in info.types for s in _nested(t)]
    return []


def _mismatches(document: Document, model: type[msgspec.Struct], schema: Schema, where: str) -> Iterator[str]:
    """What differs between ``model`` and ``schema`` (a $ref is followed), nested models included."""
    schema = _resolve(document, schema)
    properties: dict[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", []))
    fields = {field.encode_name: field for field in msgspec.structs.fields(model)}
    for name in sorted(set(properties) - set(fields)):
        kind = "required" if name in required else "optional"
        yield f"{where}: the documented {name!r} ({kind}) is no field of the client's {model.__name__}"
    for name, field in fields.items():
        if name not in properties:
            yield f"{where}: the client's {model.__name__}.{field.name} ({name!r}) is not documented"
            continue
        if field.required and name not in required:
            yield f"{where}: {name!r} is required by the client but optional in the document"
        yield from _field_mismatches(document, field, properties[name], f"{where}.{name}")


def _field_mismatches(document: Document, field: msgspec.structs.FieldInfo, prop: Schema, where: str) -> Iterator[str]:
    info = msgspec.inspect.type_info(field.type)
    ours = _json_types(info)
    theirs = _documented_types(document, prop)
    if ours is not None and theirs is not None and ours != theirs:
        yield f"{where}: the client reads {sorted(ours)}, the document says {sorted(theirs)}"
    nested, refs = _nested(info), list(_refs(prop))
    if len(nested) != len(refs):
        yield f"{where}: the client holds {len(nested)} model(s) here, the document {len(refs)}"
        return
    for struct, ref in zip(nested, refs, strict=True):
        yield from _mismatches(document, struct.cls, {"$ref": ref}, f"{where}[{struct.cls.__name__}]")


def _json_types(info: msgspec.inspect.Type) -> set[str] | None:
    """The JSON types a field's type reads; None for Any (anything goes)."""
    if isinstance(info, msgspec.inspect.AnyType):
        return None
    if isinstance(info, msgspec.inspect.UnionType):
        parts = [_json_types(t) for t in info.types]
        return None if any(p is None for p in parts) else {t for p in parts if p for t in p}
    return {JSON_TYPES[type(info)]}


def _documented_types(document: Document, prop: Schema) -> set[str] | None:
    prop = _resolve(document, prop)
    if "anyOf" in prop:
        parts = [_documented_types(document, p) for p in prop["anyOf"]]
        return None if any(p is None for p in parts) else {t for p in parts if p for t in p}
    kind = prop.get("type")
    if kind is None:
        return None
    return {kind} if isinstance(kind, str) else set(kind)


def _refs(prop: Schema) -> Iterator[str]:
    if "$ref" in prop:
        yield prop["$ref"]
    if "items" in prop:
        yield from _refs(prop["items"])
    for part in prop.get("anyOf", []):
        yield from _refs(part)


def _resolve(document: Document, schema: Schema) -> Schema:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    return dict(document["components"]["schemas"][ref.rsplit("/", 1)[1]])
