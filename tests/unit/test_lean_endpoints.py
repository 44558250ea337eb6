"""The lean transport goes where botocore sends the same client's cold calls, and says who it is.

``open_clients`` builds each lean transport from its aiobotocore client's resolved endpoint,
region and User-Agent (shared/aws/clients.py). The URL comparisons send nothing (the URLs are
AWS's, unreachable from here, and compared before anything could be sent); the
``AWS_ENDPOINT_URL_DYNAMODB`` case then sends a hot and a cold call to a local server and sees
both arrive there, each with its User-Agent.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import botocore
import pytest

from shared.aws.clients import LEAN_USER_AGENT_PREFIX, AwsClients, open_clients
from shared.settings import Settings
from tests.unit.test_http1 import self_signed


@dataclass
class Seen:
    requests: list[dict[str, str]] = field(default_factory=list)  # headers of each request


async def _answer_empty(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")[1:]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
            await reader.readexactly(int(headers.get("content-length", "0")))
            seen.requests.append(headers)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Credentials from the environment (no instance metadata lookups) and no other endpoint source."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_USE_FIPS_ENDPOINT", "false")
    return monkeypatch


def lean_urls(clients: AwsClients) -> tuple[str, str]:
    return clients.sqs._transport.url, clients.dynamodb._transport.url


def admin_urls(clients: AwsClients) -> tuple[str, str]:
    return clients.sqs.admin.meta.endpoint_url + "/", clients.dynamodb.admin.meta.endpoint_url + "/"


@pytest.mark.parametrize(
    ("region", "fips", "expected"),
    [
        pytest.param(
            "us-east-1",
            "false",
            ("https://sqs.us-east-1.amazonaws.com/", "https://dynamodb.us-east-1.amazonaws.com/"),
            id="aws",
        ),
        pytest.param(
            "cn-north-1",
            "false",
            ("https://sqs.cn-north-1.amazonaws.com.cn/", "https://dynamodb.cn-north-1.amazonaws.com.cn/"),
            id="aws-cn",
        ),
        pytest.param(
            "us-east-1",
            "true",
            ("https://sqs-fips.us-east-1.amazonaws.com/", "https://dynamodb-fips.us-east-1.amazonaws.com/"),
            id="fips",
        ),
    ],
)
async def test_the_lean_endpoint_is_the_one_botocore_resolved_in_every_partition(
    aws_env: pytest.MonkeyPatch, region: str, fips: str, expected: tuple[str, str]
) -> None:
    aws_env.setenv("AWS_USE_FIPS_ENDPOINT", fips)
    async with open_clients(Settings(aws_region=region), pool_size=2) as clients:
        assert admin_urls(clients) == expected
        assert lean_urls(clients) == expected
        # Signed for the region botocore signs for (the signer's scope is its credential scope).
        assert clients.dynamodb._transport._signer._region == clients.dynamodb.admin.meta.region_name == region


async def test_with_aws_endpoint_url_dynamodb_hot_and_cold_calls_reach_it_each_with_a_user_agent(
    aws_env: pytest.MonkeyPatch,
) -> None:
    seen = Seen()
    listener = await asyncio.start_server(lambda r, w: _answer_empty(seen, r, w), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    aws_env.setenv("AWS_ENDPOINT_URL_DYNAMODB", url)
    async with listener, open_clients(Settings(), pool_size=2) as clients:
        # Compared first: were they to differ, nothing is sent to a real AWS endpoint.
        assert lean_urls(clients) == ("https://sqs.us-east-1.amazonaws.com/", url + "/")
        assert clients.dynamodb.admin.meta.endpoint_url == url
        await clients.dynamodb.get_item(TableName="t", Key={"pk": {"S": "a"}})  # hot: lean
        await clients.dynamodb.admin.describe_table(TableName="t")  # cold: aiobotocore
    targets = [headers["x-amz-target"] for headers in seen.requests]
    assert targets == ["DynamoDB_20120810.GetItem", "DynamoDB_20120810.DescribeTable"]
    lean_ua, admin_ua = (headers["user-agent"] for headers in seen.requests)
    assert lean_ua.startswith(LEAN_USER_AGENT_PREFIX + " aiobotocore/")
    assert f"botocore/{botocore.__version__}" in lean_ua
    assert admin_ua.startswith("aiobotocore/")
    assert "triggers-api" not in admin_ua


async def test_with_aws_ca_bundle_hot_and_cold_calls_trust_the_same_certificate(
    aws_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A private CA (a TLS-inspecting proxy, a local emulator behind TLS): botocore trusts
    ``AWS_CA_BUNDLE`` and so must the lean pool, or only the cold calls would work."""
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    seen = Seen()
    listener = await asyncio.start_server(lambda r, w: _answer_empty(seen, r, w), "127.0.0.1", 0, ssl=server_tls)
    aws_env.setenv("AWS_ENDPOINT_URL_DYNAMODB", f"https://localhost:{listener.sockets[0].getsockname()[1]}")
    aws_env.setenv("AWS_CA_BUNDLE", str(cert))
    async with listener, open_clients(Settings(aws_max_attempts=1), pool_size=2) as clients:
        await clients.dynamodb.get_item(TableName="t", Key={"pk": {"S": "a"}})  # hot: lean
        await clients.dynamodb.admin.describe_table(TableName="t")  # cold: aiobotocore
    assert [headers["x-amz-target"] for headers in seen.requests] == [
        "DynamoDB_20120810.GetItem",
        "DynamoDB_20120810.DescribeTable",
    ]
