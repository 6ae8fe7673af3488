"""Control: route each queued task to its checkpoint's function within the caps, and end tasks
whose worker was lost."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from sdcore.domain.models import Lease, ModelType, Task, TaskStatus
from sdcore.errors import NotFoundError, StaleWriteError
from sdcore.ports import ParkedTask
from sdcore.services import Services
from sdcore.usecases.notify import end_task, task_ended

# without a parked store: delayed messages made visible when a slot frees, a few, since the
# first may be over its checkpoint's cap
WAKE_ON_RELEASE = 4
# parked tasks of a checkpoint that can no longer run woken per schedule run (each ends at once)
UNPARK_BATCH = 100

log = logging.getLogger(__name__)

# A high-priority task queued longer than this no longer holds normal tasks back: bounds how
# long normal work can starve, and a high task stuck in the queue cannot block it forever.
HIGH_PRIORITY_HOLD_S = 900.0


class Outcome(StrEnum):
    DISPATCHED = "dispatched"
    # the function is not ready, or a high-priority task waits (or, without a parked store,
    # over a cap): re-queued with a delay
    WAITING = "waiting"
    PARKED = "parked"  # over a cap: parked, its message deleted, until a slot of its kind frees
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


def _model_cap(svc: Services, model: str) -> int:
    # a SageMaker endpoint runs as many as its instances can; a Lambda function one
    return svc.fleet.capacity(model) or svc.settings.max_per_model


def _acquire(svc: Services, task: Task) -> Lease | None:
    settings = svc.settings
    return svc.slots.acquire(
        task.task_id,
        task.model,
        svc.clock.now(),
        settings.lease_s,
        settings.max_concurrency,
        _model_cap(svc, task.model),
    )


def _ended(svc: Services, task: Task, waits: int) -> Outcome:
    """Nothing to dispatch. A message that may be a wake (a parked task handed a freed slot,
    which it will not use now) passes the wake on, so the slot does not idle."""
    if waits and svc.parked is not None:
        slot_freed(svc, task.model)
    return Outcome.ENDED


def dispatch_task(svc: Services, task_id: str, waits: int = 0) -> Outcome:
    """Hand one queued task to the inference function of its checkpoint, if the caps allow.

    Over a cap the task is parked (one write) and its message deleted: a released slot of its
    kind wakes it (`slot_freed`), so a waiting task costs nothing while it waits (never
    dropped, never failed). Safe under at-least-once delivery: only the holder of a slot lease
    can start the task, and the task's own queued->running transition is conditional.

    Priorities: a normal task (priority 0) does not take a slot while a high-priority task
    (priority 1) of any checkpoint is queued (created in the last HIGH_PRIORITY_HOLD_S); it waits
    like a task over a cap. So when a slot frees, only a high task can take it, whatever order
    the queue delivers in: SQS has no priorities, the local queue merely delivers high first.
    A high task never waits for normal ones, and no loop spins: a normal task held back for a
    high one, and a task whose function is not ready yet, wait out a delayed re-queue (both
    end on their own, with no event to wake them: a start, a cold start). A dispatched high
    task counts as waiting until its worker starts it, so normal tasks may wait that long too.
    """
    svc.tracing.about(task_id)
    try:
        task = svc.tasks.get(task_id)
    except NotFoundError:
        log.warning("message for unknown task %s dropped", task_id)
        return Outcome.ENDED
    svc.tracing.about(task_id, task.model)
    if task.status is not TaskStatus.QUEUED:
        return _ended(svc, task, waits)
    if task.cancel_requested:
        end_task(svc, task_id, task.cancel(svc.clock.now()))
        return _ended(svc, task, waits)
    try:
        model = svc.models.get(task.model)
    except NotFoundError:
        end_task(svc, task_id, task.fail(f"model {task.model} was deleted", svc.clock.now()))
        return _ended(svc, task, waits)
    if not model.usable:
        reason = f"model {task.model} is not ready: {model.error or model.status.value}"
        end_task(svc, task_id, task.fail(reason, svc.clock.now()))
        return _ended(svc, task, waits)

    if task.priority == 0 and svc.tasks.count_waiting_high(svc.clock.now() - HIGH_PRIORITY_HOLD_S):
        return _wait(svc, task, waits)
    lease = _acquire(svc, task)
    if lease is None:
        if waits == 0:
            # start (create) the checkpoint's function now, once per task, so that its cold
            # start overlaps the wait for a slot instead of following it
            svc.fleet.ensure(model)
        return _park(svc, task, waits)
    try:
        record = svc.fleet.ensure(model)
        if record.status != "active":
            # no wake: a parked task of this checkpoint would find it not ready either, and
            # the next would be woken in turn; this task takes the slot again after its delay
            svc.slots.release(lease)
            return _wait(svc, task, waits)
        # recorded first: an invocation that never starts the task is then ended by the reaper
        if not svc.tasks.update_while(
            task_id, TaskStatus.QUEUED, task.dispatched(svc.clock.now(), lease)
        ):
            _release_lease(svc, lease)  # cancelled or ended meanwhile
            return Outcome.ENDED
        svc.fleet.invoke(record, {"taskId": task_id, "lease": lease.model_dump()})
    except BaseException:
        _release_lease(svc, lease)
        raise
    return Outcome.DISPATCHED


def _park(svc: Services, task: Task, waits: int) -> Outcome:
    """Over a cap: park the task until a slot of its kind frees."""
    if svc.parked is None:
        return _wait(svc, task, waits)
    if task.dispatched_at is not None:
        return Outcome.ENDED  # a duplicate message: its function has the task already
    if not svc.parked.park(task.task_id, task.model, task.priority, task.created_at):
        return Outcome.ENDED  # it ended meanwhile
    # A slot released between the acquire and the park found no one parked to wake: look once
    # more. Whichever comes second, this look or the release's wake, sees the other's write.
    lease = _acquire(svc, task)
    if lease is not None:
        _release_lease(svc, lease)  # to the first parked task of the checkpoint: this or older
    return Outcome.PARKED


def _release_lease(svc: Services, lease: Lease) -> None:
    svc.slots.release(lease)
    slot_freed(svc, lease.model)


def _send(svc: Services, woken: Iterable[ParkedTask]) -> int:
    sent = 0
    for task in woken:
        # waits=1: its function was started when it first waited
        svc.queue.send({"taskId": task.task_id, "waits": 1}, priority=task.priority)
        sent += 1
    return sent


def slot_freed(svc: Services, model: str) -> int:
    """A slot of `model`, and with it a global one, was released: hand it to a parked task,
    the first of `model` (highest priority, then oldest), else the first of a checkpoint with
    room under its own cap (one that waits on the global cap). Its queue message is sent again;
    control dispatches it. Returns how many were woken.

    Every releaser calls it (control, and the inference function when a task ends). Without a
    parked store, the queue's delayed messages are made visible instead (tasks in a back-off).
    """
    if svc.parked is None:
        return svc.queue.wake(WAKE_ON_RELEASE)
    woken = _send(svc, svc.parked.take(1, [model]))
    return woken or wake_parked(svc, limit=1)


def wake_parked(svc: Services, limit: int | None = None) -> int:
    """Hand the slots free now (at most `limit`) to parked tasks, each to the first parked
    task of a checkpoint with room under its own cap; and wake the parked tasks of a checkpoint
    that can no longer run (they end at dispatch). Returns how many were woken.

    The schedule runs it as the safety net of `slot_freed`: a wake lost (a releaser that died
    between its release and its wake, an index read before a park reached it) costs a wait
    until the next run, never a stranded task. Reads the slots held and the models, and one
    parked head per checkpoint per slot handed: nothing grows with the backlog.
    """
    parked = svc.parked
    if parked is None:
        return 0
    held = svc.slots.active(svc.clock.now())
    free = svc.settings.max_concurrency - len(held)
    if limit is not None:
        free = min(free, limit)
        if free <= 0:
            return 0  # taken already
    per_model = Counter(lease.model for lease in held)
    room: dict[str, int] = {}
    woken = 0
    for model in svc.models.list():
        if model.type is not ModelType.CHECKPOINT:
            continue
        if not model.usable:
            if limit is None:
                woken += _send(svc, parked.take(UNPARK_BATCH, [model.name]))
            continue
        # one slot to hand: a checkpoint holding none has room (a cap is at least 1) unread
        unread = free == 1 and not per_model[model.name]
        left = 1 if unread else _model_cap(svc, model.name) - per_model[model.name]
        if left > 0:
            room[model.name] = left
    while free > 0 and room:
        taken = parked.take(1, list(room))
        if not taken:
            break
        woken += _send(svc, taken)
        free -= 1
        room[taken[0].model] -= 1
        if room[taken[0].model] == 0:
            del room[taken[0].model]
    return woken


def unpark_model(svc: Services, model: str) -> int:
    """Wake every parked task of `model` (deleted, or no longer usable): each ends at dispatch
    with the reason. Returns how many."""
    if svc.parked is None:
        return 0
    woken = 0
    while taken := svc.parked.take(UNPARK_BATCH, [model]):
        woken += _send(svc, taken)
    return woken


def reap_lost(svc: Services) -> list[str]:
    """End or retry running tasks whose heartbeat stopped (their worker died), and end tasks
    dispatched but never started within SD_START_TIMEOUT (their worker died while loading, or
    the invocation was lost). Returns the ids reaped.

    A running task that has run fewer than SD_MAX_ATTEMPTS times goes back to `queued`
    (conditional running->queued, its run's fields cleared) and is queued for control again;
    any other ends as `failed: worker lost`. Either way the slots it held come back.

    Then free slots go to parked tasks (`wake_parked`: the safety net of the wakes).
    """
    reaped = _reap_running(svc) + _reap_never_started(svc)
    wake_parked(svc)
    return reaped


def _release(svc: Services, task: Task) -> None:
    if task.lease is not None:  # its worker will never release them
        _release_lease(svc, task.lease)  # a waiting task gets the freed slot now


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
        _release_lease(svc, held)
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
