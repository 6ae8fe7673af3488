"""Control: route each queued task to its checkpoint's function within the caps, and end tasks
whose worker was lost."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from sdcore.domain.models import Lease, Task, TaskStatus
from sdcore.errors import NotFoundError, StaleWriteError
from sdcore.services import Services
from sdcore.usecases.notify import end_task, task_ended

# waiting tasks woken when a slot frees: a few, since the first may be over its checkpoint's cap
WAKE_ON_RELEASE = 4

log = logging.getLogger(__name__)

# A high-priority task queued longer than this no longer holds normal tasks back: bounds how
# long normal work can starve, and a high task stuck in the queue cannot block it forever.
HIGH_PRIORITY_HOLD_S = 900.0


class Outcome(StrEnum):
    DISPATCHED = "dispatched"
    WAITING = "waiting"  # over a cap, or the function is not ready: re-queued with a delay
    ENDED = "ended"  # nothing to do: finished, cancelled, failed or already running


def _wait(svc: Services, task: Task, waits: int) -> Outcome:
    """Back in the queue, after a delay that doubles with each wait up to a ceiling: many waiting
    tasks then cost a few queue operations a second, not a busy loop."""
    settings = svc.settings
    delay = min(settings.requeue_delay_s * 2 ** min(waits, 16), settings.requeue_max_delay_s)
    svc.queue.send(
        {"taskId": task.task_id, "waits": waits + 1}, delay_s=delay, priority=task.priority
    )
    return Outcome.WAITING


def dispatch_task(svc: Services, task_id: str, waits: int = 0) -> Outcome:
    """Hand one queued task to the inference function of its checkpoint, if the caps allow.

    Over a cap the task is re-queued with a delay (never dropped, never failed). Safe under
    at-least-once delivery: only the holder of a slot lease can start the task, and the task's
    own queued->running transition is conditional.

    Priorities: a normal task (priority 0) does not take a slot while a high-priority task
    (priority 1) of any checkpoint is queued (created in the last HIGH_PRIORITY_HOLD_S); it waits
    like a task over a cap. So when a slot frees, only a high task can take it, whatever order
    the queue delivers in: SQS has no priorities, the local queue merely delivers high first.
    A high task never waits for normal ones, and no loop spins: waiting is the usual delayed
    re-queue. A dispatched high task counts as waiting until its worker starts it (a cold start
    at most), so normal tasks may wait that long too.
    """
    svc.tracing.about(task_id)
    try:
        task = svc.tasks.get(task_id)
    except NotFoundError:
        log.warning("message for unknown task %s dropped", task_id)
        return Outcome.ENDED
    svc.tracing.about(task_id, task.model)
    if task.status is not TaskStatus.QUEUED:
        return Outcome.ENDED
    if task.cancel_requested:
        end_task(svc, task_id, task.cancel(svc.clock.now()))
        return Outcome.ENDED
    try:
        model = svc.models.get(task.model)
    except NotFoundError:
        end_task(svc, task_id, task.fail(f"model {task.model} was deleted", svc.clock.now()))
        return Outcome.ENDED
    if not model.usable:
        reason = f"model {task.model} is not ready: {model.error or model.status.value}"
        end_task(svc, task_id, task.fail(reason, svc.clock.now()))
        return Outcome.ENDED

    settings = svc.settings
    if task.priority == 0 and svc.tasks.count_waiting_high(svc.clock.now() - HIGH_PRIORITY_HOLD_S):
        return _wait(svc, task, waits)
    lease = svc.slots.acquire(
        task_id,
        task.model,
        svc.clock.now(),
        settings.lease_s,
        settings.max_concurrency,
        # a SageMaker endpoint runs as many as its instances can; a Lambda function one
        svc.fleet.capacity(task.model) or settings.max_per_model,
    )
    if lease is None:
        if waits == 0:
            # start (create) the checkpoint's function now, once per task, so that its cold
            # start overlaps the wait for a slot instead of following it
            svc.fleet.ensure(model)
        return _wait(svc, task, waits)
    try:
        record = svc.fleet.ensure(model)
        if record.status != "active":
            svc.slots.release(lease)
            return _wait(svc, task, waits)
        # recorded first: an invocation that never starts the task is then ended by the reaper
        if not svc.tasks.update_while(
            task_id, TaskStatus.QUEUED, task.dispatched(svc.clock.now(), lease)
        ):
            svc.slots.release(lease)  # cancelled or ended meanwhile
            return Outcome.ENDED
        svc.fleet.invoke(record, {"taskId": task_id, "lease": lease.model_dump()})
    except BaseException:
        svc.slots.release(lease)
        raise
    return Outcome.DISPATCHED


def reap_lost(svc: Services) -> list[str]:
    """End or retry running tasks whose heartbeat stopped (their worker died), and end tasks
    dispatched but never started within SD_START_TIMEOUT (their worker died while loading, or
    the invocation was lost). Returns the ids reaped.

    A running task that has run fewer than SD_MAX_ATTEMPTS times goes back to `queued`
    (conditional running->queued, its run's fields cleared) and is queued for control again;
    any other ends as `failed: worker lost`. Either way the slots it held come back.
    """
    return _reap_running(svc) + _reap_never_started(svc)


def _release(svc: Services, task: Task) -> None:
    if task.lease is not None:  # its worker will never release them
        svc.slots.release(task.lease)
        svc.queue.wake(WAKE_ON_RELEASE)  # a waiting task gets the freed slot now


def _reap_never_started(svc: Services) -> list[str]:
    """A dispatched task waits for its worker to start it up to its fleet's bound (a SageMaker
    endpoint waking from zero takes minutes): meanwhile its slots stay held (the lease is
    renewed), after it the task fails."""
    now = svc.clock.now()
    bounds: dict[str, float] = {}
    reaped = []
    for task in svc.tasks.list_by_status(TaskStatus.QUEUED, limit=500):
        if task.dispatched_at is None:
            continue
        if task.model not in bounds:
            bounds[task.model] = (
                svc.fleet.start_timeout_s(task.model) or svc.settings.start_timeout_s
            )
        bound = bounds[task.model]
        if task.dispatched_at >= now - bound:
            if task.lease is not None:  # keeps its place: the slots are not given away
                svc.slots.renew(task.lease, now + svc.settings.lease_s)
            continue
        if end_task(svc, task.task_id, task.never_started(now, bound)) is None:
            continue  # it started (or ended) meanwhile
        log.warning("task %s was dispatched but never started; failed", task.task_id)
        _release(svc, task)
        reaped.append(task.task_id)
    return reaped


def _reap_running(svc: Services) -> list[str]:
    cutoff = svc.clock.now() - svc.settings.heartbeat_stale_s
    reaped = []
    for task in svc.tasks.list_by_status(TaskStatus.RUNNING, limit=500):
        beat = task.heartbeat_at or task.started_at or task.created_at
        if beat < cutoff and _lose(svc, task):
            reaped.append(task.task_id)
    return reaped


def _lose(svc: Services, task: Task) -> bool:
    """A running task whose worker is gone: back to the queue while it has attempts left
    (SD_MAX_ATTEMPTS), else `failed: worker lost`; its slots come back. False if it was no
    longer running."""
    runs = max(task.attempts, 1)  # a running task has started at least once
    retry = runs < svc.settings.max_attempts
    change = task.requeue(f"worker lost (attempt {runs})") if retry else task.lose(svc.clock.now())
    try:
        moved = svc.tasks.transition(task.task_id, change)
    except StaleWriteError:
        return False
    _release(svc, task)
    if retry:
        log.warning("task %s lost its worker; retrying", task.task_id)
        svc.queue.send({"taskId": task.task_id}, priority=task.priority)
    else:
        task_ended(svc, moved)
    return True


def worker_gone(svc: Services, held: list[dict[str, Any]]) -> list[str]:
    """The invocations a worker held when it was seen to exit (a local worker process, whose
    parent learns of its death at once, where elsewhere only the stopped heartbeat tells). A
    task it was running is lost as the reaper loses it (retried or `failed: worker lost`, its
    slots back); one it had not started yet (it died loading the model) is handed to its
    function again, within the start timeout the reaper keeps. Returns the ids lost."""
    lost = []
    for payload in held:
        try:
            task = svc.tasks.get(str(payload.get("taskId")))
        except NotFoundError:
            continue
        if task.status is TaskStatus.RUNNING:
            if _lose(svc, task):
                lost.append(task.task_id)
        elif task.status is TaskStatus.QUEUED and task.dispatched_at is not None:
            try:
                model = svc.models.get(task.model)
            except NotFoundError:
                continue  # the reaper ends it when its start timeout passes
            svc.fleet.invoke(svc.fleet.ensure(model), payload)
    return lost


def _abort(svc: Services, task_id: str, lease: Lease | None, reason: str) -> str:
    """End a queued or running task whose function failed outside the task's code, and give
    back the slots it held. Returns "failed", or "ended" when it had ended already."""
    try:
        task = svc.tasks.get(task_id)
    except NotFoundError:
        return "dropped"
    ended = end_task(svc, task_id, task.abort(reason, svc.clock.now()))
    held = lease or task.lease
    if ended is not None and held is not None:
        svc.slots.release(held)
        svc.queue.wake(WAKE_ON_RELEASE)
    if ended is not None:
        log.warning("task %s failed: %s", task_id, reason)
    return "failed" if ended is not None else "ended"


def end_failed_invocation(svc: Services, record: dict[str, Any]) -> str:
    """An asynchronous invocation of an inference function that failed (Lambda's on-failure
    destination record: the function was killed, timed out, or raised): its task ends failed
    with the reason. Returns what happened: failed, ended (already over) or dropped."""
    payload = record.get("requestPayload") or {}
    task_id = payload.get("taskId") if isinstance(payload, dict) else None
    if not task_id:
        return "dropped"
    lease = Lease.model_validate(payload["lease"]) if payload.get("lease") else None
    response = record.get("responsePayload") or {}
    condition = (record.get("requestContext") or {}).get("condition", "failed")
    if isinstance(response, dict) and (response.get("errorType") or response.get("errorMessage")):
        what = f"{response.get('errorType', 'Error')}: {response.get('errorMessage', '')}"
    else:
        what = str(condition)
    return _abort(svc, str(task_id), lease, f"the inference function failed: {what}")


def end_dead_lettered(svc: Services, body: dict[str, Any], receives: int) -> str:
    """A message that failed repeatedly and was dead-lettered: the task it was about ends
    failed with the reason (a webhook delivery is dropped; a model job is handled by
    `model_jobs.job_dead_lettered`). Returns what happened."""
    if "webhook" in body:
        log.warning("webhook of task %s dead-lettered after %d tries", body["webhook"], receives)
        return "dropped"
    if "taskId" in body:
        reason = f"control could not hand the task to a function ({receives} tries failed)"
        return _abort(svc, str(body["taskId"]), None, reason)
    log.warning("dead letter of unknown shape dropped: %s", sorted(body))
    return "dropped"


def end_endpoint_invocation(svc: Services, notification: dict[str, Any]) -> str:
    """A SageMaker asynchronous endpoint's report of one invocation (its SNS success or error
    topic). A failed invocation ends its task failed with SageMaker's reason; one that ended
    without the task ending (the container answered, the task is still queued) too. Returns
    what happened: failed, ended (already over, or running: the heartbeat reaper watches it),
    or dropped (no task named)."""
    task_id = notification.get("inferenceId")
    if not task_id:
        return "dropped"
    status = str(notification.get("invocationStatus", ""))
    if status != "Completed":
        reason = notification.get("failureReason") or status or "failed"
        return _abort(svc, str(task_id), None, f"the inference endpoint failed: {reason}")
    try:
        task = svc.tasks.get(str(task_id))
    except NotFoundError:
        return "dropped"
    if task.status is TaskStatus.QUEUED and task.dispatched_at is not None:
        reason = "the inference endpoint answered without starting the task"
        return _abort(svc, task.task_id, None, reason)
    return "ended"
