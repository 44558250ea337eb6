"""Each API call as data (method, URL, body, success statuses, decoder), built once per call.

The sync and async clients send, retry and decode these alike; only their I/O differs. A call
is built once, so every attempt of it carries the same body, ``Idempotency-Key`` and
``X-Request-ID`` (the service's logs of all attempts share that id).
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from triggers_client._errors import ConfigurationError, UnexpectedAnswer, ValidationFailed
from triggers_client._models import (
    Accepted,
    AckResult,
    BatchResult,
    Claim,
    ClaimedEvent,
    ConsumerInfo,
    ConsumerList,
    ErrorDetail,
    Event,
    ExtendResult,
    InboxPage,
    NackResult,
    NewEvent,
    ServiceStatus,
)
from triggers_client._version import __version__

T = TypeVar("T")
Order = Literal["asc", "desc"]
# Where a new consumer starts: "now", "earliest" (as far back as retention keeps events), or a
# time (an aware datetime, or RFC 3339 text).
Start = Literal["now", "earliest"] | datetime | str

USER_AGENT = (
    f"triggers-client/{__version__} python/{sys.version_info.major}.{sys.version_info.minor} httpx/{httpx.__version__}"
)
# Decimals go out as JSON numbers, digit for digit (msgspec's default writes them as strings).
_ENCODER = msgspec.json.Encoder(decimal_format="number")
_DECODE_ACCEPTED = msgspec.json.Decoder(Accepted).decode
_DECODE_BATCHRESULT = msgspec.json.Decoder(BatchResult).decode
_DECODE_INBOXPAGE = msgspec.json.Decoder(InboxPage).decode
_DECODE_EVENT = msgspec.json.Decoder(Event).decode
_DECODE_ACKRESULT = msgspec.json.Decoder(AckResult).decode
_DECODE_SERVICESTATUS = msgspec.json.Decoder(ServiceStatus).decode
_DECODE_CONSUMER = msgspec.json.Decoder(ConsumerInfo).decode
_DECODE_CONSUMERLIST = msgspec.json.Decoder(ConsumerList).decode
_DECODE_CLAIM = msgspec.json.Decoder(Claim).decode
_DECODE_NACKRESULT = msgspec.json.Decoder(NackResult).decode
_DECODE_EXTENDRESULT = msgspec.json.Decoder(ExtendResult).decode
# A waiting claim's answer may come wait_s late: the read timeout allows for that, and more.
_WAIT_SLACK_S = 10.0


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    url: str
    ok: frozenset[int]
    decode: Callable[[bytes], T]
    content: bytes | None = None
    params: Mapping[str, str | int] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None  # None: the client's

    def wire_headers(self) -> list[tuple[bytes, bytes]]:
        # UTF-8, as the service reads them: httpx would encode a str as ASCII and fail on an
        # idempotency key such as "clé" (UnicodeEncodeError, out of every error class).
        return [(name.encode(), value.encode()) for name, value in self.headers.items()]

    def result(self, response: httpx.Response) -> T:
        try:
            return self.decode(response.content)
        except msgspec.MsgspecError as exc:
            raise UnexpectedAnswer(
                f"the {response.status_code} answer is not what the API documents: {exc}",
                status=response.status_code,
                error_code="UNEXPECTED_ANSWER",
                correlation_id=response.headers.get("x-request-id"),
            ) from None


def base_headers(api_key: str) -> dict[str, str]:
    """The headers of every request; ConfigurationError for a key no header can carry."""
    if not _TOKEN.fullmatch(api_key):
        # Never shown: a key read with its trailing newline is still a secret.
        raise ConfigurationError(
            "api_key is empty or holds a space, a control or a non-ASCII character, which no header "
            "can carry (read with its trailing newline?)",
            error_code="INVALID_API_KEY",
        )
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT, "Accept": "application/json"}


def base_url(name: str, url: str) -> str:
    """``url`` without surrounding blanks and trailing slashes; ConfigurationError if unusable.

    Refused here, at construction, rather than by every call: a URL without a scheme would
    otherwise fail each request in httpx, and one with a bad port as "connection refused", retried.
    """
    text = url.strip()
    try:
        problem = _url_problem(text, httpx.URL(text))
    except httpx.InvalidURL as exc:
        problem = f"is not a URL ({exc})"
    if problem is not None:
        shown = repr(text) if "@" not in text else "(not shown: it may hold credentials)"
        raise ConfigurationError(f"{name} {shown} {problem}", error_code="INVALID_BASE_URL")
    return text.rstrip("/")


_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a bearer token is made of


def _url_problem(text: str, url: httpx.URL) -> str | None:
    if not text:
        return "is empty: write it as http://host:port"
    if "://" not in text:
        return f"has no scheme: write it as http://{text.lstrip('/')} (or https://)"
    problems = (
        (url.scheme not in {"http", "https"}, f"has the scheme {url.scheme!r}: the API is served over http or https"),
        (not url.host, "names no host: write it as http://host:port"),
        (url.port is not None and not 0 < url.port < 2**16, f"has the port {url.port}, outside 1 to 65535"),
        (bool(url.userinfo), "holds credentials: the API key goes in api_key (httpx would send these instead)"),
        (bool(url.query or url.fragment), "has a query or fragment: the client appends the API's paths to it"),
    )
    return next((problem for found, problem in problems if found), None)


def new_idempotency_key() -> str:
    return f"client-{uuid.uuid4().hex}"


class Calls:
    """The API's calls against one deployment (ingest and inbox base URLs)."""

    def __init__(self, ingest_url: str, inbox_url: str) -> None:
        self.ingest = base_url("ingest_url", ingest_url)
        self.inbox = base_url("inbox_url", inbox_url)

    def send(self, event_type: str, payload: Mapping[str, Any], idempotency_key: str | None) -> Call[Accepted]:
        # The key rides in the header (the body then does not repeat it: the service refuses
        # the two when they differ, and they never do here).
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key(), **_json_headers()}
        body = _ENCODER.encode({"event_type": event_type, "payload": payload})
        return Call("POST", f"{self.ingest}/events", frozenset({202}), _DECODE_ACCEPTED, body, None, headers)

    def send_batch(self, events: Sequence[NewEvent | Mapping[str, Any]]) -> Call[BatchResult]:
        body = _ENCODER.encode({"events": [_with_key(event) for event in events]})
        ok = frozenset({202, 207})
        return Call("POST", f"{self.ingest}/events/batch", ok, _DECODE_BATCHRESULT, body, None, _json_headers())

    def inbox_page(  # noqa: PLR0917 - the page's query, one parameter each
        self,
        limit: int,
        cursor: str | None,
        event_type: str | None,
        order: Order,
        consumer: str | None = None,
        wait_s: int = 0,
    ) -> Call[InboxPage]:
        params: dict[str, str | int] = {"limit": limit, "order": order, **_consumer(consumer)}
        if wait_s:  # left out otherwise: the request is what it was before long polling
            params["wait_s"] = wait_s
        if cursor is not None:
            params["cursor"] = cursor
        if event_type is not None:
            params["event_type"] = event_type
        timeout = (wait_s + _WAIT_SLACK_S) if wait_s else None
        url = f"{self.inbox}/inbox"
        return Call("GET", url, frozenset({200}), _DECODE_INBOXPAGE, None, params, _request_id(), timeout)

    def get(self, event_id: str, consumer: str | None = None) -> Call[Event]:
        url, params = self._event_url(event_id), _consumer(consumer)
        return Call("GET", url, frozenset({200}), _DECODE_EVENT, None, params, _request_id())

    def ack(self, event_id: str, consumer: str | None = None) -> Call[None]:
        url, params = self._event_url(event_id), _consumer(consumer)
        return Call("DELETE", url, frozenset({204}), _nothing, None, params, _request_id())

    def ack_many(self, event_ids: Sequence[str], consumer: str | None = None) -> Call[AckResult]:
        body, params = _ENCODER.encode({"event_ids": list(event_ids)}), _consumer(consumer)
        ok = frozenset({200})
        return Call("POST", f"{self.inbox}/inbox/ack", ok, _DECODE_ACKRESULT, body, params, _json_headers())

    # Leases (POST /inbox/claim, /inbox/nack, /inbox/extend; acknowledgement by token)

    def claim(self, limit: int, lease_s: int, wait_s: int, consumer: str | None = None) -> Call[Claim]:
        body, params = _ENCODER.encode({"limit": limit, "lease_s": lease_s, "wait_s": wait_s}), _consumer(consumer)
        url, timeout = f"{self.inbox}/inbox/claim", (wait_s + _WAIT_SLACK_S) if wait_s else None
        return Call("POST", url, frozenset({200}), _DECODE_CLAIM, body, params, _json_headers(), timeout)

    def ack_leases(self, tokens: Sequence[str], consumer: str | None = None) -> Call[AckResult]:
        body, params = _ENCODER.encode({"lease_tokens": list(tokens)}), _consumer(consumer)
        return Call(
            "POST", f"{self.inbox}/inbox/ack", frozenset({200}), _DECODE_ACKRESULT, body, params, _json_headers()
        )

    def nack(self, tokens: Sequence[str], delay_s: int, consumer: str | None = None) -> Call[NackResult]:
        body, params = _ENCODER.encode({"lease_tokens": list(tokens), "delay_s": delay_s}), _consumer(consumer)
        url = f"{self.inbox}/inbox/nack"
        return Call("POST", url, frozenset({200}), _DECODE_NACKRESULT, body, params, _json_headers())

    def extend(self, tokens: Sequence[str], lease_s: int, consumer: str | None = None) -> Call[ExtendResult]:
        body, params = _ENCODER.encode({"lease_tokens": list(tokens), "lease_s": lease_s}), _consumer(consumer)
        url = f"{self.inbox}/inbox/extend"
        return Call("POST", url, frozenset({200}), _DECODE_EXTENDRESULT, body, params, _json_headers())

    # Named consumers (the inbox service's /consumers routes)

    def create_consumer(self, name: str, event_types: Sequence[str] | None, start: Start) -> Call[ConsumerInfo]:
        fields = {"name": name, "event_types": _types(event_types), "start": _start(start)}
        url, body = f"{self.inbox}/consumers", _ENCODER.encode(fields)
        return Call("POST", url, frozenset({201}), _DECODE_CONSUMER, body, None, _json_headers())

    def consumers(self) -> Call[ConsumerList]:
        url = f"{self.inbox}/consumers"
        return Call("GET", url, frozenset({200}), _DECODE_CONSUMERLIST, None, None, _request_id())

    def consumer(self, name: str) -> Call[ConsumerInfo]:
        url = self._consumer_url(name)
        return Call("GET", url, frozenset({200}), _DECODE_CONSUMER, None, None, _request_id())

    def update_consumer(self, name: str, event_types: Sequence[str] | None) -> Call[ConsumerInfo]:
        url, body = self._consumer_url(name), _ENCODER.encode({"event_types": _types(event_types)})
        return Call("PATCH", url, frozenset({200}), _DECODE_CONSUMER, body, None, _json_headers())

    def delete_consumer(self, name: str) -> Call[None]:
        url = self._consumer_url(name)
        return Call("DELETE", url, frozenset({204}), _nothing, None, None, _request_id())

    def status(self, service: Literal["ingest", "inbox"]) -> Call[ServiceStatus]:
        base = self.ingest if service == "ingest" else self.inbox
        return Call("GET", f"{base}/status", frozenset({200}), _DECODE_SERVICESTATUS, None, None, _request_id())

    def _event_url(self, event_id: str) -> str:
        # Quoted whole: an id holding "/", "?" or "#" must name an event, not another route.
        return f"{self.inbox}/events/{quote(event_id, safe='')}"

    def _consumer_url(self, name: str) -> str:
        return f"{self.inbox}/consumers/{quote(name, safe='')}"  # quoted whole, as an event id


