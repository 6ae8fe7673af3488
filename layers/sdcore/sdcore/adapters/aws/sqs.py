"""SQS adapter of the queue port. The dead-letter redrive is the queue's own (template.yaml)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from botocore.exceptions import ClientError

from sdcore.ports import Message, Queue

logger = logging.getLogger(__name__)

MAX_DELAY_S = 900  # SQS's limit on DelaySeconds
MAX_VISIBILITY_S = 43200  # and on VisibilityTimeout
MAX_BATCH = 10  # and on one ReceiveMessage
# A receipt that is stale or a message no longer in flight: the local queue ignores these too.
_GONE = {
    "ReceiptHandleIsInvalid",
    "MessageNotInflight",
    "AWS.SimpleQueueService.MessageNotInflight",
}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _seconds(value: float, limit: int) -> int:
    """SQS takes whole seconds: round up (never earlier than asked), capped at the limit."""
    return max(0, min(limit, math.ceil(value)))


class SqsQueue(Queue):
    def __init__(self, client: Any, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    def send(self, body: dict[str, Any], delay_s: float = 0, priority: int = 0) -> str:
        # SQS cannot order by it: the attribute is for whoever reads the queue (logs, consoles);
        # control's dispatch rule is what runs high-priority tasks first (usecases/control.py).
        attributes = {"priority": {"DataType": "Number", "StringValue": str(priority)}}
        resp = self.client.send_message(
            QueueUrl=self.queue_url,
            MessageBody=json.dumps(body),
            DelaySeconds=_seconds(delay_s, MAX_DELAY_S),
            MessageAttributes=attributes,
        )
        return str(resp["MessageId"])

    def receive(self, max_messages: int = 10, visibility_s: float = 30) -> list[Message]:
        out: list[Message] = []
        while len(out) < max_messages:
            want = min(MAX_BATCH, max_messages - len(out))
            resp = self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=want,
                VisibilityTimeout=_seconds(visibility_s, MAX_VISIBILITY_S),
                WaitTimeSeconds=0,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            batch = resp.get("Messages", [])
            out.extend(self._message(m) for m in batch)
            if len(batch) < want:
                break
        return out

    @staticmethod
    def _message(raw: dict[str, Any]) -> Message:
        try:
            body = json.loads(raw["Body"])
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # Not one of ours: hand it on wrapped, so the consumer can fail it into the DLQ
            # instead of this adapter failing the whole batch.
            logger.warning("message %s has a body that is not a JSON object", raw["MessageId"])
            body = {"raw": raw["Body"]}
        count = int(raw.get("Attributes", {}).get("ApproximateReceiveCount", 1))
        return Message(
            message_id=raw["MessageId"],
            receipt=raw["ReceiptHandle"],
            body=body,
            receive_count=count,
        )

    def delete(self, receipt: str) -> None:
        try:
            self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=receipt)
        except ClientError as e:
            if _code(e) not in _GONE:
                raise

    def change_visibility(self, receipt: str, visibility_s: float) -> None:
        try:
            self.client.change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=receipt,
                VisibilityTimeout=_seconds(visibility_s, MAX_VISIBILITY_S),
            )
        except ClientError as e:
            if _code(e) not in _GONE:
                raise
