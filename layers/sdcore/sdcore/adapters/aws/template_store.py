"""Templates and batches in DynamoDB: items of the users table under prefixes of their own (the
proxy already reads and writes that table; templates are few and small, like the users' styles).

- ``tmpl#<owner>#<name>``: one template, ``data`` (its JSON) and ``version``, the number every
  write is conditioned on. Names hold no "#", so the last one splits the key.
- ``tmpls#<owner>``: ``names``, the string set of the owner's template names, kept in the same
  transaction as each put and delete: a listing is consistent reads of that item and the items it
  names, with no scan and no index (a GSI would be eventually consistent).
- ``batch#<id>``: one batch, ``data``; ``gridKey`` once its grid is drawn; ``expiresAt`` (the
  table's TTL attribute) as its tasks'.
"""

from __future__ import annotations

import builtins
from typing import Any

from botocore.exceptions import ClientError

from sdcore.adapters.aws.codec import check_size, error_code
from sdcore.domain.templates import Batch, Template
from sdcore.errors import ConflictError, NotFoundError, StaleWriteError
from sdcore.ports.templates import BatchStore, TemplateStore


def _key(pk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}}


def _cancelled_on_condition(error: ClientError, index: int) -> bool:
    reasons = error.response.get("CancellationReasons") or []
    return len(reasons) > index and reasons[index].get("Code") == "ConditionalCheckFailed"


class DynamoDBTemplateStore(TemplateStore):
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def put(self, template: Template, expected_version: int) -> None:
        item = {
            **_key(f"tmpl#{template.owner}#{template.name}"),
            "data": {"S": template.model_dump_json()},
            "version": {"N": str(template.version)},
        }
        check_size(item, f"template {template.name}")
        put: dict[str, Any] = {"TableName": self.table, "Item": item}
        if expected_version:
            put["ConditionExpression"] = "version = :v"
            put["ExpressionAttributeValues"] = {":v": {"N": str(expected_version)}}
        else:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        index = {
            "TableName": self.table,
            "Key": _key(f"tmpls#{template.owner}"),
            "UpdateExpression": "ADD #names :n",
            "ExpressionAttributeNames": {"#names": "names"},
            "ExpressionAttributeValues": {":n": {"SS": [template.name]}},
        }
        try:
            self.client.transact_write_items(TransactItems=[{"Put": put}, {"Update": index}])
        except ClientError as e:
            if _cancelled_on_condition(e, 0):
                raise StaleWriteError(f"template {template.name} changed meanwhile") from None
            raise

    def get(self, owner: str, name: str) -> Template:
        resp = self.client.get_item(
            TableName=self.table, Key=_key(f"tmpl#{owner}#{name}"), ConsistentRead=True
        )
        if "Item" not in resp:
            raise NotFoundError(f"template {name} not found")
        return Template.model_validate_json(resp["Item"]["data"]["S"])

    def list(self, owner: str) -> builtins.list[Template]:
        resp = self.client.get_item(
            TableName=self.table, Key=_key(f"tmpls#{owner}"), ConsistentRead=True
        )
        names = sorted(resp.get("Item", {}).get("names", {}).get("SS", []))
        found: builtins.list[Template] = []
        for start in range(0, len(names), 100):  # BatchGetItem takes 100 keys a call
            keys = [_key(f"tmpl#{owner}#{n}") for n in names[start : start + 100]]
            request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                got = self.client.batch_get_item(RequestItems=request)
                found += [
                    Template.model_validate_json(i["data"]["S"])
                    for i in got["Responses"].get(self.table, [])
                ]
                request = got.get("UnprocessedKeys") or {}
        return sorted(found, key=lambda t: t.name)

    def delete(self, owner: str, name: str) -> None:
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Delete": {
                            "TableName": self.table,
                            "Key": _key(f"tmpl#{owner}#{name}"),
                            "ConditionExpression": "attribute_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": _key(f"tmpls#{owner}"),
                            "UpdateExpression": "DELETE #names :n",
                            "ExpressionAttributeNames": {"#names": "names"},
                            "ExpressionAttributeValues": {":n": {"SS": [name]}},
                        }
                    },
                ]
            )
        except ClientError as e:
            if _cancelled_on_condition(e, 0):
                raise NotFoundError(f"template {name} not found") from None
            raise


class DynamoDBBatchStore(BatchStore):
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def create(self, batch: Batch) -> None:
        item = {**_key(f"batch#{batch.batch_id}"), "data": {"S": batch.model_dump_json()}}
        if batch.expires_at:
            item["expiresAt"] = {"N": str(batch.expires_at)}
        check_size(item, f"batch {batch.batch_id}")
        try:
            self.client.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                raise ConflictError(f"batch {batch.batch_id} exists") from None
            raise

    @staticmethod
    def _batch(item: dict[str, Any]) -> Batch:
        batch = Batch.model_validate_json(item["data"]["S"])
        if "gridKey" in item:
            batch.grid_key = item["gridKey"]["S"]
        return batch

    def get(self, batch_id: str) -> Batch:
        resp = self.client.get_item(
            TableName=self.table, Key=_key(f"batch#{batch_id}"), ConsistentRead=True
        )
        if "Item" not in resp:
            raise NotFoundError(f"batch {batch_id} not found")
        return self._batch(resp["Item"])

    def set_grid(self, batch_id: str, key: str) -> Batch:
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=_key(f"batch#{batch_id}"),
                UpdateExpression="SET gridKey = if_not_exists(gridKey, :k)",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":k": {"S": key}},
                ReturnValues="ALL_NEW",
            )
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                raise NotFoundError(f"batch {batch_id} not found") from None
            raise
        return self._batch(resp["Attributes"])
