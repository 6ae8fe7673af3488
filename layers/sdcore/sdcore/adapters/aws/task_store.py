"""Tasks in DynamoDB: conditional transitions, progress while running, the owner's history
and the status index the reaper reads.

The per-user quota on queued-or-running tasks is a counter item per owner in the same table
(`taskId` "active#<owner>": no status, owner or createdAt, so in no index). A task created
under the quota adds one in the same transaction as its put, conditioned on the limit, and is
marked counted; its move to a terminal status takes one off in the same transaction. Tasks
stored before the counter existed are not marked and take nothing off."""

from __future__ import annotations

import random
import time
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
from sdcore.errors import (
    ConflictError,
    NotFoundError,
    OverCapError,
    StaleWriteError,
    over_active_limit,
)
from sdcore.ports import TaskStore

STATUS_INDEX = "byStatus"  # tasks GSI: status HASH, createdAt RANGE (see template.yaml)
# tasks GSI: waitingHigh HASH, createdAt RANGE; sparse: only queued high-priority tasks carry
# the attribute, so "is a high task waiting?" reads those, not the whole backlog
WAITING_HIGH_INDEX = "byWaitingHigh"
WAITING_HIGH = "waitingHigh"
OWNER_INDEX = "byOwner"  # tasks GSI: owner HASH, createdAt RANGE; sparse (tasks with an owner)
ACTIVE = "activeCount"  # the per-owner counter item's attribute
COUNTED = "quotaCounted"  # a task that holds one of its owner's counter
TRANSACTION_ATTEMPTS = 8  # transactions on one owner's counter at once cancel each other


def _active_key(owner: str) -> str:
    return f"active#{owner}"


def _cancellation(e: ClientError) -> list[dict[str, Any]] | None:
    """The per-item reasons of a cancelled transaction; None when another transaction on the
    same items was in the way (try again), and re-raises any other error."""
    if error_code(e) not in ("TransactionCanceledException", "TransactionConflict"):
        raise e
    reasons: list[dict[str, Any]] = e.response.get("CancellationReasons") or []
    if any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
        return reasons
    return None


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311 (jitter, not a secret)


