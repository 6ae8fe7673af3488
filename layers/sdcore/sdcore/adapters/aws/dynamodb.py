"""DynamoDB adapters of the table ports. Every state rule is a ConditionExpression, so two writers
racing on one record cannot both win (the local adapters get the same from SQLite transactions).

Item layout: one attribute per record field, in camelCase. Floats are stored as Decimal (DynamoDB
has no float type); free-form dicts (`Task.info`, `FunctionRecord.resources`) are stored as JSON
strings so that they round-trip exactly (a Decimal cannot tell 7.0 from 7). Index key attributes
cannot hold an empty string, so such a field (`Task.owner`) is left out when empty and reads back
as its default.
"""

from __future__ import annotations

import builtins
import json
import logging
import math
import random
from collections.abc import Iterator
from decimal import Decimal
from functools import cache
from typing import Any, Generic, TypeVar

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from pydantic import BaseModel, TypeAdapter

from sdcore.domain.models import (
    TERMINAL,
    ApiKey,
    FunctionRecord,
    Lease,
    Model,
    ModelChanges,
    ModelStatus,
    Task,
    TaskChanges,
    TaskStatus,
    TaskTransition,
    User,
    UserChanges,
)
from sdcore.errors import ConflictError, InvalidInputError, NotFoundError, StaleWriteError
from sdcore.ports import FunctionStore, ModelStore, SlotStore, TaskStore, UserStore

logger = logging.getLogger(__name__)

STATUS_INDEX = "byStatus"  # tasks GSI: status HASH, createdAt RANGE (see template.yaml)
OWNER_INDEX = "byOwner"  # tasks GSI: owner HASH, createdAt RANGE; sparse (tasks with an owner)
# DynamoDB's hard limit is 400 KB per item; refuse well before it with a clear error.
MAX_ITEM_BYTES = 350 * 1024

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()

R = TypeVar("R", bound=BaseModel)


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def to_dynamo(value: Any) -> Any:
    """Plain JSON-ish Python -> what boto3's serializer takes (floats become Decimal)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [to_dynamo(v) for v in value]
    return value


def from_dynamo(value: Any) -> Any:
    """The inverse of `to_dynamo`: Decimal becomes int when integral, else float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [from_dynamo(v) for v in value]
    return value


def _serialize(value: Any) -> dict[str, Any]:
    return _serializer.serialize(to_dynamo(value))


def _deserialize_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}


@cache
def _adapter(cls: type[BaseModel], field: str) -> TypeAdapter[Any]:
    return TypeAdapter(cls.model_fields[field].annotation or Any)


