"""Dynamic batching, the worker's side: a worker that has started a task takes along queued
tasks of the same checkpoint that can share its pipeline call (riders), so that one slot runs
several tasks at once (SD_MAX_BATCH images in all). Which tasks fit together is
`sdcore.webui.batching.batch_key`; running them is `sdcore.usecases.inference`."""

from __future__ import annotations

import logging
from typing import Any

from sdcore.domain.models import Task, TaskStatus
from sdcore.errors import NotFoundError
from sdcore.services import Services
from sdcore.webui.batching import batch_key
from sdcore.webui.work import task_work

log = logging.getLogger(__name__)

# Most queued tasks read when looking for riders, oldest first: one bounded read per batch,
# however long the backlog (a compatible task further back waits for its own slot).
RIDER_SCAN = 200


def batch_record(leader: Task, riders: list[Task]) -> dict[str, Any]:
    """What every task of a batch records in `info["batch"]`: the batch's id (its leader's
    task id) and its tasks, leader first."""
    return {"id": leader.task_id, "tasks": [leader.task_id, *(t.task_id for t in riders)]}


def claim_riders(svc: Services, leader: Task) -> list[Task]:
    """Claim queued tasks to run in one pipeline call with `leader` (already running), and
    return them started (running, holding no lease: the leader's lease is the batch's one slot).

    A rider is a queued task of the leader's checkpoint with the leader's `batch_key`, that
    control has not handed to a function (no lease recorded) and nobody asked to cancel; high
    priority first, then oldest. The batch stays within SD_MAX_BATCH images and within the work
    budget one task of the checkpoint's fleet may run (SD_MAX_TASK_WORK or the fleet's own), so
    a batch cannot outlive its function. Each claim is atomic (`TaskStore.claim_queued`): a task
    control dispatches meanwhile, or another worker claims, is skipped. None when batching is
    off (SD_MAX_BATCH 1) or the leader always runs alone.
    """
    limit = svc.settings.max_batch
    key = batch_key(leader.params)
    images = leader.params.image_count
    if limit <= 1 or key is None or images >= limit:
        return []
    try:
        model = svc.models.get(leader.model)
    except NotFoundError:
        return []
    fleet_budget = svc.fleet.max_task_work(leader.model)
    budget = svc.settings.max_task_work if fleet_budget is None else fleet_budget
    work = task_work(leader.params, model)
    queued = [
        task
        for task in svc.tasks.list_by_status(TaskStatus.QUEUED, limit=RIDER_SCAN)
        if task.model == leader.model
        and task.task_id != leader.task_id
        and task.dispatched_at is None
        and task.lease is None
        and not task.cancel_requested
    ]
    queued.sort(key=lambda task: (-task.priority, task.created_at))
    riders: list[Task] = []
    for task in queued:
        count = task.params.image_count
        if images + count > limit or batch_key(task.params) != key:
            continue
        cost = task_work(task.params, model)
        if budget and work + cost > budget:
            continue
        claimed = svc.tasks.claim_queued(task.task_id, task.start(svc.clock.now(), None))
        if claimed is None:  # dispatched, claimed, cancelled or ended meanwhile
            continue
        riders.append(claimed)
        images, work = images + count, work + cost
        if images >= limit:
            break
    if riders:
        log.info("task %s takes along %d queued tasks", leader.task_id, len(riders))
    return riders
