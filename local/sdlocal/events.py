"""The local counterpart of an SQS event source mapping: a thread that feeds a queue to a
function as SQS batches, deletes the messages the function succeeded on, and lets the failures
come back (after `retry_after_s`, or when their visibility timeout ends). `tick`, if given, runs
every `tick_every_s` between batches (control's schedule)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sdcore.adapters.local.queue import SqliteQueue
from sdcore.adapters.local.runtime import LocalContext
from sdcore.ports import Message

log = logging.getLogger("sdlocal.events")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def sqs_event(messages: list[Message], queue_name: str) -> dict[str, Any]:
    """The event Lambda gets from an SQS event source mapping."""
    return {
        "Records": [
            {
                "messageId": m.message_id,
                "receiptHandle": m.receipt,
                "body": json.dumps(m.body),
                "attributes": {"ApproximateReceiveCount": str(m.receive_count)},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:local:000000000000:{queue_name}",
                "awsRegion": "local",
            }
            for m in messages
        ]
    }


class EventSource(threading.Thread):
    """`queue` -> `handler` (a function's lambda_handler, imported by the caller: two threads
    importing Powertools at once can trip over its partly initialised modules)."""

    def __init__(
        self,
        name: str,
        queue: SqliteQueue,
        handler: Handler,
        *,
        function: str,
        batch_size: int = 10,
        visibility_s: float = 60.0,
        retry_after_s: float | None = None,
        idle_wait_s: float = 0.25,
        tick: Callable[[], None] | None = None,
        tick_every_s: float = 5.0,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.queue, self.handler, self.function = queue, handler, function
        self.batch_size, self.visibility_s = batch_size, visibility_s
        self.retry_after_s, self.idle_wait_s = retry_after_s, idle_wait_s
        self.tick, self.tick_every_s = tick, tick_every_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        next_tick = 0.0
        # woken by a message sent (or woken) on the queue; `idle_wait_s` is only the fallback
        # for messages whose delay ends (back-offs) and for a ring that was lost
        with self.queue.listener() as bell:
            while not self.stop_event.is_set():
                try:
                    if self.tick is not None and time.monotonic() >= next_tick:
                        next_tick = time.monotonic() + self.tick_every_s
                        self.tick()
                    messages = self.queue.receive(self.batch_size, visibility_s=self.visibility_s)
                    if not messages:
                        bell.wait(self.idle_wait_s)
                        continue
                    self._deliver(messages)
                except Exception:
                    log.exception("%s loop error", self.name)
                    self.stop_event.wait(1)

    def _deliver(self, messages: list[Message]) -> None:
        event = sqs_event(messages, self.name)
        result = self.handler(event, LocalContext(function_name=self.function))
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        for message in messages:
            if message.message_id not in failed:
                self.queue.delete(message.receipt)
            elif self.retry_after_s is not None:  # let it come back soon
                self.queue.change_visibility(message.receipt, self.retry_after_s)

    def stop(self, timeout: float = 10) -> None:
        self.stop_event.set()
        self.queue.ring()  # out of its wait now
        self.join(timeout=timeout)
