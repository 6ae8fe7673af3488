"""Models in DynamoDB: conditional updates on status and on the pending version's key."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from sdcore.adapters.aws.codec import (
    Codec,
    error_code,
    in_condition,
    scan,
    update_expression,
)
from sdcore.domain.models import (
    Model,
    ModelChanges,
    ModelStatus,
)
from sdcore.errors import ConflictError, NotFoundError, StaleWriteError
from sdcore.ports import ModelStore


class DynamoDBModelStore(ModelStore):
    codec: Codec[Model] = Codec(Model, "name", frozenset({"details"}))

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def create(self, model: Model) -> None:
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self.codec.item(model),
                ConditionExpression="attribute_not_exists(#pk) OR #st = :deleted",
                ExpressionAttributeNames={"#pk": "name", "#st": "status"},
                ExpressionAttributeValues={":deleted": {"S": ModelStatus.DELETED.value}},
            )
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                raise ConflictError(f"model {model.name} exists") from None
            raise

    def _get(self, name: str) -> Model | None:
        resp = self.client.get_item(
            TableName=self.table, Key=self.codec.key(name), ConsistentRead=True
        )
        return self.codec.record(resp["Item"]) if "Item" in resp else None

    def get(self, name: str) -> Model:
        model = self._get(name)
        if model is None or model.status is ModelStatus.DELETED:
            raise NotFoundError(f"model {name} not found")
        return model

    def update(
        self,
        name: str,
        changes: ModelChanges,
        expected: set[ModelStatus] | None = None,
        pending_key: str | None = None,
    ) -> Model:
        fields = changes.fields()
        if not fields or expected == set():
            # Nothing to write (or nothing can match): a consistent read gives the same answers.
            model = self._get(name)
            if model is None:
                raise NotFoundError(f"model {name} not found")
            if expected is not None and model.status not in expected:
                raise StaleWriteError(f"model {name} is {model.status.value}")
            if pending_key is not None and (
                model.pending is None or model.pending.key != pending_key
            ):
                raise StaleWriteError(f"model {name} has no pending version {pending_key}")
            return model
        expression, names, values = update_expression(self.codec.fields(fields))
        condition = "attribute_exists(#pk)"
        params: dict[str, Any] = {}
        kwargs: dict[str, Any] = {}
        names["#pk"] = "name"
        if expected is not None:
            in_, params = in_condition("#st", sorted(s.value for s in expected), "e")
            condition += f" AND {in_}"
            names["#st"] = "status"
        if pending_key is not None:  # `pending` is a map: its key is a nested attribute
            condition += " AND #pd.#pdk = :pdk"
            names.update({"#pd": "pending", "#pdk": "key"})
            params = {**params, ":pdk": {"S": pending_key}}
        if values or params:  # DynamoDB refuses an empty map here (an update of REMOVEs only)
            kwargs["ExpressionAttributeValues"] = {**values, **params}
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=self.codec.key(name),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **kwargs,
            )
        except ClientError as e:
            if error_code(e) != "ConditionalCheckFailedException":
                raise
            old = e.response.get("Item")
            if not old:
                raise NotFoundError(f"model {name} not found") from None
            status = old.get("status", {}).get("S")
            raise StaleWriteError(
                f"model {name} is {status} (or its pending version changed)"
            ) from None
        return self.codec.record(resp["Attributes"])

    def list(self) -> list[Model]:
        items = scan(
            self.client,
            TableName=self.table,
            ConsistentRead=True,
            FilterExpression="#st <> :deleted",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={":deleted": {"S": ModelStatus.DELETED.value}},
        )
        return sorted((self.codec.record(i) for i in items), key=lambda m: m.name)
