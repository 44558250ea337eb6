"""What the edge's checks of an event (ingest_api/validation.py, via IngestService.parse_event)
and the writer's canonical form (shared.contract.envelope.canonical_json) cost for the costliest
payloads we know how to build: per 256 KiB event, and per 5 MiB batch (the largest body).

Run: python -m bench.edge_checks. The garbage collector runs as in the services
(shared.runtime), since several payloads are many small containers.

Recorded on the 2-core development machine (other work running beside it, so +-30%),
best of several runs, ms; "batch" is every event of a 5 MiB batch of that payload checked
one after the other (the edge gives the loop back between them, every 64 KiB), "before"
the code of 082aa19 (reviewer's probes /tmp/rv_time.py, /tmp/rv_batch.py):

    payload (256 KiB)                   edge before -> after   batch before -> after   canonical before -> after
    nested 127 deep, repeated               277 -> 30              6,060 -> 890             87 -> 35
    floats 1e1                               81 -> 9                 930 -> 190            316 -> 19
    floats 1.5                               15 -> 10                    -                  64 -> 15
    floats 1e300 (magnitude checked)          - -> 22                  - -> 480              - -> 28
    floats 0.1000000000000000001             11 -> 4                     -                  48 -> 27
    floats 1e-9999                           23 -> 5                     -                 149 -> 52
    small objects, exact duplicate pass      21 -> 12                    -                   4 -> 15
    refused: duplicate at the end           105 -> 47              2,710 -> 990               -
    refused: 1e400 at the end               133 -> 98                    -                    -

Refused events stay the costliest (the second pass that names the field walks the tree in
Python), and each costs its sender a token. A 1 KB event: about 10 µs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import msgspec

from ingest_api.service import IngestService
from shared.contract.envelope import canonical_json
from shared.errors import AppError
from shared.runtime import tune_gc

PAYLOAD = 256 * 1024 - 64
BATCH = 5 * 1024 * 1024 - 64


def _repeat(unit: bytes, head: bytes = b'{"a":[', tail: bytes = b"]}") -> bytes:
    count = (PAYLOAD - len(head) - len(tail)) // (len(unit) + 1)
    return head + b",".join([unit] * count) + tail


def _keys(last: bytes = b"") -> bytes:
    members, size, i = [], len(last) + 2, 0
    while size + len(b'"%x":0,' % i) < PAYLOAD:
        members.append(b'"%x":0' % i)
        size += len(members[-1]) + 1
        i += 1
    return b"{" + b",".join(members) + last + b"}"


CASES: dict[str, bytes] = {
    "ints": _repeat(b"1"),
    "floats 1.5": _repeat(b"1.5"),
    "floats 1e1": _repeat(b"1e1"),
    "floats 1e300 (magnitude checked)": _repeat(b"1e300"),
    "floats 0.1000000000000000001 (exact path)": _repeat(b"0.1000000000000000001"),
    "floats 1e-9999 (exact path)": _repeat(b"1e-9999"),
    "ints of 100 digits": _repeat(b"9" * 100),
    "keys": _keys(),
    'keys + "u003" (exact duplicate pass)': _keys(b',"u003":0'),
    "empty objects": _repeat(b"{}"),
    'small objects + "u003"': _repeat(b'{"a":0}', tail=b'],"u003":0}'),
    "nested 127 deep, repeated": _repeat(b"[" * 126 + b"]" * 126),
    "escaped strings": _repeat(b'"\\u00e9\\n\\""'),
    "refused: duplicate at the end": _keys(b',"0":1'),
    "refused: 1e400 at the end": _repeat(b"1.5", tail=b",1e400]}"),
    "refused: nested 129 deep, repeated": _repeat(b"[" * 128 + b"]" * 128),
}


def _best_ms(run: Callable[[], object], seconds: float = 0.4) -> float:
    best = float("inf")
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    tune_gc()
    service = IngestService(None, max_payload_bytes=256 * 1024)  # type: ignore[arg-type]
    print(f"{'payload (256 KiB)':44s} {'edge ms':>8s} {'batch ms':>9s} {'canonical ms':>13s}")
    for name, payload in CASES.items():
        event = b'{"event_type":"t","payload":' + payload + b"}"

        def check(event: bytes = event) -> bool:
            try:
                service.parse_event(event)
            except AppError:
                return False
            return True

        accepted = check()
        edge = _best_ms(check)
        items = [msgspec.Raw(event)] * min(500, BATCH // (len(event) + 1))

        def batch(items: list[msgspec.Raw] = items) -> None:
            for index, item in enumerate(items):
                with contextlib.suppress(AppError):
                    service.parse_event(item, prefix=f"$.events[{index}]")

        whole = _best_ms(batch, 1.0)

        def canonical_form(payload: bytes = payload) -> bytes:
            return canonical_json(payload)

        canonical = f"{_best_ms(canonical_form):13.1f}" if accepted else f"{'-':>13s}"
        print(f"{name:44s} {edge:8.1f} {whole:9.0f} {canonical}")


if __name__ == "__main__":
    main()
