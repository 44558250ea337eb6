"""The lean AWS clients' HTTP/1.1 pool against a scripted server on a real socket.

The server answers each request with the next scripted reply (or misbehaves as told), and
counts the connections it accepted, so reuse and non-reuse are observable. The same server
behind TLS, with a self-signed certificate made here (``cryptography``), carries the https
tests; answers past the size cap are refused.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.aws.http1 import MAX_ANSWER_BYTES, AnswerTooLarge, Http1Pool
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


async def test_an_answer_past_the_default_cap_is_refused_and_the_pool_goes_on(server: tuple[Script, str]) -> None:
    script, url = server
    script.replies = [ok(bytes(MAX_ANSWER_BYTES + 1)), ok(b"after")]
    pool = pool_for(url)
    with pytest.raises(AnswerTooLarge, match=f"{MAX_ANSWER_BYTES}-byte cap"):
        await pool.post(HEADERS, b"huge")
    assert await pool.post(HEADERS, b"next") == (200, b"after")
    assert script.connections == 2  # the refused answer's connection was closed, not reused
    pool.close()


async def test_a_chunked_answer_past_a_small_cap_is_refused_and_one_at_the_cap_is_whole(
    server: tuple[Script, str],
) -> None:
    script, url = server
    chunk = b"%x\r\n%s\r\n" % (512, b"x" * 512)
    at_cap = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk * 2 + b"0\r\n\r\n"
    past_cap = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n"
    script.replies = [at_cap, past_cap, ok(b"fine")]
    pool = Http1Pool(url, limit=1, connect_timeout_s=2.0, read_timeout_s=2.0, max_answer_bytes=1024)
    assert await pool.post(HEADERS, b"a") == (200, b"x" * 1024)
    with pytest.raises(AnswerTooLarge):
        await pool.post(HEADERS, b"b")
    assert await pool.post(HEADERS, b"c") == (200, b"fine")
    assert script.requests == [b"a", b"b", b"c"]
    pool.close()


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, signed by its own key: (cert, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[Script, str, Path]]:
    """The scripted server behind TLS: (script, https URL on localhost, the certificate to trust)."""
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    script = Script()
    listener = await asyncio.start_server(lambda r, w: _serve(script, r, w), "127.0.0.1", 0, ssl=context)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield script, f"https://localhost:{port}/", cert


async def test_https_calls_verify_the_certificate_and_keep_one_tls_connection_alive(
    tls_server: tuple[Script, str, Path],
) -> None:
    script, url, cert = tls_server
    script.replies = [ok(b'{"a":1}'), ok(b"chunk" * 5000)]
    pool = Http1Pool(
        url, limit=2, connect_timeout_s=2.0, read_timeout_s=2.0, ssl_context=ssl.create_default_context(cafile=cert)
    )
    assert await pool.post(HEADERS, b"one") == (200, b'{"a":1}')
    assert await pool.post(HEADERS, b"two" * 10000) == (200, b"chunk" * 5000)  # several TLS records each way
    assert script.requests == [b"one", b"two" * 10000]
    assert script.connections == 1
    pool.close()


async def test_https_to_a_certificate_the_trust_store_lacks_is_refused_before_anything_is_sent(
    tls_server: tuple[Script, str, Path],
) -> None:
    script, url, _ = tls_server
    script.replies = [ok(b"never")]
    pool = pool_for(url)  # the default context: the system's trust store, as for real AWS
    with pytest.raises(ssl.SSLCertVerificationError):
        await pool.post(HEADERS, b"secret")
    assert script.requests == []
    pool.close()
