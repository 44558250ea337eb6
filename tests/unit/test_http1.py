"""The lean AWS clients' HTTP/1.1 pool against a scripted server on a real socket.

The server answers each request with the next scripted reply (or misbehaves as told), and
counts the connections it accepted, so reuse and non-reuse are observable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from shared.aws.http1 import Http1Pool
from shared.local import processes


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@dataclass
class Script:
    replies: list[bytes | None] = field(default_factory=list)  # None: never answer
    close_after: bool = False  # close each connection after its reply
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


async def _serve(script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    script.connections += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            script.requests.append(await reader.readexactly(length))
            reply = script.replies.pop(0)
            if reply is None:
                await reader.read()  # hold the connection until the client gives up on it
                return
            writer.write(reply)
            await writer.drain()
            if script.close_after:
                break
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, str]]:
    script = Script()
    listener = await asyncio.start_server(lambda r, w: _serve(script, r, w), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield script, f"http://127.0.0.1:{port}/"


def pool_for(url: str, read_timeout_s: float = 2.0) -> Http1Pool:
    return Http1Pool(url, limit=4, connect_timeout_s=2.0, read_timeout_s=read_timeout_s)


HEADERS = {"host": "example"}


async def test_calls_in_sequence_share_one_kept_alive_connection(server: tuple[Script, str]) -> None:
    script, url = server
    script.replies = [ok(b'{"a":1}'), ok(b'{"b":2}'), ok(b"")]
    pool = pool_for(url)
    assert await pool.post(HEADERS, b"one") == (200, b'{"a":1}')
    assert await pool.post(HEADERS, b"two") == (200, b'{"b":2}')
    assert await pool.post(HEADERS, b"") == (200, b"")
    assert script.connections == 1
    assert script.requests == [b"one", b"two", b""]
    pool.close()


async def test_a_chunked_answer_arrives_whole(server: tuple[Script, str]) -> None:
    script, url = server
    chunked = b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    script.replies = [chunked, ok(b"next")]
    pool = pool_for(url)
    assert await pool.post(HEADERS, b"x") == (400, b"hello world")
    assert await pool.post(HEADERS, b"y") == (200, b"next")
    assert script.connections == 1
    pool.close()


async def test_a_connection_the_server_closes_is_not_reused(server: tuple[Script, str]) -> None:
    script, url = server
    script.close_after = True
    script.replies = [ok(b"1", b"connection: close\r\n"), ok(b"2"), ok(b"3")]
    pool = pool_for(url)
    assert await pool.post(HEADERS, b"a") == (200, b"1")  # told to close
    assert await pool.post(HEADERS, b"b") == (200, b"2")  # closed by the server after the reply
    await asyncio.sleep(0.05)
    assert await pool.post(HEADERS, b"c") == (200, b"3")
    assert script.connections == 3
    pool.close()


async def test_no_answer_within_the_read_timeout_is_a_timeout_and_the_connection_is_dropped(
    server: tuple[Script, str],
) -> None:
    script, url = server
    script.replies = [None, ok(b"fresh")]
    pool = pool_for(url, read_timeout_s=0.2)
    with pytest.raises(TimeoutError):
        await pool.post(HEADERS, b"slow")
    assert await pool.post(HEADERS, b"again") == (200, b"fresh")
    assert script.connections == 2
    pool.close()


async def test_a_cancelled_call_never_hands_its_late_answer_to_the_next_call(server: tuple[Script, str]) -> None:
    script, url = server
    script.replies = [None, ok(b"mine")]
    pool = pool_for(url)
    call = asyncio.ensure_future(pool.post(HEADERS, b"abandoned"))
    await asyncio.sleep(0.1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await pool.post(HEADERS, b"next") == (200, b"mine")
    assert script.connections == 2
    pool.close()


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", id="closed-mid-body"),
        pytest.param(b"NOT HTTP AT ALL\r\n\r\n", id="malformed"),
    ],
)
async def test_a_broken_answer_is_a_connection_error(server: tuple[Script, str], reply: bytes) -> None:
    script, url = server
    script.close_after = True
    script.replies = [reply]
    pool = pool_for(url)
    with pytest.raises(ConnectionError):
        await pool.post(HEADERS, b"x")
    pool.close()


async def test_nothing_listening_is_a_connection_error() -> None:
    pool = pool_for(f"http://127.0.0.1:{processes.free_port()}/")
    with pytest.raises(ConnectionError):
        await pool.post(HEADERS, b"x")


async def test_concurrent_calls_never_exceed_the_limit(server: tuple[Script, str]) -> None:
    script, url = server
    script.replies = [ok(str(n).encode()) for n in range(20)]
    pool = Http1Pool(url, limit=3, connect_timeout_s=2.0, read_timeout_s=2.0)
    answers = await asyncio.gather(*(pool.post(HEADERS, b"%d" % n) for n in range(20)))
    assert sorted(int(body) for _, body in answers) == list(range(20))
    assert script.connections <= 3
    pool.close()


@pytest.mark.parametrize("url", ["ftp://example/", "http:///nohost"])
def test_only_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        pool_for(url)
