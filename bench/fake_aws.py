"""A minimal SQS and DynamoDB endpoint for benchmarks: the real wire protocol (AWS JSON 1.0), no storage.

It answers GetQueueUrl, GetQueueAttributes and SendMessage(Batch) of SQS, and PutItem of
DynamoDB, and counts requests, messages and events (GET /stats). It exists so that an edge
can be measured against AWS services that are not the bottleneck: moto walks its whole
queue on every send and would measure itself. Nothing is kept, so it can run for as long as
a benchmark needs.

Run: python -m bench.fake_aws PORT
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from typing import Any

import msgspec
from granian import Granian
from granian.constants import Interfaces

_stats = {"requests": 0, "messages": 0, "events": 0, "dynamodb_requests": 0}
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def _accept(body: str) -> dict[str, str]:
    _stats["messages"] += 1
    _stats["events"] += body.count('"event_id"')
    return {"MessageId": str(uuid.uuid4()), "MD5OfMessageBody": hashlib.md5(body.encode()).hexdigest()}  # noqa: S324 - SQS's own checksum


def _answer(target: str, request: dict[str, Any], host: str) -> dict[str, Any]:
    if target == "DynamoDB_20120810.PutItem":
        _stats["dynamodb_requests"] += 1
        return {}
    if target == "SendMessageBatch":
        _stats["requests"] += 1
        return {"Successful": [{"Id": e["Id"], **_accept(e["MessageBody"])} for e in request["Entries"]], "Failed": []}
    if target == "SendMessage":
        _stats["requests"] += 1
        return _accept(request["MessageBody"])
    if target == "GetQueueUrl":
        return {"QueueUrl": f"http://{host}/000000000000/{request['QueueName']}"}
    if target == "GetQueueAttributes":
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:000000000000:bench"}}
    return {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = dict(scope["headers"])
    if scope["path"] == "/stats":
        payload = _encoder.encode(_stats)
    else:
        target = headers.get(b"x-amz-target", b"").decode().removeprefix("AmazonSQS.")
        host = headers.get(b"host", b"localhost").decode()
        payload = _encoder.encode(_answer(target, _decoder.decode(body) if body else {}, host))
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/x-amz-json-1.0"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":
    Granian("bench.fake_aws:app", interface=Interfaces.ASGI, port=int(sys.argv[1]), log_enabled=False).serve()
