"""What the use cases measure about a task's life and the load (`sdcore.metric_names`): the
figures are recorded where the events happen, through the metrics port."""

from __future__ import annotations

import time
from collections import Counter

from sdcore.domain.models import ModelType, Task, TaskStatus
from sdcore.errors import NotFoundError
from sdcore.metric_names import (
    END_TO_END,
    RUN_TIME,
    SLOT_CAP,
    SLOTS_IN_USE,
    TASKS_CANCELLED,
    TASKS_FAILED,
    TASKS_RUNNING,
    TASKS_SUCCEEDED,
    TASKS_WAITING,
)
from sdcore.services import Services

# A failed task's reason as a metric label: a few fixed values, told by the start of the error
# the domain wrote (the error text stays the task's; the label only groups it).
FAILURE_REASONS: tuple[tuple[str, str], ...] = (
    ("worker lost", "worker_lost"),
    ("the inference function did not start", "never_started"),
    ("time limit:", "time_limit"),
    ("blocked by the NSFW censor", "censored"),
    ("model failed to load", "load_failed"),
    ("the inference function failed", "function_failed"),
    ("the inference endpoint", "endpoint_failed"),
    ("control could not hand", "dead_lettered"),
)
# the gauges' bound: tasks read per status each time they are sampled
LOAD_SCAN_LIMIT = 1000
FLEET_TTL_S = 300.0
_fleets: dict[str, tuple[str, float]] = {}  # model -> (fleet, when read): per process


def failure_reason(error: str | None) -> str:
    """The label of a failed task's reason: one of FAILURE_REASONS' labels, `model_unavailable`
    (deleted or not ready when control took it), or `error` (what the task's run raised)."""
    text = error or ""
    for start, label in FAILURE_REASONS:
        if text.startswith(start):
            return label
    if text.startswith("model ") and ("was deleted" in text or "is not ready" in text):
        return "model_unavailable"
    return "error"


def fleet_of(svc: Services, model: str) -> str:
    """The fleet the model's function is on (`local` on the local stack; on AWS its function
    record's, else SD_INFERENCE_FLEET). Read once per model every few minutes per process: a
    move between fleets is rare, and a label a few minutes stale after one does no harm."""
    if svc.settings.backend == "local":
        return "local"
    now = time.monotonic()
    known = _fleets.get(model)
    if known is not None and now - known[1] < FLEET_TTL_S:
        return known[0]
    try:
        record = svc.functions.get(model)
        fleet = str(record.resources.get("fleet") or svc.settings.inference_fleet)
    except NotFoundError:
        fleet = svc.settings.inference_fleet
    _fleets[model] = (fleet, now)
    return fleet


def record_end(svc: Services, task: Task) -> None:
    """The counters and durations of a task that has just ended (whoever ended it)."""
    if not task.status.terminal:
        return
    labels = {"model": task.model, "fleet": fleet_of(svc, task.model)}
    if task.status is TaskStatus.SUCCEEDED:
        svc.metrics.count(TASKS_SUCCEEDED, **labels)
    elif task.status is TaskStatus.CANCELLED:
        svc.metrics.count(TASKS_CANCELLED, **labels)
    else:
        svc.metrics.count(TASKS_FAILED, reason=failure_reason(task.error), **labels)
    end = task.finished_at or svc.clock.now()
    status = task.status.value
    svc.metrics.observe(END_TO_END, max(0.0, end - task.created_at), status=status, **labels)
    if task.started_at is not None:
        svc.metrics.observe(RUN_TIME, max(0.0, end - task.started_at), status=status, **labels)


def record_load(svc: Services) -> dict[str, int]:
    """Sample the gauges: slots held against the caps, queued and running tasks, per model and
    in all (`all`); at most LOAD_SCAN_LIMIT tasks per status are counted. Returns the totals."""
    now = svc.clock.now()
    held = svc.slots.active(now)
    per_model = Counter(lease.model for lease in held)
    settings = svc.settings
    svc.metrics.gauge(SLOTS_IN_USE, len(held), model="all")
    svc.metrics.gauge(SLOT_CAP, settings.max_concurrency, model="all")
    waiting = Counter(t.model for t in svc.tasks.list_by_status(TaskStatus.QUEUED, LOAD_SCAN_LIMIT))
    running = Counter(
        t.model for t in svc.tasks.list_by_status(TaskStatus.RUNNING, LOAD_SCAN_LIMIT)
    )
    # every checkpoint, so that a model whose tasks are all done shows 0, not its last level
    checkpoints = {m.name for m in svc.models.list() if m.type is ModelType.CHECKPOINT}
    for model in sorted(checkpoints | set(per_model) | set(waiting) | set(running)):
        svc.metrics.gauge(SLOTS_IN_USE, per_model[model], model=model)
        cap = svc.fleet.capacity(model) or settings.max_per_model
        svc.metrics.gauge(SLOT_CAP, cap, model=model)
        svc.metrics.gauge(TASKS_WAITING, waiting[model], model=model)
        svc.metrics.gauge(TASKS_RUNNING, running[model], model=model)
    svc.metrics.gauge(TASKS_WAITING, sum(waiting.values()), model="all")
    svc.metrics.gauge(TASKS_RUNNING, sum(running.values()), model="all")
    return {"slots": len(held), "waiting": sum(waiting.values()),
            "running": sum(running.values())}  # fmt: skip
