"""A task's end and what follows it: the transition into a terminal state, then the webhook the
client asked for (queued here, delivered by control: signed, retried with back-off)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from sdcore.domain.models import Task, TaskTransition
from sdcore.errors import NotFoundError, StaleWriteError
from sdcore.metric_names import WEBHOOK_DELIVERIES
from sdcore.services import Services
from sdcore.usecases.measure import record_end
from sdcore.webhooks import MAX_ATTEMPTS, WebhookError, backoff_s, deliver

log = logging.getLogger(__name__)

# the body a webhook delivers for a task: the API's task result (its edge vocabulary)
Render = Callable[[Task], dict[str, Any]]


def end_task(svc: Services, task_id: str, change: TaskTransition) -> Task | None:
    """Apply `change` (into a terminal state) and queue the task's webhook, if any.

    Returns the ended task, or None when the task was no longer in one of `change.from_`
    (someone else moved it first: that writer notifies). Raises NotFoundError.
    """
    try:
        task = svc.tasks.transition(task_id, change)
    except StaleWriteError:
        return None
    task_ended(svc, task)
    return task


def task_ended(svc: Services, task: Task) -> None:
    """Call after any transition into a terminal state: queues the webhook delivery, if any.
    Delivery runs in control, off the path that ended the task. Records the end's metrics."""
    record_end(svc, task)
    if task.webhook and task.status.terminal:
        svc.queue.send({"webhook": task.task_id, "attempt": 1})


def deliver_webhook(svc: Services, task_id: str, attempt: int, render: Render) -> str:
    """One delivery attempt of the body `render` makes; on failure a later one is queued with
    backoff. Returns what happened: delivered, retrying, gave-up or dropped."""
    outcome = _deliver(svc, task_id, attempt, render)
    svc.metrics.count(WEBHOOK_DELIVERIES, outcome=outcome.replace("-", "_"))
    return outcome


def _deliver(svc: Services, task_id: str, attempt: int, render: Render) -> str:
    try:
        task = svc.tasks.get(task_id)
        secret = svc.users.get(task.owner).webhook_secret
    except NotFoundError:
        return "dropped"
    if not task.webhook:
        return "dropped"
    payload = json.loads(json.dumps(render(task)))
    try:
        deliver(
            task.webhook,
            payload,
            secret.encode(),
            allow_private=svc.settings.allow_private_urls,
            timeout_s=10.0,
            attempt=attempt,
        )
        return "delivered"
    except WebhookError as exc:
        if attempt >= MAX_ATTEMPTS:
            log.warning("webhook of task %s failed %d times: %s", task_id, attempt, exc)
            return "gave-up"
        svc.queue.send({"webhook": task_id, "attempt": attempt + 1}, delay_s=backoff_s(attempt))
        return "retrying"
