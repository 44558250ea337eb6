"""Property: whatever JSON text a producer sends, the answer tells what became of it.

Generated event bodies (extreme and long numbers, unicode of every plane, escapes, nesting
near the limit, duplicate keys written as raw text, payloads near the size limits, invalid
UTF-8 bytes spliced in anywhere) go through the real services, with another account's
traffic at the same moment. Then, once: every 2xx is stored exactly once and reads back
byte for byte as sent (modulo the U+FFFE/U+FFFF escapes), every 4xx stored nothing, no
answer is a 5xx, and the other account's events were all accepted and stored.
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Any

import httpx
import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Service
from tests.e2e.end_state import Post, expected_payload, post_all, settled_inbox, warm_up

EXAMPLES = int(os.environ.get("TRIGGERS_END_STATE_EXAMPLES", "25"))
LIMIT = 256 * 1024


def _string(chars: str) -> str:
    return '"' + chars + '"'


# Pieces of JSON text written out by hand, so that what Python values cannot hold (long and
# extreme numbers, duplicate keys, escapes as written) reaches the edge as such.
_numbers = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: msgspec.json.encode(f).decode()),
    st.sampled_from(
        [
            "1e400",
            "-1e309",
            "1.7976931348623157e308",
            "1e-9999",
            "1e-99999",
            "0.1000000000000000001",
            "-0.0",
            "1E+2",
            "9" * 100,
            "9" * 101,
            "1" + "0" * 400,
        ]
    ),
)
_escapes = st.sampled_from(["\\n", "\\u0000", "\\ud83d\\ude00", "\\ud800", "\\uFFFF", "\\/", "\\\\", '\\"', "\\u00e9"])
_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters='"\\'), max_size=12).map(
    lambda s: "".join(c if ord(c) >= 0x20 else f"\\u{ord(c):04x}" for c in s)
)
_strings = st.lists(_text | _escapes, max_size=3).map(lambda parts: _string("".join(parts)))
_keys = st.sampled_from(['"a"', '"b"', '"é"', '"a b"']) | _strings


def _value(depth: int) -> st.SearchStrategy[str]:
    leaf = _numbers | _strings | st.sampled_from(["true", "false", "null"])
    if depth >= 3:
        return leaf
    inner = st.deferred(lambda: _value(depth + 1))
    return leaf | _array(inner) | _object(inner)


def _array(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")


def _object(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    members = st.lists(st.tuples(_keys, inner), max_size=3)  # keys drawn from few: duplicates happen
    return members.map(lambda ms: "{" + ", ".join(f"{k}: {v}" for k, v in ms) + "}")


def _nested(levels: int) -> str:
    return '{"d": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def _padded(size: int, char: str) -> str:
    """A payload of about ``size`` bytes as stored (``char`` may be one that is escaped)."""
    stored = len(char.encode()) if char not in "\ufffe\uffff" else 6
    return '{"pad": "' + char * ((size - 11) // stored) + '"}'


_payloads = st.one_of(
    _object(_value(1)),
    st.sampled_from([127, 128, 129]).map(_nested),  # the nesting limit, either side
    st.tuples(st.sampled_from([LIMIT - 64, LIMIT + 64]), st.sampled_from(["x", "é", "😀", "\uffff"])).map(
        lambda t: _padded(*t)  # sizes near the limit, as stored
    ),
)
_splices = st.sampled_from([b"", b"", b"", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    payload = draw(_payloads).encode()
    marker = uuid.uuid4().hex  # not drawn: every body differs, so no accepted event is another's duplicate
    body = b'{"event_type": "p", "payload": {"#": "' + marker.encode() + b'", "v": ' + payload + b"}}"
    splice = draw(_splices)
    if splice:
        at = draw(st.integers(0, len(body)))
        body = body[:at] + splice + body[at:]
    return body


def test_every_answer_tells_what_became_of_the_event(
    http: httpx.Client, ingest: Service, inbox: Service, writer: Service, key_factory: Any
) -> None:
    producer, bystander = key_factory(), key_factory()
    warm_up(http, ingest, producer)
    warm_up(http, ingest, bystander)
    accepted: dict[str, bytes] = {}  # event id -> payload as the inbox must return it
    bystanders: list[str] = []
    counter = itertools.count()
    outcomes: list[int] = []  # every status the producer got (per event inside a batch)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not os.environ.get("TRIGGERS_FUZZ_RANDOM"),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(_bodies(), min_size=1, max_size=5), st.booleans())
    def send(bodies: list[bytes], as_batch: bool) -> None:
        mine = [Post(producer, "/events", body) for body in bodies]
        if as_batch:
            mine = [Post(producer, "/events/batch", b'{"events": [' + b", ".join(bodies) + b"]}")]
        others = [
            Post(bystander, "/events", b'{"event_type": "b", "payload": {"i": %d}}' % next(counter)) for _ in range(6)
        ]
        answers = post_all(ingest, [*mine, *others])
        for answer in answers[len(mine) :]:
            assert answer.status_code == 202, answer.text
            bystanders.append(answer.json()["event_id"])
        if as_batch:
            outcomes.extend(_record_batch(answers[0], bodies, accepted))
        else:
            for body, answer in zip(bodies, answers, strict=False):
                assert answer.status_code in (202, 400, 413), answer.text
                outcomes.append(answer.status_code)
                if answer.status_code == 202:
                    accepted[answer.json()["event_id"]] = expected_payload(body)

    send()
    refused = outcomes.count(400) + outcomes.count(413)
    assert len(accepted) >= 5, "the generator must reach storage, or the property says nothing"
    assert refused >= 5, outcomes
    stored = settled_inbox(http, ingest, inbox, producer, list(accepted))
    assert {i: bytes(e.payload) for i, e in stored.items()} == accepted
    assert settled_inbox(http, ingest, inbox, bystander, bystanders).keys() == set(bystanders)


def _record_batch(answer: httpx.Response, bodies: list[bytes], accepted: dict[str, bytes]) -> list[int]:
    """A batch: 4xx as a whole (nothing taken), or one result per event, in order."""
    assert answer.status_code in (202, 207, 400, 413), answer.text
    if answer.status_code >= 400:
        return [answer.status_code]
    results = answer.json()["results"]
    assert len(results) == len(bodies)
    statuses = []
    for body, result in zip(bodies, results, strict=True):
        if "event_id" in result:
            accepted[result["event_id"]] = expected_payload(body)
            statuses.append(202)
        else:
            assert result["error"]["status"] in (400, 413), result
            assert result["error"]["details"][0]["field"].startswith("$.events[")
            statuses.append(result["error"]["status"])
    return statuses
