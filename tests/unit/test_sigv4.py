"""The lean clients' SigV4 signer produces exactly what botocore's signer does."""

from __future__ import annotations

import datetime as dt
from unittest import mock

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from shared.aws.sigv4 import JsonPostSigner, host_of

NOW = dt.datetime(2026, 11, 29, 23, 59, 58, tzinfo=dt.UTC)
TARGET = "DynamoDB_20120810.Query"
CONTENT_TYPE = "application/x-amz-json-1.0"


def botocore_headers(url: str, body: bytes, credentials: ReadOnlyCredentials, service: str) -> dict[str, str]:
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"X-Amz-Target": TARGET, "Content-Type": CONTENT_TYPE}
    )
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        SigV4Auth(credentials, service, "eu-west-1").add_auth(request)
    return {name.lower(): value for name, value in request.headers.items()}


@pytest.mark.parametrize(
    "url",
    ["https://dynamodb.eu-west-1.amazonaws.com", "http://127.0.0.1:4566", "https://sqs.eu-west-1.amazonaws.com:443"],
)
@pytest.mark.parametrize("token", [None, "IQoJb3JpZ2luX2VjE//session+token="])
@pytest.mark.parametrize("body", [b"{}", b'{"TableName":"t","Limit":51,"x":"\\u00e9 \xc3\xa9"}'])
def test_headers_match_botocores_signer(url: str, token: str | None, body: bytes) -> None:
    credentials = ReadOnlyCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    expected = botocore_headers(url, body, credentials, "dynamodb")
    ours = JsonPostSigner(url, "eu-west-1", "dynamodb").headers(
        body, TARGET, CONTENT_TYPE, credentials, now=NOW.timestamp()
    )
    assert {k: v for k, v in ours.items() if k != "host"} == expected
    assert ours["host"] == host_of(url)


def test_the_signing_key_follows_the_date_and_the_secret() -> None:
    signer = JsonPostSigner("http://localhost:1", "us-east-1", "sqs")
    first = ReadOnlyCredentials("AK", "secret-1", None)
    today = signer.headers(b"{}", TARGET, CONTENT_TYPE, first, now=NOW.timestamp())["authorization"]
    tomorrow = signer.headers(b"{}", TARGET, CONTENT_TYPE, first, now=NOW.timestamp() + 3)["authorization"]
    rotated = signer.headers(
        b"{}", TARGET, CONTENT_TYPE, ReadOnlyCredentials("AK", "secret-2", None), now=NOW.timestamp()
    )
    assert "20261129/us-east-1/sqs" in today
    assert "20261130/us-east-1/sqs" in tomorrow
    assert len({today, tomorrow, rotated["authorization"]}) == 3
