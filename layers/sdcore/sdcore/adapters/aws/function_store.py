"""Inference function records in DynamoDB."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from sdcore.adapters.aws.codec import (
    Codec,
    error_code,
    scan,
    serialize,
)
from sdcore.domain.models import (
    FunctionRecord,
)
from sdcore.errors import NotFoundError
from sdcore.ports import FunctionStore


class DynamoDBFunctionStore(FunctionStore):
    codec: Codec[FunctionRecord] = Codec(FunctionRecord, "name", frozenset({"resources"}))

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def put(self, record: FunctionRecord) -> None:
        self.client.put_item(TableName=self.table, Item=self.codec.item(record))

    def get(self, name: str) -> FunctionRecord:
        resp = self.client.get_item(
            TableName=self.table, Key=self.codec.key(name), ConsistentRead=True
        )
        if "Item" not in resp:
            raise NotFoundError(f"function {name} not found")
        return self.codec.record(resp["Item"])

    def list(self) -> list[FunctionRecord]:
        items = scan(self.client, TableName=self.table, ConsistentRead=True)
        return sorted((self.codec.record(i) for i in items), key=lambda r: r.name)

    def delete(self, name: str) -> None:
        self.client.delete_item(TableName=self.table, Key=self.codec.key(name))

    def touch(self, name: str, last_used: float) -> None:
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self.codec.key(name),
                UpdateExpression="SET lastUsed = :t",
                ConditionExpression="attribute_exists(#pk)",
                ExpressionAttributeNames={"#pk": "name"},
                ExpressionAttributeValues={":t": serialize(float(last_used))},
            )
        except ClientError as e:
            if error_code(e) != "ConditionalCheckFailedException":
                raise
