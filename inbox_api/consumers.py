"""The ``/consumers`` routes (``CONSUMER_ROUTES``: declared once, the router and the OpenAPI
document both come from them) and ``partition_of``, which turns an inbox call's ``consumer``
into the partition the call reads and writes.

Every change goes through ``shared.storage.registry.ConsumerRegistry``, the class the
operators' CLI uses too. The ``default`` consumer is never stored: it is the account's own
partition, every type, from the earliest event retained, and it cannot be changed (409).
Bodies are decoded once into the Structs of inbox_api/schemas.py; what their schema cannot
say (a name ``default``, a bare ``.*``, a time that does not exist) is refused here with a
400 naming the field, before anything is stored.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import msgspec
from litestar import Request

from inbox_api.schemas import (
    CONSUMER_EXAMPLE,
    CONSUMER_IN_EXAMPLE,
    CONSUMER_LIST_EXAMPLE,
    CONSUMER_NAME,
    CONSUMER_PATCH_EXAMPLE,
    RFC3339_TIME,
    Backfill,
    ConsumerIn,
    ConsumerList,
    ConsumerOut,
    ConsumerPatch,
)
from shared.contract.ids import rfc3339
from shared.errors import DefaultConsumer, ErrorDetail, NotFound, ValidationError
from shared.keys.model import KeyRecord
from shared.storage import consumers
from shared.storage.consumers import DEFAULT, Consumer, Job
from shared.storage.counters import Counts
from shared.storage.registry import KEEP, NO_SUCH_CONSUMER, ConsumerRegistry
from shared.web.body import BodyDeadlines
from shared.web.decoding import decode_unique_json, require_json
from shared.web.routes import Content, Parameter, Refusal, Route

MAX_CONSUMER_BODY_BYTES = 32 * 1024  # 50 patterns of 255 characters, JSON-escaped, fit
_create_decoder = msgspec.json.Decoder(ConsumerIn)
_patch_decoder = msgspec.json.Decoder(ConsumerPatch)
_US = 1_000_000
_RFC3339 = re.compile(RFC3339_TIME)


class _Context(Protocol):
    """What these routes use of the inbox's context (inbox_api/app.py ``InboxContext``)."""

    registry: ConsumerRegistry
    bodies: BodyDeadlines


def _context(request: Request[Any, Any, Any]) -> _Context:
    context: _Context = request.app.state.inbox
    return context


# The consumer of an inbox call


CONSUMER_PARAMETER = Parameter(
    "consumer",
    "query",
    {"type": "string", "pattern": CONSUMER_NAME, "maxLength": consumers.MAX_NAME_CHARS, "default": DEFAULT},
    "The consumer whose events these are (GET /consumers). Unknown: 404.",
)


def consumer_name(request: Request[Any, Any, Any]) -> str | None:
    """The call's named consumer; None for ``default`` (the account's own inbox)."""
    name: str | None = request.query_params.get("consumer")
    if name is None or name == DEFAULT:
        return None
    if not consumers.valid_name(name):
        raise ValidationError("Invalid query parameters.", [ErrorDetail("consumer", _NAME_RULE)])
    return name


class Target(NamedTuple):
    """What an inbox call reads and writes: a consumer's partition, and its max deliveries."""

    partition: str
    max_deliveries: int


async def partition_of(request: Request[Any, Any, Any], key: KeyRecord, name: str | None) -> str:
    """Where the call's events live: the account's partition for ``default``, else the
    named consumer's (read consistently: a consumer just created is found, a deleted one not)."""
    return (await target_of(request, key, name)).partition


async def target_of(request: Request[Any, Any, Any], key: KeyRecord, name: str | None) -> Target:
    """``partition_of``, with the consumer's ``max_deliveries`` (the default's: 10)."""
    if name is None:
        return Target(key.account_id, consumers.DEFAULT_MAX_DELIVERIES)
    consumer = await _context(request).registry.get(key.account_id, name)
    return Target(consumer.partition, consumer.max_deliveries)


# The routes' handlers


