"""Concurrency slots in DynamoDB: a global and a per-checkpoint cap taken in one transaction."""

from __future__ import annotations

import logging
import random
from typing import Any

from botocore.exceptions import ClientError

from sdcore.adapters.aws.codec import (
    deserialize_item,
    error_code,
    scan,
    serialize,
)
from sdcore.domain.models import (
    Lease,
)
from sdcore.ports import SlotStore

logger = logging.getLogger(__name__)


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
                    plain = deserialize_item(item)
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
                                    "expiresAt": serialize(float(expires)),
                                },
                                "ConditionExpression": self.FREE,
                                "ExpressionAttributeValues": {":now": serialize(float(now))},
                            }
                        }
                        for slot in slots
                    ]
                )
            except ClientError as e:
                if error_code(e) not in ("TransactionCanceledException", "TransactionConflict"):
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
                                ":e": serialize(float(expires_at)),
                                ":t": {"S": lease.task_id},
                            },
                        }
                    }
                    for slot in lease.slots
                ]
            )
        except ClientError as e:
            if error_code(e) in ("TransactionCanceledException", "TransactionConflict"):
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
                if error_code(e) != "ConditionalCheckFailedException":
                    raise  # else: expired and taken by another task since; not ours to free

    def active(self, now: float) -> list[Lease]:
        leases: dict[str, Lease] = {}
        items = scan(
            self.client,
            TableName=self.table,
            ConsistentRead=True,
            FilterExpression="expiresAt > :now",
            ExpressionAttributeValues={":now": serialize(float(now))},
        )
        for raw in items:
            item = deserialize_item(raw)
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