class _Codec(Generic[R]):
    """Record <-> item, field by field, so partial updates use the same encoding as full puts."""

    def __init__(
        self,
        cls: type[R],
        key_field: str,
        json_fields: frozenset[str] = frozenset(),
        omit_empty: frozenset[str] = frozenset(),
    ):
        self.cls = cls
        self.key_field = key_field
        self.key_attr = _camel(key_field)
        self.json_fields = json_fields
        # index keys: DynamoDB refuses "" there, so an empty value is not stored (or is removed)
        self.omit_empty = omit_empty
        self.attr = {field: _camel(field) for field in cls.model_fields}
        self.field = {attr: field for field, attr in self.attr.items()}

    def _encode(self, field: str, value: Any) -> Any:
        if value is None or (value == "" and field in self.omit_empty):
            return None
        return json.dumps(value) if field in self.json_fields else to_dynamo(value)

    def item(self, record: R) -> dict[str, Any]:
        data = record.model_dump(mode="json")
        encoded = {self.attr[f]: self._encode(f, v) for f, v in data.items()}
        item = {attr: _serialize(v) for attr, v in encoded.items() if v is not None}
        _check_size(item, self.cls.__name__.lower())
        return item

    def fields(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Validated, encoded attribute values of a partial update; None means remove."""
        out: dict[str, Any] = {}
        for field, value in fields.items():
            if field not in self.attr:
                raise TypeError(f"{self.cls.__name__} has no field {field!r}")
            if field == self.key_field:
                raise TypeError(f"{field!r} is the key and cannot change")
            adapter = _adapter(self.cls, field)
            plain = adapter.dump_python(adapter.validate_python(value), mode="json")
            out[self.attr[field]] = self._encode(field, plain)
        return out

    def record(self, item: dict[str, Any]) -> R:
        data: dict[str, Any] = {}
        for attr, value in _deserialize_item(item).items():
            field = self.field.get(attr)
            if field is None:
                continue
            data[field] = json.loads(value) if field in self.json_fields else value
        return self.cls.model_validate(data)

    def key(self, value: str) -> dict[str, Any]:
        return {self.key_attr: {"S": value}}


def _check_size(item: dict[str, Any], what: str) -> None:
    size = len(json.dumps(item, default=str).encode())
    if size > MAX_ITEM_BYTES:
        raise InvalidInputError(what, f"record too large ({size} bytes; the limit is 400 KB)")


def _update_expression(
    values: dict[str, Any],
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """SET every value that is not None, REMOVE the others (a record field left at None)."""
    names: dict[str, str] = {}
    params: dict[str, Any] = {}
    sets, removes = [], []
    for i, (attr, value) in enumerate(values.items()):
        names[f"#u{i}"] = attr
        if value is None:
            removes.append(f"#u{i}")
        else:
            params[f":u{i}"] = _serialize(value)
            sets.append(f"#u{i} = :u{i}")
    _check_size(params, "fields")
    parts = []
    if sets:
        parts.append("SET " + ", ".join(sets))
    if removes:
        parts.append("REMOVE " + ", ".join(removes))
    return " ".join(parts), names, params


def _in(name: str, values: list[str], prefix: str) -> tuple[str, dict[str, Any]]:
    placeholders = {f":{prefix}{i}": {"S": v} for i, v in enumerate(values)}
    return f"{name} IN ({', '.join(placeholders)})", placeholders


def _scan(client: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("scan").paginate(**kwargs):
        yield from page.get("Items", [])


class DynamoDBTaskStore(TaskStore):
    codec: _Codec[Task] = _Codec(Task, "task_id", frozenset({"info"}), frozenset({"owner"}))

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def create(self, task: Task) -> None:
        try:
            self.client.put_item(
                TableName=self.table,
                Item=self.codec.item(task),
                ConditionExpression="attribute_not_exists(taskId)",
            )
        except ClientError as e:
            if _code(e) == "ConditionalCheckFailedException":
                raise ConflictError(f"task {task.task_id} exists") from None
            raise

    def get(self, task_id: str) -> Task:
        resp = self.client.get_item(
            TableName=self.table, Key=self.codec.key(task_id), ConsistentRead=True
        )
        if "Item" not in resp:
            raise NotFoundError(f"task {task_id} not found")
        return self.codec.record(resp["Item"])

    def _conditional_update(
        self, task_id: str, values: dict[str, Any], condition: str, params: dict[str, Any]
    ) -> Task:
        """Raises ClientError (ConditionalCheckFailedException carries the old item, if any)."""
        expression, names, values_ = _update_expression(values)
        resp = self.client.update_item(
            TableName=self.table,
            Key=self.codec.key(task_id),
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames={**names, "#st": "status"},
            ExpressionAttributeValues={**values_, **params},
            ReturnValues="ALL_NEW",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return self.codec.record(resp["Attributes"])

    def transition(self, task_id: str, change: TaskTransition) -> Task:
        if not change.from_:
            raise StaleWriteError(f"task {task_id} is {self.get(task_id).status.value}")
        values = self.codec.fields({**change.changes.fields(), "status": change.to})
        condition, params = _in("#st", sorted(s.value for s in change.from_), "from")
        try:
            return self._conditional_update(
                task_id, values, f"attribute_exists(taskId) AND {condition}", params
            )
        except ClientError as e:
            if _code(e) != "ConditionalCheckFailedException":
                raise
            old = e.response.get("Item")
            if not old:
                raise NotFoundError(f"task {task_id} not found") from None
            status = old.get("status", {}).get("S")
            raise StaleWriteError(f"task {task_id} is {status}") from None

    def update_running(self, task_id: str, changes: TaskChanges) -> bool:
        fields = changes.fields()
        if not fields:
            return self.get(task_id).status is TaskStatus.RUNNING
        try:
            self._conditional_update(
                task_id,
                self.codec.fields(fields),
                "#st = :running",
                {":running": {"S": TaskStatus.RUNNING.value}},
            )
        except ClientError as e:
            if _code(e) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def request_cancel(self, task_id: str) -> Task:
        condition, params = _in("#st", sorted(s.value for s in TERMINAL), "t")
        try:
            return self._conditional_update(
                task_id,
                self.codec.fields({"cancel_requested": True}),
                f"attribute_exists(taskId) AND NOT ({condition})",
                params,
            )
        except ClientError as e:
            if _code(e) != "ConditionalCheckFailedException":
                raise
            if not e.response.get("Item"):
                raise NotFoundError(f"task {task_id} not found") from None
            return self.codec.record(e.response["Item"])  # terminal: nothing to cancel

    def list_by_status(self, status: TaskStatus, limit: int = 100) -> list[Task]:
        # The index is eventually consistent: a task that just changed status may show up late.
        out: list[Task] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": "#st = :s",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {":s": {"S": status.value}},
            "ScanIndexForward": True,
        }
        while len(out) < limit:
            resp = self.client.query(Limit=limit - len(out), **kwargs)
            out.extend(self.codec.record(item) for item in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return out[:limit]

    def list_by_owner(
        self,
        owner: str,
        status: TaskStatus | None = None,
        limit: int = 20,
        before: tuple[float, str] | None = None,
    ) -> list[Task]:
        """The byOwner index, newest first. The index orders items by createdAt only: items that
        share a createdAt come in any order, so the page is cut only after the whole group of
        its last createdAt is read, then ordered by (createdAt, taskId) like the local store."""
        if not owner or limit <= 0:
            return []  # tasks without an owner are not in the (sparse) index
        names = {"#o": "owner"}
        values: dict[str, Any] = {":o": {"S": owner}}
        key = "#o = :o"
        if before is not None:
            key += " AND createdAt <= :c"  # <=: the cursor's own createdAt may have more items
            values[":c"] = _serialize(float(before[0]))
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": key,
            "ScanIndexForward": False,
            "Limit": limit + 1,
        }
        if status is not None:
            kwargs["FilterExpression"] = "#st = :s"
            names["#st"] = "status"
            values[":s"] = {"S": status.value}
        kwargs["ExpressionAttributeNames"] = names
        kwargs["ExpressionAttributeValues"] = values

        found: list[Task] = []
        while True:
            resp = self.client.query(**kwargs)
            for item in resp.get("Items", []):
                task = self.codec.record(item)
                if before is not None and (task.created_at, task.task_id) >= before:
                    continue  # at or after the cursor (a tie on createdAt)
                found.append(task)
            if len(found) > limit and found[-1].created_at < found[limit - 1].created_at:
                break  # the group of the page's last createdAt is complete
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        found.sort(key=lambda t: (t.created_at, t.task_id), reverse=True)
        return found[:limit]

    def count_active(self, owner: str, since: float) -> int:
        if not owner:
            return 0
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "#o = :o AND createdAt > :since",
            "FilterExpression": "#st IN (:q, :r)",
            "ExpressionAttributeNames": {"#o": "owner", "#st": "status"},
            "ExpressionAttributeValues": {
                ":o": {"S": owner},
                ":since": _serialize(float(since)),
                ":q": {"S": TaskStatus.QUEUED.value},
                ":r": {"S": TaskStatus.RUNNING.value},
            },
            "Select": "COUNT",
        }
        count = 0
        while True:
            resp = self.client.query(**kwargs)
            count += int(resp.get("Count", 0))
            if "LastEvaluatedKey" not in resp:
                return count
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def count_waiting_high(self, since: float) -> int:
        # The byStatus index holds every task (status is always set); the filter reads the queued
        # ones after `since` and counts the high ones. Eventually consistent, like list_by_status.
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": "#st = :q AND createdAt > :since",
            "FilterExpression": "#p = :high",
            "ExpressionAttributeNames": {"#st": "status", "#p": "priority"},
            "ExpressionAttributeValues": {
                ":q": {"S": TaskStatus.QUEUED.value},
                ":since": _serialize(float(since)),
                ":high": {"N": "1"},
            },
            "Select": "COUNT",
        }
        count = 0
        while True:
            resp = self.client.query(**kwargs)
            count += int(resp.get("Count", 0))
            if "LastEvaluatedKey" not in resp:
                return count
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


class DynamoDBModelStore(ModelStore):
    codec: _Codec[Model] = _Codec(Model, "name", frozenset({"details"}))

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
            if _code(e) == "ConditionalCheckFailedException":
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
        expression, names, values = _update_expression(self.codec.fields(fields))
        condition = "attribute_exists(#pk)"
        params: dict[str, Any] = {}
        kwargs: dict[str, Any] = {}
        names["#pk"] = "name"
        if expected is not None:
            in_, params = _in("#st", sorted(s.value for s in expected), "e")
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
            if _code(e) != "ConditionalCheckFailedException":
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
        items = _scan(
            self.client,
            TableName=self.table,
            ConsistentRead=True,
            FilterExpression="#st <> :deleted",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={":deleted": {"S": ModelStatus.DELETED.value}},
        )
        return sorted((self.codec.record(i) for i in items), key=lambda m: m.name)


class DynamoDBFunctionStore(FunctionStore):
    codec: _Codec[FunctionRecord] = _Codec(FunctionRecord, "name", frozenset({"resources"}))

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
        items = _scan(self.client, TableName=self.table, ConsistentRead=True)
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
                ExpressionAttributeValues={":t": _serialize(float(last_used))},
            )
        except ClientError as e:
            if _code(e) != "ConditionalCheckFailedException":
                raise


class DynamoDBSlotStore(SlotStore):
    """Concurrency slots as items: `g#<k>` (k < global cap), `m#<model>#<j>` (j < model cap).

    A slot is free when its item is absent or its lease expired. A task takes one global and one
    model slot plus a marker item `t#<taskId>` in one TransactWriteItems, each Put conditioned on
    the slot being free, so the caps hold under any race and a task cannot hold two leases (the
    marker is what a redelivered message for a running task trips on). Lease.slots holds all three.
    """

    FREE = "attribute_not_exists(slotId) OR expiresAt <= :now"
    ATTEMPTS = 5

    def __init__(self, client: Any, table: str, rng: random.Random | None = None) -> None:
        self.client = client
        self.table = table
        self.rng = rng or random.Random()

    def _read(self, slot_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Consistent reads of the candidate slots (a small table: caps, plus one marker)."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(slot_ids), 100):
            keys: Any = {
                self.table: {
                    "Keys": [{"slotId": {"S": s}} for s in slot_ids[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while keys:
                resp = self.client.batch_get_item(RequestItems=keys)
                for item in resp.get("Responses", {}).get(self.table, []):
                    plain = _deserialize_item(item)
                    found[plain["slotId"]] = plain
                keys = resp.get("UnprocessedKeys") or None
        return found

    def acquire(
        self, task_id: str, model: str, now: float, lease_s: float, global_cap: int, model_cap: int
    ) -> Lease | None:
        marker = f"t#{task_id}"
        global_ids = [f"g#{k}" for k in range(global_cap)]
        model_ids = [f"m#{model}#{j}" for j in range(model_cap)]
        expires = now + lease_s

        def free(item: dict[str, Any] | None) -> bool:
            return item is None or item["expiresAt"] <= now

        for _ in range(self.ATTEMPTS):
            current = self._read([marker, *global_ids, *model_ids])
            if not free(current.get(marker)):
                return None  # a redelivered message for a task that already holds its slots
            free_global = [s for s in global_ids if free(current.get(s))]
            free_model = [s for s in model_ids if free(current.get(s))]
            if not free_global or not free_model:
                return None
            # A random free pair, so that concurrent acquirers rarely pick the same items.
            slots = [marker, self.rng.choice(free_global), self.rng.choice(free_model)]
            try:
                self.client.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": {
                                    "slotId": {"S": slot},
                                    "taskId": {"S": task_id},
                                    "model": {"S": model},
                                    "expiresAt": _serialize(float(expires)),
                                },
                                "ConditionExpression": self.FREE,
                                "ExpressionAttributeValues": {":now": _serialize(float(now))},
                            }
                        }
                        for slot in slots
                    ]
                )
            except ClientError as e:
                if _code(e) not in ("TransactionCanceledException", "TransactionConflict"):
                    raise
                reasons = e.response.get("CancellationReasons") or []
                if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    return None  # the marker: this task took its slots in a race with itself
                continue  # another task took one of the two: read again
            return Lease(task_id=task_id, model=model, slots=slots, expires_at=expires)
        logger.info("no slot for task %s after %d contended attempts", task_id, self.ATTEMPTS)
        return None

    def renew(self, lease: Lease, expires_at: float) -> bool:
        if not lease.slots:
            return False
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": {"slotId": {"S": slot}},
                            "UpdateExpression": "SET expiresAt = :e",
                            "ConditionExpression": "taskId = :t",
                            "ExpressionAttributeValues": {
                                ":e": _serialize(float(expires_at)),
                                ":t": {"S": lease.task_id},
                            },
                        }
                    }
                    for slot in lease.slots
                ]
            )
        except ClientError as e:
            if _code(e) in ("TransactionCanceledException", "TransactionConflict"):
                return False
            raise
        return True

    def release(self, lease: Lease) -> None:
        for slot in lease.slots:
            try:
                self.client.delete_item(
                    TableName=self.table,
                    Key={"slotId": {"S": slot}},
                    ConditionExpression="taskId = :t",
                    ExpressionAttributeValues={":t": {"S": lease.task_id}},
                )
            except ClientError as e:
                if _code(e) != "ConditionalCheckFailedException":
                    raise  # else: expired and taken by another task since; not ours to free

    def active(self, now: float) -> list[Lease]:
        leases: dict[str, Lease] = {}
        items = _scan(
            self.client,
            TableName=self.table,
            ConsistentRead=True,
            FilterExpression="expiresAt > :now",
            ExpressionAttributeValues={":now": _serialize(float(now))},
        )
        for raw in items:
            item = _deserialize_item(raw)
            lease = leases.setdefault(
                item["taskId"],
                Lease(
                    task_id=item["taskId"],
                    model=item["model"],
                    slots=[],
                    expires_at=item["expiresAt"],
                ),
            )
            lease.slots.append(item["slotId"])
            lease.expires_at = min(lease.expires_at, item["expiresAt"])
        return list(leases.values())


class DynamoDBUserStore(UserStore):
    """Users, their API keys and rate counters in one table keyed by the string `pk`:

    - ``user#<name>``: the User fields (camelCase), plus ``keyHashes``, a string set of the
      sha256 of every key of the user (absent until the first key). It is how list_keys and
      revoke_keys find the keys with consistent reads and no index: a GSI on the key items
      would be eventually consistent, and a revocation must not miss a key created a moment ago.
    - ``key#<sha256>``: the ApiKey fields; find_key is one consistent GetItem.
    - ``rate#<counter>``: ``value`` (a number kept by atomic ADD) and ``expiresAt``, the table's
      TTL attribute (DynamoDB deletes the item some time after it passes).

    `put_key` writes the key item and adds its hash to the user's set in one transaction, on
    the condition that the user exists (NotFoundError otherwise).
    """

    users: _Codec[User] = _Codec(User, "name")
    keys: _Codec[ApiKey] = _Codec(ApiKey, "key_hash")

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    @staticmethod
    def _pk(kind: str, value: str) -> dict[str, Any]:
        return {"pk": {"S": f"{kind}#{value}"}}

    def create(self, user: User) -> None:
        try:
            self.client.put_item(
                TableName=self.table,
                Item={**self._pk("user", user.name), **self.users.item(user)},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as e:
            if _code(e) == "ConditionalCheckFailedException":
                raise ConflictError(f"user {user.name} exists") from None
            raise

    def _get_user_item(self, name: str) -> dict[str, Any] | None:
        resp = self.client.get_item(
            TableName=self.table, Key=self._pk("user", name), ConsistentRead=True
        )
        return resp.get("Item")

    def get(self, name: str) -> User:
        item = self._get_user_item(name)
        if item is None:
            raise NotFoundError(f"user {name} not found")
        return self.users.record(item)

    def list(self) -> list[User]:
        # A scan, filtered to user items: admin listings are rare; keys and counters are skipped.
        items = _scan(
            self.client,
            TableName=self.table,
            ConsistentRead=True,
            FilterExpression="begins_with(pk, :user)",
            ExpressionAttributeValues={":user": {"S": "user#"}},
        )
        return sorted((self.users.record(i) for i in items), key=lambda u: u.name)

    def update(self, name: str, changes: UserChanges) -> User:
        fields = changes.fields()
        if not fields:
            return self.get(name)
        expression, names, values = _update_expression(self.users.fields(fields))
        kwargs: dict[str, Any] = {"ExpressionAttributeValues": values} if values else {}
        try:
            resp = self.client.update_item(
                TableName=self.table,
                Key=self._pk("user", name),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeNames=names,
                ReturnValues="ALL_NEW",
                **kwargs,
            )
        except ClientError as e:
            if _code(e) == "ConditionalCheckFailedException":
                raise NotFoundError(f"user {name} not found") from None
            raise
        return self.users.record(resp["Attributes"])

    def put_key(self, key: ApiKey) -> None:
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.table,
                            "Item": {**self._pk("key", key.key_hash), **self.keys.item(key)},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": self._pk("user", key.user),
                            "UpdateExpression": "ADD keyHashes :h",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": {":h": {"SS": [key.key_hash]}},
                        }
                    },
                ]
            )
        except ClientError as e:
            reasons = e.response.get("CancellationReasons") or []
            if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                raise NotFoundError(f"user {key.user} not found") from None
            raise

    def find_key(self, key_hash: str) -> ApiKey | None:
        resp = self.client.get_item(
            TableName=self.table, Key=self._pk("key", key_hash), ConsistentRead=True
        )
        return self.keys.record(resp["Item"]) if "Item" in resp else None

    # builtins.list: in this class `list` is the method
    def _key_hashes(self, user: str) -> builtins.list[str]:
        item = self._get_user_item(user)
        return sorted(item.get("keyHashes", {}).get("SS", [])) if item else []

    def list_keys(self, user: str) -> builtins.list[ApiKey]:
        hashes = self._key_hashes(user)
        found: builtins.list[ApiKey] = []
        for start in range(0, len(hashes), 100):
            request: Any = {
                self.table: {
                    "Keys": [self._pk("key", h) for h in hashes[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while request:
                resp = self.client.batch_get_item(RequestItems=request)
                items = resp.get("Responses", {}).get(self.table, [])
                found += [self.keys.record(i) for i in items]
                request = resp.get("UnprocessedKeys") or None
        mine = [k for k in found if k.user == user]  # a key re-put under another user is theirs
        return sorted(mine, key=lambda k: (k.created_at, k.key_hash))

    def revoke_keys(self, user: str) -> int:
        revoked = 0
        for key_hash in self._key_hashes(user):
            try:
                # Conditional per key: two concurrent revocations count each key once.
                self.client.update_item(
                    TableName=self.table,
                    Key=self._pk("key", key_hash),
                    UpdateExpression="SET revoked = :yes",
                    ConditionExpression="attribute_exists(pk) AND #u = :u AND revoked = :no",
                    ExpressionAttributeNames={"#u": "user"},
                    ExpressionAttributeValues={
                        ":yes": {"BOOL": True},
                        ":no": {"BOOL": False},
                        ":u": {"S": user},
                    },
                )
            except ClientError as e:
                if _code(e) != "ConditionalCheckFailedException":
                    raise
                continue
            revoked += 1
        return revoked

    def hit(self, counter: str, expires_at: float) -> int:
        resp = self.client.update_item(
            TableName=self.table,
            Key=self._pk("rate", counter),
            # expiresAt is set by the first hit only, like the local store (TTL takes whole seconds)
            UpdateExpression="ADD #v :one SET expiresAt = if_not_exists(expiresAt, :e)",
            ExpressionAttributeNames={"#v": "value"},
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":e": {"N": str(math.ceil(expires_at))},
            },
            ReturnValues="UPDATED_NEW",
        )
        return int(resp["Attributes"]["value"]["N"])