def lease_tokens(events: Sequence[ClaimedEvent | str]) -> list[str]:
    """The lease tokens of claimed events (or tokens as they are)."""
    if isinstance(events, (str, ClaimedEvent)):  # one event where a list is due: a list of one
        events = [events]
    return [e if isinstance(e, str) else e.lease_token for e in events]


def timeout_of(call: Call[Any]) -> dict[str, Any]:
    """The request's own timeout, when the call has one (a waiting claim); else the client's."""
    return {} if call.timeout_s is None else {"timeout": httpx.Timeout(call.timeout_s)}


def _consumer(name: str | None) -> dict[str, str]:
    # Left out for the default consumer: the request is then byte for byte what it was before
    # consumers existed, and a service without them still answers it.
    return {} if name is None else {"consumer": name}


def _types(event_types: Sequence[str] | None) -> list[str] | None:
    if isinstance(event_types, str):
        # A str is a Sequence[str]: "order.*" would go out as ["o", "r", ...].
        raise ValidationFailed(
            "event_types is a list of types (or None for every type), not one string: write [event_types]",
            error_code="INVALID_REQUEST",
            details=(ErrorDetail("event_types", "A list of event types, not a string."),),
        )
    return None if event_types is None else list(event_types)


def _start(start: Start) -> str:
    if not isinstance(start, datetime):
        return start
    if start.tzinfo is None or start.utcoffset() is None:
        # A naive time means a different instant on each machine: refused, never guessed.
        raise ValidationFailed(
            "start is a datetime without a timezone: give it one (datetime.now(UTC), ...)",
            error_code="INVALID_REQUEST",
            details=(ErrorDetail("start", "A time with its timezone."),),
        )
    return start.isoformat()


def _with_key(event: NewEvent | Mapping[str, Any]) -> NewEvent | dict[str, Any]:
    if isinstance(event, NewEvent):
        return event if event.idempotency_key else msgspec.structs.replace(event, idempotency_key=new_idempotency_key())
    fields = dict(event)
    if not fields.get("idempotency_key"):
        fields["idempotency_key"] = new_idempotency_key()
    return fields


def _nothing(_: bytes) -> None:
    return None


def _request_id() -> dict[str, str]:
    return {"X-Request-ID": uuid.uuid4().hex}


def _json_headers() -> dict[str, str]:
    return {"Content-Type": "application/json", **_request_id()}
