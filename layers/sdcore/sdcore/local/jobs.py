"""The local counterpart of the admin function's job queue event source: feeds the model-job
queue (SQLite) to the admin function as SQS batches, one job at a time, deleting what it
finished. A job that raised is redelivered (three times, then dead-lettered; the control
schedule's sweep then records the version as failed).

The stack runs one job loop, so a message's visibility timeout only decides how soon a job cut
short by a stack restart is delivered again (jobs are safe to repeat): a minute, not the hour
a multi-GB verification may take."""

from __future__ import annotations

import logging
import threading
from typing import Any

from sdcore.local.stack import _sqs_event as sqs_event

log = logging.getLogger("sdcore.jobs")


class JobLoop(threading.Thread):
    def __init__(self, svc: Any, idle_wait_s: float = 0.05, visibility_s: float = 60.0) -> None:
        super().__init__(name="model-jobs", daemon=True)
        # Imported here, in the constructing thread: two threads importing Powertools at once
        # (this one and the control loop) can trip over its partly initialised modules.
        from admin_function.app import lambda_handler

        self.handler = lambda_handler
        self.svc = svc
        self.idle_wait_s = idle_wait_s
        self.visibility_s = visibility_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        from sdcore.local.context import LocalContext

        queue = self.svc.jobs
        while not self.stop_event.is_set():
            try:
                messages = queue.receive(1, visibility_s=self.visibility_s)
                if not messages:
                    self.stop_event.wait(self.idle_wait_s)
                    continue
                result = self.handler(sqs_event(messages, "model-jobs"), LocalContext("admin"))
                failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
                for message in messages:
                    if message.message_id in failed:  # let it come back soon
                        queue.change_visibility(message.receipt, 5)
                    else:
                        queue.delete(message.receipt)
            except Exception:
                log.exception("model job loop error")
                self.stop_event.wait(1)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)
