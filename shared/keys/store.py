"""Where API key records live: a small port and its DynamoDB adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import ClientError

from shared.aws.dynamodb import LeanDynamoDB
from shared.errors import AlreadyExists, KeyNotFound
from shared.keys.model import KeyRecord, KeyStatus, Scope

if TYPE_CHECKING:  # types-aiobotocore is a development dependency: types only
    from types_aiobotocore_dynamodb.type_defs import AttributeValueTypeDef


class KeyStore(Protocol):
    async def get(self, key_id: str) -> KeyRecord: ...
    async def create(self, record: KeyRecord) -> None: ...
    async def touch(self, key_id: str, used_at: str) -> None: ...
    async def update(self, key_id: str, **changes: object) -> KeyRecord: ...
    def scan(self) -> AsyncIterator[KeyRecord]: ...


def _to_item(record: KeyRecord) -> dict[str, AttributeValueTypeDef]:
    item: dict[str, AttributeValueTypeDef] = {
        "key_id": {"S": record.key_id},
        "account_id": {"S": record.account_id},
        "secret_hash": {"S": record.secret_hash},
        "scopes": {"L": [{"S": s.value} for s in sorted(record.scopes)]},
        "status": {"S": record.status.value},
        "rate_limit_per_minute": {"N": str(record.rate_limit_per_minute)},
        "name": {"S": record.name},
        "created_at": {"S": record.created_at},
    }
    if record.last_used_at is not None:
        item["last_used_at"] = {"S": record.last_used_at}
    return item


def _from_item(item: dict[str, AttributeValueTypeDef]) -> KeyRecord:
    last_used = item.get("last_used_at")
    return KeyRecord(
        key_id=item["key_id"]["S"],
        account_id=item["account_id"]["S"],
        secret_hash=item["secret_hash"]["S"],
        scopes=frozenset(Scope(s["S"]) for s in item["scopes"]["L"]),
        status=KeyStatus(item["status"]["S"]),
        rate_limit_per_minute=int(item["rate_limit_per_minute"]["N"]),
        name=item.get("name", {}).get("S", ""),
        created_at=item.get("created_at", {}).get("S", ""),
        last_used_at=last_used["S"] if last_used else None,
    )


def _value(value: object) -> AttributeValueTypeDef:
    if isinstance(value, KeyStatus):
        return {"S": value.value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, frozenset | set):
        return {"L": [{"S": Scope(s).value} for s in sorted(value)]}
    return {"S": str(value)}


class DynamoKeyStore:
    def __init__(self, client: LeanDynamoDB, table: str) -> None:
        self._client = client
        self._table = table

    async def get(self, key_id: str) -> KeyRecord:
        response = await self._client.get_item(TableName=self._table, Key={"key_id": {"S": key_id}})
        if "Item" not in response:
            raise KeyNotFound(key_id)
        return _from_item(response["Item"])

    async def create(self, record: KeyRecord) -> None:
        try:
            await self._client.put_item(
                TableName=self._table,
                Item=_to_item(record),
                ConditionExpression="attribute_not_exists(key_id)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise AlreadyExists(record.key_id) from exc
            raise

    async def touch(self, key_id: str, used_at: str) -> None:
        await self._client.update_item(
            TableName=self._table,
            Key={"key_id": {"S": key_id}},
            UpdateExpression="SET last_used_at = :t",
            ConditionExpression="attribute_exists(key_id)",
            ExpressionAttributeValues={":t": {"S": used_at}},
        )

    async def update(self, key_id: str, **changes: object) -> KeyRecord:
        """Set the given fields; a revoked key can no longer change status."""
        names = {f"#f{i}": name for i, name in enumerate(changes)}
        values = {f":v{i}": _value(v) for i, v in enumerate(changes.values())}
        values[":revoked"] = {"S": KeyStatus.REVOKED.value}
        assignments = ", ".join(f"#f{i} = :v{i}" for i in range(len(changes)))
        try:
            response = await self._client.update_item(
                TableName=self._table,
                Key={"key_id": {"S": key_id}},
                UpdateExpression=f"SET {assignments}",
                ConditionExpression="attribute_exists(key_id) AND #status <> :revoked",
                ExpressionAttributeNames={**names, "#status": "status"},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise KeyNotFound(key_id) from exc
            raise
        return _from_item(response["Attributes"])

    async def scan(self) -> AsyncIterator[KeyRecord]:
        """Every key record; operators' listing only, never on a request path."""
        paginator = self._client.admin.get_paginator("scan")
        async for page in paginator.paginate(TableName=self._table):
            for item in page.get("Items", []):
                yield _from_item(item)