async def create_consumer(request: Request[Any, Any, Any], key: KeyRecord) -> ConsumerOut:
    body = await _body(request, _create_decoder)
    details = _name_problems(body.name)
    event_types = _filter(body.event_types, details)
    start_us = _start_us(body.start, details)
    if details:
        raise ValidationError("Invalid request body.", details)
    registry = _context(request).registry
    consumer = await registry.create(key.account_id, body.name, event_types, start_us, body.max_deliveries)
    return _out(consumer, Counts())


async def list_consumers(request: Request[Any, Any, Any], key: KeyRecord) -> ConsumerList:
    registry = _context(request).registry
    named = await registry.list(key.account_id)
    counts = await asyncio.gather(registry.counts(key.account_id), *(registry.counts(c.partition) for c in named))
    return ConsumerList([_default_out(counts[0]), *(_out(c, n) for c, n in zip(named, counts[1:], strict=True))])


async def get_consumer(request: Request[Any, Any, Any], key: KeyRecord, name: str) -> ConsumerOut:
    registry = _context(request).registry
    if name == DEFAULT:
        return _default_out(await registry.counts(key.account_id))
    consumer = await registry.get(key.account_id, _known(name))
    return _out(consumer, await registry.counts(consumer.partition))


async def update_consumer(request: Request[Any, Any, Any], key: KeyRecord, name: str) -> ConsumerOut:
    _changeable(name)
    body = await _body(request, _patch_decoder)
    details: list[ErrorDetail] = []
    if body.event_types is msgspec.UNSET and body.max_deliveries is msgspec.UNSET:  # the schema's minProperties
        details.append(ErrorDetail("$", "Give event_types, max_deliveries or both."))
    event_types = KEEP if body.event_types is msgspec.UNSET else _filter(body.event_types, details)
    if details:
        raise ValidationError("Invalid request body.", details)
    registry = _context(request).registry
    max_deliveries = None if body.max_deliveries is msgspec.UNSET else body.max_deliveries
    consumer = await registry.update(key.account_id, _known(name), event_types, max_deliveries)
    return _out(consumer, await registry.counts(consumer.partition))


async def delete_consumer(request: Request[Any, Any, Any], key: KeyRecord, name: str) -> None:
    _changeable(name)
    await _context(request).registry.delete(key.account_id, _known(name))


# Reading and checking bodies

_NAME_RULE = "Must be 1 to 64 of A-Z, a-z, 0-9, '_', '.', '-', not dots only."


async def _body(request: Request[Any, Any, Any], decoder: msgspec.json.Decoder[Any]) -> Any:
    require_json(request.headers.get("content-type"))
    raw = await _context(request).bodies.read(
        request.receive, request.headers.get("content-length"), MAX_CONSUMER_BODY_BYTES
    )
    return decode_unique_json(decoder, raw)


def _name_problems(name: str) -> list[ErrorDetail]:
    # The schema's pattern is searched with ``$``, which lets a trailing newline through.
    if not consumers.valid_name(name):
        return [ErrorDetail("$.name", _NAME_RULE)]
    if name == DEFAULT:
        return [ErrorDetail("$.name", "'default' is every account's own consumer: choose another name.")]
    return []


def _filter(event_types: list[str] | None, details: list[ErrorDetail]) -> tuple[str, ...] | None:
    """The filter as stored: each entry once, in the order given."""
    if event_types is None:
        return None
    for index, pattern in enumerate(event_types):
        problem = consumers.pattern_problem(pattern)
        if problem is not None:
            details.append(ErrorDetail(f"$.event_types[{index}]", problem))
    return tuple(dict.fromkeys(event_types))


def _start_us(start: str, details: list[ErrorDetail]) -> int | None:
    """``earliest``: 0; ``now``: None (the creation's instant, less ``consumers.NOW_LEEWAY_US``);
    a time: its microsecond (from 1970 to 9999 in UTC)."""
    if start == "earliest":
        return 0
    if start == "now":
        return None  # the registry's: the creation's own instant
    # The schema's pattern is searched with ``$``: matched again in full, then read.
    moment = None
    if _RFC3339.fullmatch(start):
        try:
            moment = datetime.fromisoformat(start.upper().replace("Z", "+00:00"))
        except ValueError:  # month 13, hour 25, an offset past a day
            moment = None
    if moment is None:
        details.append(ErrorDetail("$.start", "Must be 'now', 'earliest' or an RFC 3339 time with its offset."))
        return 0
    try:
        stamp_us = round(moment.timestamp() * _US)
    except (OverflowError, ValueError):  # year 1 moved by its offset before year 1
        stamp_us = -1
    if not 0 <= stamp_us <= consumers.LATEST_START_US:
        details.append(ErrorDetail("$.start", "Must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z."))
        return 0
    return stamp_us


