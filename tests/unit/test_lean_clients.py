"""The typed lean clients (shared/aws/dynamodb.py, shared/aws/sqs.py) over their transport
(shared/aws/lean.py), against a scripted HTTP server on a real socket: each method posts its
own operation, signed, and is counted once per attempt; throttling and 5xx are retried;
errors come back as botocore's ClientError with every field of the answer; no credentials
fail as aiobotocore fails. The answers against real servers: tests/integration/test_lean_wire.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError, HTTPClientError, NoCredentialsError

from shared.aws.dynamodb import LeanDynamoDB
from shared.aws.http1 import MAX_ANSWER_BYTES, Http1Pool
from shared.aws.lean import DYNAMODB, SQS, CredentialsSource, LeanTransport, Service, no_credentials
from shared.aws.sqs import LeanSqs


def reply(status: int, body: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s" % (status, len(body), body)


@dataclass
class Scripted:
    replies: list[bytes] = field(default_factory=list)  # empty: answer 200 {}
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)  # (headers, body)


async def _serve(script: Scripted, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode().split("\r\n")[1:]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
            body = await reader.readexactly(int(headers["content-length"]))
            script.requests.append((headers, body))
            writer.write(script.replies.pop(0) if script.replies else reply(200, b"{}"))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[Scripted, str]]:
    script = Scripted()
    listener = await asyncio.start_server(lambda r, w: _serve(script, r, w), "127.0.0.1", 0)
    async with listener:
        yield script, f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/"


_POOLS: list[Http1Pool] = []
USER_AGENT = "triggers-api/test lean botocore/test"


@pytest.fixture(autouse=True)
def _close_pools() -> Iterator[None]:
    yield
    while _POOLS:
        _POOLS.pop().close()


async def _static() -> Any:
    return Credentials("AKIDEXAMPLE", "secret").get_frozen_credentials()


def transport(
    service: Service,
    url: str,
    counted: Counter[str],
    *,
    credentials: CredentialsSource = _static,
    attempts: int = 3,
    max_answer_bytes: int = MAX_ANSWER_BYTES,
) -> LeanTransport:
    http = Http1Pool(url, limit=2, connect_timeout_s=1.0, read_timeout_s=2.0, max_answer_bytes=max_answer_bytes)
    _POOLS.append(http)
    return LeanTransport(
        service,
        http,
        url=url,
        region="eu-west-1",
        credentials=credentials,
        max_attempts=attempts,
        on_request=lambda name: counted.update((name,)),
        user_agent=USER_AGENT,
    )


class Row(msgspec.Struct):
    Count: int


# (service, method, parameters, operation): every hot method the typed clients have.
CALLS: list[tuple[Service, str, dict[str, Any], str]] = [
    (DYNAMODB, "transact_write_items", {"TransactItems": []}, "TransactWriteItems"),
    (DYNAMODB, "query", {"TableName": "t", "KeyConditionExpression": "k = :k"}, "Query"),
    (DYNAMODB, "get_item", {"TableName": "t", "Key": {"k": {"S": "a"}}}, "GetItem"),
    (DYNAMODB, "put_item", {"TableName": "t", "Item": {"k": {"S": "a"}}}, "PutItem"),
    (DYNAMODB, "update_item", {"TableName": "t", "Key": {"k": {"S": "a"}}}, "UpdateItem"),
    (DYNAMODB, "batch_get_item", {"RequestItems": {}}, "BatchGetItem"),
    (SQS, "receive_message", {"QueueUrl": "q", "MaxNumberOfMessages": 10}, "ReceiveMessage"),
    (SQS, "delete_message_batch", {"QueueUrl": "q", "Entries": []}, "DeleteMessageBatch"),
    (
        SQS,
        "change_message_visibility",
        {"QueueUrl": "q", "ReceiptHandle": "h", "VisibilityTimeout": 3},
        "ChangeMessageVisibility",
    ),
    (SQS, "change_message_visibility_batch", {"QueueUrl": "q", "Entries": []}, "ChangeMessageVisibilityBatch"),
    (SQS, "send_message_batch", {"QueueUrl": "q", "Entries": []}, "SendMessageBatch"),
]


def client(service: Service, url: str, counted: Counter[str], **options: Any) -> Any:
    lean = transport(service, url, counted, **options)
    return LeanDynamoDB(lean, admin=None) if service is DYNAMODB else LeanSqs(lean, admin=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("service", "method", "params", "operation"), CALLS, ids=[c[1] for c in CALLS])
async def test_each_method_posts_its_own_operation_signed_and_is_counted_once(
    server: tuple[Scripted, str], service: Service, method: str, params: dict[str, Any], operation: str
) -> None:
    script, url = server
    counted: Counter[str] = Counter()
    script.replies = [reply(200, b'{"Answer":[1,"x"]}')]
    answer = await getattr(client(service, url, counted), method)(**params)
    ((headers, body),) = script.requests
    assert headers["x-amz-target"] == service.target_prefix + operation
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert f"/eu-west-1/{service.signing_name}/aws4_request" in headers["authorization"]
    assert msgspec.json.decode(body) == params
    assert counted == {f"{service.signing_name}.{operation}": 1}
    assert answer == (None if method == "change_message_visibility" else {"Answer": [1, "x"]})


@pytest.mark.parametrize(
    ("method", "operation"), [("query_decoded", "Query"), ("batch_get_item_decoded", "BatchGetItem")]
)
async def test_the_decoded_forms_post_their_operation_and_decode_into_the_given_type(
    server: tuple[Scripted, str], method: str, operation: str
) -> None:
    script, url = server
    counted: Counter[str] = Counter()
    script.replies = [reply(200, b'{"Count":3,"Items":[]}')]
    answer = await getattr(client(DYNAMODB, url, counted), method)(msgspec.json.Decoder(Row), TableName="t")
    assert answer == Row(Count=3)
    assert script.requests[0][0]["x-amz-target"] == f"DynamoDB_20120810.{operation}"
    assert counted == {f"dynamodb.{operation}": 1}


async def test_throttling_and_server_errors_are_retried_each_attempt_counted(server: tuple[Scripted, str]) -> None:
    script, url = server
    counted: Counter[str] = Counter()
    script.replies = [
        reply(400, b'{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"slow down"}'),
        reply(503, b""),
        reply(200, b'{"Count":1}'),
    ]
    answer = await client(DYNAMODB, url, counted).query(TableName="t")
    assert answer == {"Count": 1}
    assert len(script.requests) == 3
    assert counted == {"dynamodb.Query": 3}


async def test_a_refused_call_raises_client_error_with_the_answers_fields_and_is_not_retried(
    server: tuple[Scripted, str],
) -> None:
    script, url = server
    counted: Counter[str] = Counter()
    reasons = [{"Code": "None"}, {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"}]
    body = {"__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException", "Message": "cancelled"}
    script.replies = [reply(400, msgspec.json.encode({**body, "CancellationReasons": reasons}))]
    with pytest.raises(ClientError) as raised:
        await client(DYNAMODB, url, counted).transact_write_items(TransactItems=[])
    error: Any = raised.value.response
    assert error["Error"] == {"Code": "TransactionCanceledException", "Message": "cancelled"}
    assert error["CancellationReasons"] == reasons
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert raised.value.operation_name == "TransactWriteItems"
    assert len(script.requests) == 1  # a refusal is an answer, not a failure to retry
    assert counted == {"dynamodb.TransactWriteItems": 1}


async def test_sqs_errors_keep_their_code_after_the_last_attempt(server: tuple[Scripted, str]) -> None:
    script, url = server
    counted: Counter[str] = Counter()
    throttled = reply(400, b'{"__type":"com.amazon.coral.availability#ThrottlingException","message":"Rate exceeded"}')
    script.replies = [throttled, throttled]
    with pytest.raises(ClientError) as raised:
        await client(SQS, url, counted, attempts=2).send_message_batch(QueueUrl="q", Entries=[])
    assert raised.value.response["Error"]["Code"] == "ThrottlingException"
    assert counted == {"sqs.SendMessageBatch": 2}


async def test_without_credentials_a_call_raises_as_aiobotocore_does_and_sends_nothing(
    server: tuple[Scripted, str],
) -> None:
    script, url = server
    counted: Counter[str] = Counter()
    with pytest.raises(NoCredentialsError):
        await client(SQS, url, counted, credentials=no_credentials).receive_message(QueueUrl="q")
    assert script.requests == []


async def test_an_endpoint_that_never_answers_raises_endpoint_connection_error_after_every_attempt() -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()  # nothing listens there any more: every connect is refused
    counted: Counter[str] = Counter()
    with pytest.raises(EndpointConnectionError):
        await client(DYNAMODB, f"http://127.0.0.1:{port}/", counted, attempts=3).get_item(TableName="t", Key={})
    assert counted == {"dynamodb.GetItem": 3}


async def test_an_answer_past_the_cap_is_an_http_client_error_naming_it_not_retried_and_the_next_call_works(
    server: tuple[Scripted, str],
) -> None:
    script, url = server
    counted: Counter[str] = Counter()
    script.replies = [reply(200, b'{"Items":[%s]}' % b",".join([b'{"p":{"S":"x"}}'] * 100)), reply(200, b'{"Count":2}')]
    lean = client(DYNAMODB, url, counted, max_answer_bytes=1000)
    with pytest.raises(HTTPClientError, match="1000-byte cap"):
        await lean.query(TableName="t")
    assert await lean.query(TableName="t") == {"Count": 2}
    assert counted == {"dynamodb.Query": 2}  # one attempt each: the oversize answer was not asked for again
    assert [headers["user-agent"] for headers, _ in script.requests] == [USER_AGENT, USER_AGENT]


def test_the_clients_have_no_dynamic_dispatch_an_unknown_operation_is_an_attribute_error() -> None:
    counted: Counter[str] = Counter()
    dynamodb = client(DYNAMODB, "http://127.0.0.1:9/", counted)
    sqs = client(SQS, "http://127.0.0.1:9/", counted)
    for lean in (dynamodb, sqs):
        assert "__getattr__" not in type(lean).__dict__
    with pytest.raises(AttributeError):
        _ = dynamodb.describe_table  # cold: only through .admin
    with pytest.raises(AttributeError):
        _ = sqs.get_queue_url
