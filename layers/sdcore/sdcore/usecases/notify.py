"""Webhooks: when a task ends, POST its result to the URL the client gave, signed, retried."""

from __future__ import annotations

import json
import logging

from sdcore.domain.models import Task
from sdcore.errors import NotFoundError
from sdcore.services import Services

log = logging.getLogger(__name__)


def task_ended(svc: Services, task: Task) -> None:
    """Call after any transition into a terminal state: queues the webhook delivery, if any.
    Delivery runs in control, off the path that ended the task."""
    if task.webhook and task.status.terminal:
        svc.queue.send({"webhook": task.task_id, "attempt": 1})


def deliver_webhook(svc: Services, task_id: str, attempt: int) -> str:
    """One delivery attempt; on failure a later one is queued with backoff. Returns what
    happened: delivered, retrying, gave-up or dropped."""
    from sdcore.api.views import task_result
    from sdcore.webhooks import MAX_ATTEMPTS, WebhookError, backoff_s, deliver

    try:
        task = svc.tasks.get(task_id)
        secret = svc.users.get(task.owner).webhook_secret
    except NotFoundError:
        return "dropped"
    if not task.webhook:
        return "dropped"
    payload = json.loads(json.dumps(task_result(svc, task)))
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
