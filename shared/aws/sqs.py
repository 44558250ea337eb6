"""The SQS client of the hot paths: one typed method per operation the lean transport serves
(shared/aws/lean.py), and ``admin``, the aiobotocore client, for every other one.

Parameters and answers are typed with types-aiobotocore's TypedDicts, the very types of
aiobotocore's own methods; the answers lack botocore's ``ResponseMetadata``, which nothing
here reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.aws.lean import PLAIN, SQS, LeanTransport

if TYPE_CHECKING:  # types-aiobotocore is a development dependency: types only
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestTypeDef,
        ChangeMessageVisibilityBatchResultTypeDef,
        ChangeMessageVisibilityRequestTypeDef,
        DeleteMessageBatchRequestTypeDef,
        DeleteMessageBatchResultTypeDef,
        ReceiveMessageRequestTypeDef,
        ReceiveMessageResultTypeDef,
        SendMessageBatchRequestTypeDef,
        SendMessageBatchResultTypeDef,
    )
    from typing_extensions import Unpack

# SQS's limits: entries per *Batch call (and messages per ReceiveMessage); a message's delay.
SQS_BATCH_ENTRIES = 10
SQS_MAX_DELAY_S = 900

RECEIVE_MESSAGE = SQS.operation("ReceiveMessage")
DELETE_MESSAGE_BATCH = SQS.operation("DeleteMessageBatch")
CHANGE_MESSAGE_VISIBILITY = SQS.operation("ChangeMessageVisibility")
CHANGE_MESSAGE_VISIBILITY_BATCH = SQS.operation("ChangeMessageVisibilityBatch")
SEND_MESSAGE_BATCH = SQS.operation("SendMessageBatch")


class LeanSqs:
    def __init__(self, transport: LeanTransport, admin: SQSClient) -> None:
        self._transport = transport
        # Cold operations (queue URLs and attributes, single sends, tests' set-up): aiobotocore,
        # same retries and counts.
        self.admin = admin

    async def receive_message(self, **params: Unpack[ReceiveMessageRequestTypeDef]) -> ReceiveMessageResultTypeDef:
        answer: ReceiveMessageResultTypeDef = await self._transport.call(RECEIVE_MESSAGE, params, PLAIN)
        return answer

    async def delete_message_batch(
        self, **params: Unpack[DeleteMessageBatchRequestTypeDef]
    ) -> DeleteMessageBatchResultTypeDef:
        answer: DeleteMessageBatchResultTypeDef = await self._transport.call(DELETE_MESSAGE_BATCH, params, PLAIN)
        return answer

    async def change_message_visibility(self, **params: Unpack[ChangeMessageVisibilityRequestTypeDef]) -> None:
        await self._transport.call(CHANGE_MESSAGE_VISIBILITY, params, PLAIN)

    async def change_message_visibility_batch(
        self, **params: Unpack[ChangeMessageVisibilityBatchRequestTypeDef]
    ) -> ChangeMessageVisibilityBatchResultTypeDef:
        answer: ChangeMessageVisibilityBatchResultTypeDef = await self._transport.call(
            CHANGE_MESSAGE_VISIBILITY_BATCH, params, PLAIN
        )
        return answer

    async def send_message_batch(
        self, **params: Unpack[SendMessageBatchRequestTypeDef]
    ) -> SendMessageBatchResultTypeDef:
        answer: SendMessageBatchResultTypeDef = await self._transport.call(SEND_MESSAGE_BATCH, params, PLAIN)
        return answer