class DynamoDBTaskStore(TaskStore):
    codec: Codec[Task] = Codec(Task, "task_id", frozenset({"info"}), frozenset({"owner"}))

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def create(self, task: Task, active_limit: int | None = None) -> None:
        item = self.codec.item(task)
        if task.priority == 1 and task.status is TaskStatus.QUEUED:
            item[WAITING_HIGH] = {"S": "1"}
        if active_limit is not None and task.owner:
            item[COUNTED] = {"BOOL": True}
            self._create_counted(item, task.owner, active_limit)
            return
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

    def _create_counted(self, item: dict[str, Any], owner: str, limit: int) -> None:
        put = {
            "TableName": self.table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(taskId)",
        }
        count = {
            "TableName": self.table,
            "Key": self.codec.key(_active_key(owner)),
            "UpdateExpression": "ADD #n :one",
            "ConditionExpression": "attribute_not_exists(#n) OR #n < :limit",
            "ExpressionAttributeNames": {"#n": ACTIVE},
            "ExpressionAttributeValues": {":one": {"N": "1"}, ":limit": {"N": str(limit)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                self.client.transact_write_items(TransactItems=[{"Put": put}, {"Update": count}])
                return
            except ClientError as e:
                reasons = _cancellation(e)
            if reasons is None:
                _backoff(attempt)
                continue
            if reasons[0].get("Code") == "ConditionalCheckFailed":
                raise ConflictError(f"task {item['taskId']['S']} exists")
            active = int(reasons[1].get("Item", {}).get(ACTIVE, {}).get("N", limit))
            raise OverCapError(over_active_limit(active, limit), retry_after_s=5)
        raise OverCapError("too many submits at once; try again", retry_after_s=1)

    def get(self, task_id: str) -> Task:
        resp = self.client.get_item(
            TableName=self.table, Key=self.codec.key(task_id), ConsistentRead=True
        )
        if "Item" not in resp:
            raise NotFoundError(f"task {task_id} not found")
        return self.codec.record(resp["Item"])

    def _conditional_update(
        self,
        task_id: str,
        values: dict[str, Any],
        condition: str,
        params: dict[str, Any],
        condition_names: dict[str, str] | None = None,
    ) -> Task:
        """Raises ClientError (ConditionalCheckFailedException carries the old item, if any)."""
        expression, names, values_ = update_expression(values)
        resp = self.client.update_item(
            TableName=self.table,
            Key=self.codec.key(task_id),
            UpdateExpression=expression,
            ConditionExpression=condition,
            ExpressionAttributeNames={**names, "#st": "status", **(condition_names or {})},
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
        if change.to.terminal:
            owner = self._counted_owner(task_id)
            if owner is not None:
                values[COUNTED] = None
                return self._end_counted(task_id, owner, values, condition, params)
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

    def _counted_owner(self, task_id: str) -> str | None:
        """The owner whose counter the task holds one of; None when it holds none."""
        resp = self.client.get_item(
            TableName=self.table,
            Key=self.codec.key(task_id),
            ConsistentRead=True,
            ProjectionExpression="#o, #c",
            ExpressionAttributeNames={"#o": "owner", "#c": COUNTED},
        )
        item = resp.get("Item") or {}
        return item["owner"]["S"] if COUNTED in item and "owner" in item else None

    def _end_counted(
        self,
        task_id: str,
        owner: str,
        values: dict[str, Any],
        condition: str,
        params: dict[str, Any],
    ) -> Task:
        """A counted task's move to a terminal status and its counter's decrement, at once."""
        expression, names, values_ = update_expression(values)
        end = {
            "TableName": self.table,
            "Key": self.codec.key(task_id),
            "UpdateExpression": expression,
            "ConditionExpression": f"attribute_exists(taskId) AND {condition}",
            "ExpressionAttributeNames": {**names, "#st": "status"},
            "ExpressionAttributeValues": {**values_, **params},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        release = {
            "TableName": self.table,
            "Key": self.codec.key(_active_key(owner)),
            "UpdateExpression": "ADD #n :minus",
            "ExpressionAttributeNames": {"#n": ACTIVE},
            "ExpressionAttributeValues": {":minus": {"N": "-1"}},
        }
        for attempt in range(TRANSACTION_ATTEMPTS):
            try:
                self.client.transact_write_items(
                    TransactItems=[{"Update": end}, {"Update": release}]
                )
                return self.get(task_id)
            except ClientError as e:
                reasons = _cancellation(e)
            if reasons is None:
                _backoff(attempt)
                continue
            old = reasons[0].get("Item")
            if not old:
                raise NotFoundError(f"task {task_id} not found")
            raise StaleWriteError(f"task {task_id} is {old.get('status', {}).get('S')}")
        raise StaleWriteError(f"task {task_id} could not be moved: its owner's counter is busy")

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

    def claim_queued(self, task_id: str, change: TaskTransition) -> Task | None:
        if TaskStatus.QUEUED not in change.from_ or change.to.terminal:
            raise ValueError(f"a claim starts a queued task, not {change.from_} -> {change.to}")
        values = self.codec.fields({**change.changes.fields(), "status": change.to})
        values[WAITING_HIGH] = None  # no longer waiting: out of the sparse index
        # a None field is not stored: no dispatchedAt nor lease means control never handed it
        condition = (
            "#st = :queued AND attribute_not_exists(#da) AND attribute_not_exists(#ls)"
            " AND (attribute_not_exists(#cr) OR #cr = :no)"
        )
        params = {":queued": {"S": TaskStatus.QUEUED.value}, ":no": {"BOOL": False}}
        names = {"#da": "dispatchedAt", "#ls": "lease", "#cr": "cancelRequested"}
        try:
            return self._conditional_update(task_id, values, condition, params, names)
        except ClientError as e:
            if error_code(e) == "ConditionalCheckFailedException":
                return None
            raise

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

    def _query_tasks(self, kwargs: dict[str, Any], limit: int) -> list[Task]:
        """Up to `limit` tasks of the query `kwargs`, page after page."""
        out: list[Task] = []
        while len(out) < limit:
            resp = self.client.query(Limit=limit - len(out), **kwargs)
            out.extend(self.codec.record(item) for item in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return out[:limit]

    def list_by_status(self, status: TaskStatus, limit: int = 100) -> list[Task]:
        # The index is eventually consistent: a task that just changed status may show up late.
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": "#st = :s",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {":s": {"S": status.value}},
            "ScanIndexForward": True,
        }
        return self._query_tasks(kwargs, limit)

    def list_created_since(self, status: TaskStatus, since: float, limit: int) -> list[Task]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": STATUS_INDEX,
            "KeyConditionExpression": "#st = :s AND createdAt >= :since",
            "ExpressionAttributeNames": {"#st": "status"},
            "ExpressionAttributeValues": {
                ":s": {"S": status.value},
                ":since": serialize(float(since)),
            },
            "ScanIndexForward": False,
        }
        return self._query_tasks(kwargs, limit)

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
