"""Consistent BatchGetItem of many keys of one table, decoded into the owner module's struct.

Acknowledgements read the ids they are given (``events.AckItem``); DLQ replay reads whether a
message's events and their claims exist (``events.EventExists``, ``claims.ClaimExists``).
Keys DynamoDB leaves unprocessed are read again under ``shared.retry.BATCH_READ_RETRY``.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from shared.aws.dynamodb import LeanDynamoDB
from shared.retry import BATCH_READ_RETRY, retry_pending

T = TypeVar("T")

BATCH_GET_MAX_KEYS = 100  # keys one BatchGetItem may hold


class BatchGetAnswer(msgspec.Struct, Generic[T], frozen=True):
    Responses: dict[str, list[T]] = {}
    UnprocessedKeys: dict[str, Any] = {}


class UnprocessedReads(TimeoutError):
    """DynamoDB kept leaving keys unprocessed (a TimeoutError: the web layer answers 503)."""


async def batch_get(
    client: LeanDynamoDB,
    table: str,
    keys: list[dict[str, Any]],
    projection: str,
    answer: msgspec.json.Decoder[BatchGetAnswer[T]],
) -> list[T]:
    """The items of ``keys`` that exist (in no particular order), read consistently."""
    found: list[T] = []
    for start in range(0, len(keys), BATCH_GET_MAX_KEYS):
        chunk = keys[start : start + BATCH_GET_MAX_KEYS]
        request: Any = {table: {"Keys": chunk, "ConsistentRead": True, "ProjectionExpression": projection}}

        async def read(requests: list[Any]) -> list[Any]:
            got = await client.batch_get_item_decoded(answer, RequestItems=requests[0])
            found.extend(got.Responses.get(table, []))
            return [got.UnprocessedKeys] if got.UnprocessedKeys else []

        if await retry_pending(BATCH_READ_RETRY, [request], read):
            raise UnprocessedReads("reads kept coming back unprocessed")
    return found
