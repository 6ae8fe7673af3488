"""Tasks in DynamoDB: conditional transitions, progress while running, the owner's history
and the status index the reaper reads."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from sdcore.adapters.aws.codec import (
    Codec,
    error_code,
    in_condition,
    serialize,
    update_expression,
)
from sdcore.domain.models import (
    TERMINAL,
    Task,
    TaskChanges,
    TaskStatus,
    TaskTransition,
)
from sdcore.errors import ConflictError, NotFoundError, StaleWriteError
from sdcore.ports import TaskStore

STATUS_INDEX = "byStatus"  # tasks GSI: status HASH, createdAt RANGE (see template.yaml)
# tasks GSI: waitingHigh HASH, createdAt RANGE; sparse: only queued high-priority tasks carry
# the attribute, so "is a high task waiting?" reads those, not the whole backlog
WAITING_HIGH_INDEX = "byWaitingHigh"
WAITING_HIGH = "waitingHigh"
OWNER_INDEX = "byOwner"  # tasks GSI: owner HASH, createdAt RANGE; sparse (tasks with an owner)


class DynamoDBTaskStore(TaskStore):
    codec: Codec[Task] = Codec(Task, "task_id", frozenset({"info"}), frozenset({"owner"}))

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def create(self, task: Task) -> None:
        item = self.codec.item(task)
        if task.priority == 1 and task.status is TaskStatus.QUEUED:
            item[WAITING_HIGH] = {"S": "1"}
        try:
            self.client.put_item(
                TableName=self.table,
                Item=item,
                ConditionExpression="attribute_not_exists(taskId)",
            )
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
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
        expression, names, values_ = update_expression(values)
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
        if change.to is not TaskStatus.QUEUED:
            values[WAITING_HIGH] = None  # no longer waiting: out of the sparse index
        condition, params = in_condition("#st", sorted(s.value for s in change.from_), "from")
        try:
            task = self._conditional_update(
                task_id, values, f"attribute_exists(taskId) AND {condition}", params
            )
        except ClientError as e:
            if error_code(e) != "ConditionalCheckFailedException":
                raise
            old = e.response.get("Item")
            if not old:
                raise NotFoundError(f"task {task_id} not found") from None
            status = old.get("status", {}).get("S")
            raise StaleWriteError(f"task {task_id} is {status}") from None
        if change.to is TaskStatus.QUEUED and task.priority == 1:  # waiting again (a retry)
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key=self.codec.key(task_id),
                    UpdateExpression="SET #w = :one",
                    ConditionExpression="#st = :q",
                    ExpressionAttributeNames={"#w": WAITING_HIGH, "#st": "status"},
                    ExpressionAttributeValues={
                        ":one": {"S": "1"},
                        ":q": {"S": TaskStatus.QUEUED.value},
                    },
                )
            except ClientError as e:  # it left the queue meanwhile: not waiting
                if error_code(e) != "ConditionalCheckFailedException":
                    raise
        return task

    def update_while(self, task_id: str, status: TaskStatus, changes: TaskChanges) -> bool:
        fields = changes.fields()
        if not fields:
            try:
                return self.get(task_id).status is status
            except NotFoundError:
                return False
        try:
            self._conditional_update(
                task_id,
                self.codec.fields(fields),
                "#st = :status",
                {":status": {"S": status.value}},
            )
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def request_cancel(self, task_id: str) -> Task:
        condition, params = in_condition("#st", sorted(s.value for s in TERMINAL), "t")
        try:
            return self._conditional_update(
                task_id,
                self.codec.fields({"cancel_requested": True}),
                f"attribute_exists(taskId) AND NOT ({condition})",
                params,
            )
        except ClientError as e:
            if error_code(e) != "ConditionalCheckFailedException":
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
            values[":c"] = serialize(float(before[0]))
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
                ":since": serialize(float(since)),
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
        # The sparse index holds only queued high-priority tasks: this reads those, however
        # long the backlog of normal ones. Eventually consistent, like list_by_status.
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": WAITING_HIGH_INDEX,
            "KeyConditionExpression": "#w = :one AND createdAt > :since",
            "ExpressionAttributeNames": {"#w": WAITING_HIGH},
            "ExpressionAttributeValues": {":one": {"S": "1"}, ":since": serialize(float(since))},
            "Select": "COUNT",
        }
        count = 0
        while True:
            resp = self.client.query(**kwargs)
            count += int(resp.get("Count", 0))
            if "LastEvaluatedKey" not in resp:
                return count
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