def _known(name: str) -> str:
    """A path's name; one no consumer can have is no consumer."""
    if not consumers.valid_name(name):
        raise NotFound(NO_SUCH_CONSUMER)
    return name


def _changeable(name: str) -> None:
    if name == DEFAULT:
        raise DefaultConsumer("The default consumer cannot be changed or deleted.")


# Answers


def _out(consumer: Consumer, counts: Counts) -> ConsumerOut:
    return ConsumerOut(
        name=consumer.name,
        event_types=list(consumer.event_types) if consumer.event_types is not None else None,
        start="earliest" if consumer.start_us == 0 else rfc3339(consumer.start_us),
        created_at=rfc3339(consumer.created_at_us),
        total_undelivered=counts.undelivered,
        backfill=Backfill(
            done=consumer.job is not Job.BACKFILL, events_walked=consumer.walked, events_copied=consumer.delivered
        ),
        in_flight=counts.in_flight,
        failed=counts.failed,
        max_deliveries=consumer.max_deliveries,
    )


def _default_out(counts: Counts) -> ConsumerOut:
    return ConsumerOut(DEFAULT, None, "earliest", None, counts.undelivered, None, counts.in_flight, counts.failed)


# The declarations

_NAME = Parameter("name", "path", {"type": "string", "minLength": 1, "maxLength": 64}, required=True)
_PATTERN_REFUSAL = Refusal(
    "VALIDATION_ERROR", "$.event_types", "An entry is '.*' alone (the details name it).", "$.event_types[0]"
)
_CREATE_REFUSALS = (
    Refusal("VALIDATION_ERROR", "$.name", "The name is 'default' (every account's own consumer).", "$.name"),
    _PATTERN_REFUSAL,
    Refusal(
        "VALIDATION_ERROR", "$.start", "The time does not exist (month 13), is before 1970 or after 9999.", "$.start"
    ),
)

CONSUMER_ROUTES = (
    Route(
        "post",
        "/consumers",
        "Create a named consumer of the account's events",
        create_consumer,
        201,
        answer=Content(ConsumerOut, CONSUMER_EXAMPLE),
        body=Content(ConsumerIn, CONSUMER_IN_EXAMPLE),
        errors=(400, 409, 413, 415, 429, 503),
        refusals=_CREATE_REFUSALS,
    ),
    Route(
        "get",
        "/consumers",
        "The account's consumers: default first, then by name",
        list_consumers,
        200,
        answer=Content(ConsumerList, CONSUMER_LIST_EXAMPLE),
        errors=(429, 503),
    ),
    Route(
        "get",
        "/consumers/{name}",
        "One consumer, with its undelivered count",
        get_consumer,
        200,
        answer=Content(ConsumerOut, CONSUMER_EXAMPLE),
        parameters=(_NAME,),
        errors=(404, 429, 503),
    ),
    Route(
        "patch",
        "/consumers/{name}",
        "Change a consumer's filter (for events stored from then on) or its max_deliveries",
        update_consumer,
        200,
        answer=Content(ConsumerOut, CONSUMER_EXAMPLE),
        body=Content(ConsumerPatch, CONSUMER_PATCH_EXAMPLE),
        parameters=(_NAME,),
        errors=(400, 404, 409, 413, 415, 429, 503),
        refusals=(_PATTERN_REFUSAL,),
    ),
    Route(
        "delete",
        "/consumers/{name}",
        "Delete a consumer: its name and its place in the account's limit are free at once",
        delete_consumer,
        204,
        parameters=(_NAME,),
        errors=(404, 409, 429, 503),
    ),
)
