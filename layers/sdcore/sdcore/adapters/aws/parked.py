"""Parked tasks in DynamoDB: two attributes on the task's own item in the tasks table, and a
sparse index over them.

A parked task carries `parkedIn` (its checkpoint) and `parkedRank` ("<1-priority>#<createdAt,
fixed width>#<taskId>": sorts high priority first, then oldest); the tasks GSI `byParked`
(parkedIn HASH, parkedRank RANGE, keys only) holds only those, so a take reads the head of a
checkpoint's waiters, never the backlog. Parking is one conditional update (the task must be
queued); taking removes the two attributes with the condition that they are still the ones
read, so of two takers of one task one wins and the other moves on. No other table, setting or
permission: every function that reads tasks may park and take (template.yaml)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from botocore.exceptions import ClientError

from sdcore.adapters.aws.codec import error_code
from sdcore.domain.models import TaskStatus
from sdcore.ports import ParkedTask, ParkedTasks

PARKED_INDEX = "byParked"  # tasks GSI: parkedIn HASH, parkedRank RANGE; sparse, keys only
PARKED_IN = "parkedIn"
PARKED_RANK = "parkedRank"
_KEY = ("taskId", PARKED_IN, PARKED_RANK)  # an index entry's key: where a read resumes


def rank(priority: int, created_at: float, task_id: str) -> str:
    """Sorts as (priority descending, created_at, task_id): priority is 0 or 1, epoch seconds
    are positive and fit the fixed width."""
    return f"{1 - priority}#{created_at:020.6f}#{task_id}"


def _parked(item: dict[str, Any]) -> ParkedTask:
    inverse, created, task_id = item[PARKED_RANK]["S"].split("#", 2)
    return ParkedTask(
        task_id=task_id,
        model=item[PARKED_IN]["S"],
        priority=1 - int(inverse),
        created_at=float(created),
    )


class DynamoDBParkedTasks(ParkedTasks):
    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def park(self, task_id: str, model: str, priority: int, created_at: float) -> bool:
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"taskId": {"S": task_id}},
                UpdateExpression="SET #in = :m, #rank = :r",
                ConditionExpression="#s = :queued",
                ExpressionAttributeNames={"#in": PARKED_IN, "#rank": PARKED_RANK, "#s": "status"},
                ExpressionAttributeValues={
                    ":m": {"S": model},
                    ":r": {"S": rank(priority, created_at, task_id)},
                    ":queued": {"S": TaskStatus.QUEUED.value},
                },
            )
        except ClientError as e:
            if error_code(e) != "ConditionalCheckFailedException":
                raise
            return False  # no such task, or no longer queued
        return True

    def take(self, count: int, models: Collection[str]) -> list[ParkedTask]:
        taken: list[ParkedTask] = []
        # per checkpoint, the last entry tried: the next read starts after it, so entries lost
        # to another taker (or still in the eventually consistent index) are read once
        after: dict[str, dict[str, Any] | None] = dict.fromkeys(set(models))
        while len(taken) < count and after:
            need = count - len(taken)
            heads: list[dict[str, Any]] = []
            for model in list(after):
                items = self._head(model, need, after[model])
                if not items:
                    del after[model]  # nothing more parked there
                heads += items
            for item in sorted(heads, key=lambda i: i[PARKED_RANK]["S"])[:need]:
                after[item[PARKED_IN]["S"]] = {k: item[k] for k in _KEY}
                task = self._remove(item)
                if task is not None:
                    taken.append(task)
        return taken

    def _head(self, model: str, limit: int, start: dict[str, Any] | None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": PARKED_INDEX,
            "KeyConditionExpression": "#in = :m",
            "ExpressionAttributeNames": {"#in": PARKED_IN},
            "ExpressionAttributeValues": {":m": {"S": model}},
            "Limit": limit,
        }
        if start is not None:
            kwargs["ExclusiveStartKey"] = start
        items: list[dict[str, Any]] = self.client.query(**kwargs).get("Items", [])
        return items

    def _remove(self, item: dict[str, Any]) -> ParkedTask | None:
        """Unpark the entry if it is still parked as read: the task, or None (another taker
        won, or it ended while parked: then it is dropped)."""
        try:
            old = self.client.update_item(
                TableName=self.table,
                Key={"taskId": item["taskId"]},
                UpdateExpression="REMOVE #in, #rank",
                ConditionExpression="#rank = :r",
                ExpressionAttributeNames={"#in": PARKED_IN, "#rank": PARKED_RANK},
                ExpressionAttributeValues={":r": item[PARKED_RANK]},
                ReturnValues="ALL_OLD",
            )["Attributes"]
        except ClientError as e:
            if error_code(e) != "ConditionalCheckFailedException":
                raise
            return None
        if old.get("status", {}).get("S") != TaskStatus.QUEUED.value:
            return None
        return _parked(item)

    def count(self) -> int:
        total = 0
        pages = self.client.get_paginator("scan").paginate(
            TableName=self.table, IndexName=PARKED_INDEX, Select="COUNT"
        )
        for page in pages:
            total += int(page.get("Count", 0))
        return total
