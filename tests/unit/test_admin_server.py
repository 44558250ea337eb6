"""The admin listener over real sockets, in process: answers for bad heads, a connection
cap, one port per process, and one readiness check shared by concurrent callers."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from shared.web.admin import AdminServer, Answer, SharedCheck
from shared.web.http import _admin_server


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 10)  # a bound, so a bug fails instead of hanging
    except ConnectionResetError:
        return b""  # closed unanswered (reset)
    finally:
        writer.close()


async def _ok() -> Answer:
    return Answer(200, b"{}")


@pytest.mark.parametrize(
    "head",
    [
        b"GET  /ready HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /ready\r\n\r\n",
        b"GET /ready HTTP/1.1 extra\r\n\r\n",
        b"G\x00T /ready HTTP/1.1\r\n\r\n",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
    ],
    ids=["two-spaces", "http2-preface", "http09", "four-words", "nul-method", "over-long"],
)
async def test_a_head_that_is_not_http1_gets_a_400_answer(head: bytes) -> None:
    server = AdminServer({"/ready": _ok})
    await server.start("127.0.0.1", 0)
    try:
        assert server.port
        answer = await _exchange(server.port, head)
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer[:80]
        assert answer.endswith(b'"error_code":"BAD_REQUEST","message":"Not an HTTP/1 request head."}')
        # The server is unharmed: the next request is answered.
        assert (await _exchange(server.port, b"GET /ready HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
    finally:
        await server.close()


async def test_connections_beyond_the_cap_are_closed_at_once_and_the_rest_served() -> None:
    server = AdminServer({"/ready": _ok}, max_connections=4)
    await server.start("127.0.0.1", 0)
    assert server.port
    idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(4)]
    try:
        for _, writer in idle:
            writer.write(b"GET /ready HTTP/1.1\r\n")  # a head that never ends
            await writer.drain()
        await asyncio.sleep(0.05)  # let the server accept them all
        assert await _exchange(server.port, b"GET /ready HTTP/1.1\r\n\r\n") == b""  # closed, unanswered
        # The held ones are still being read: one finishing its head is answered.
        reader, writer = idle[0]
        writer.write(b"\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200 OK")
    finally:
        for _, writer in idle:
            writer.close()
        await server.close()
    # Once they are gone, new connections are served again.
    await server.start("127.0.0.1", 0)
    try:
        assert server.port
        assert (await _exchange(server.port, b"GET /ready HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200 OK")
    finally:
        await server.close()


async def test_a_port_in_use_is_an_error_not_shared() -> None:
    first, second = AdminServer({"/ready": _ok}), AdminServer({"/ready": _ok})
    await first.start("127.0.0.1", 0)
    try:
        assert first.port
        with pytest.raises(OSError, match="in use"):
            await second.start("127.0.0.1", first.port)
    finally:
        await second.close()
        await first.close()


async def test_concurrent_ready_calls_share_one_dependency_check() -> None:
    calls = 0

    async def ready_check(_: Any) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)  # in flight while the others arrive

    server = _admin_server(cast(Any, None), ready_check)
    await server.start("127.0.0.1", 0)
    try:
        assert server.port
        answers = await asyncio.gather(*(_exchange(server.port, b"GET /ready HTTP/1.1\r\n\r\n") for _ in range(20)))
        assert all(a.startswith(b"HTTP/1.1 200 OK") for a in answers)
        answers = [await _exchange(server.port, b"GET /ready HTTP/1.1\r\n\r\n") for _ in range(5)]  # within the TTL
        assert all(a.startswith(b"HTTP/1.1 200 OK") for a in answers)
        assert calls == 1
    finally:
        await server.close()


async def test_a_shared_check_runs_again_once_its_outcome_is_older_than_its_ttl() -> None:
    now, calls = [0.0], []

    async def check() -> Answer:
        calls.append(now[0])
        return Answer(503 if len(calls) == 1 else 200, b"{}")

    shared = SharedCheck(check, ttl_s=1.0, clock=lambda: now[0])
    assert (await shared()).status == 503
    now[0] = 0.9
    assert (await shared()).status == 503  # a failure is reused too: a flood cannot multiply it
    now[0] = 1.0
    assert (await shared()).status == 200
    assert calls == [0.0, 1.0]
