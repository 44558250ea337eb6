"""The DynamoDB client of the hot paths: one typed method per operation the lean transport
serves (shared/aws/lean.py), and ``admin``, the aiobotocore client, for every other one.

Parameters and answers are typed with types-aiobotocore's TypedDicts, the very types of
aiobotocore's own methods, so a call reads and type-checks as it would on aiobotocore. The
answers lack botocore's ``ResponseMetadata``, which nothing here reads. ``*_decoded``
decodes the answer straight from the wire into a msgspec type instead of dicts: that skips
building a dict per attribute value, which is most of the cost of reading a page of items.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import msgspec

from shared.aws.lean import DYNAMODB, PLAIN, LeanTransport

if TYPE_CHECKING:  # types-aiobotocore is a development dependency: types only
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_dynamodb.type_defs import (
        BatchGetItemInputTypeDef,
        BatchGetItemOutputTypeDef,
        GetItemInputTypeDef,
        GetItemOutputTypeDef,
        PutItemInputTypeDef,
        PutItemOutputTypeDef,
        QueryInputTypeDef,
        QueryOutputTypeDef,
        TransactWriteItemsInputTypeDef,
        TransactWriteItemsOutputTypeDef,
        UpdateItemInputTypeDef,
        UpdateItemOutputTypeDef,
    )
    from typing_extensions import Unpack

T = TypeVar("T")

TRANSACT_WRITE_ITEMS = DYNAMODB.operation("TransactWriteItems")
QUERY = DYNAMODB.operation("Query")
GET_ITEM = DYNAMODB.operation("GetItem")
PUT_ITEM = DYNAMODB.operation("PutItem")
UPDATE_ITEM = DYNAMODB.operation("UpdateItem")
BATCH_GET_ITEM = DYNAMODB.operation("BatchGetItem")


class LeanDynamoDB:
    def __init__(self, transport: LeanTransport, admin: DynamoDBClient) -> None:
        self._transport = transport
        # Cold operations (tables, TTL, scans, tests' set-up): aiobotocore, same retries and counts.
        self.admin = admin

    async def transact_write_items(
        self, **params: Unpack[TransactWriteItemsInputTypeDef]
    ) -> TransactWriteItemsOutputTypeDef:
        answer: TransactWriteItemsOutputTypeDef = await self._transport.call(TRANSACT_WRITE_ITEMS, params, PLAIN)
        return answer

    async def query(self, **params: Unpack[QueryInputTypeDef]) -> QueryOutputTypeDef:
        answer: QueryOutputTypeDef = await self._transport.call(QUERY, params, PLAIN)
        return answer

    async def query_decoded(self, answer: msgspec.json.Decoder[T], **params: Unpack[QueryInputTypeDef]) -> T:
        return await self._transport.call(QUERY, params, answer)

    async def get_item(self, **params: Unpack[GetItemInputTypeDef]) -> GetItemOutputTypeDef:
        answer: GetItemOutputTypeDef = await self._transport.call(GET_ITEM, params, PLAIN)
        return answer

    async def put_item(self, **params: Unpack[PutItemInputTypeDef]) -> PutItemOutputTypeDef:
        answer: PutItemOutputTypeDef = await self._transport.call(PUT_ITEM, params, PLAIN)
        return answer

    async def update_item(self, **params: Unpack[UpdateItemInputTypeDef]) -> UpdateItemOutputTypeDef:
        answer: UpdateItemOutputTypeDef = await self._transport.call(UPDATE_ITEM, params, PLAIN)
        return answer

    async def batch_get_item(self, **params: Unpack[BatchGetItemInputTypeDef]) -> BatchGetItemOutputTypeDef:
        answer: BatchGetItemOutputTypeDef = await self._transport.call(BATCH_GET_ITEM, params, PLAIN)
        return answer

    async def batch_get_item_decoded(
        self, answer: msgspec.json.Decoder[T], **params: Unpack[BatchGetItemInputTypeDef]
    ) -> T:
        return await self._transport.call(BATCH_GET_ITEM, params, answer)
