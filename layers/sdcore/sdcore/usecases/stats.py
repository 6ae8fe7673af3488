"""The admin summary (`GET /admin/stats`): counts and latencies over the last hour and day,
computed from the task records themselves (their statuses, models and timestamps), so it reads
the same on both backends and needs no metrics backend. Bounded: at most SCAN_LIMIT tasks of
each status created in the last day are read (5 statuses: at most 5 x SCAN_LIMIT); a window
whose status hit the bound says so (`truncated`)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sdcore.domain.models import Task, TaskStatus
from sdcore.services import Services
from sdcore.usecases.measure import failure_reason, fleet_of

SCAN_LIMIT = 2000
WINDOWS = (("hour", 3600.0), ("day", 86400.0))


@dataclass(frozen=True)
class Distribution:
    """Seconds (or steps per second) over the tasks that have the figure; None when none do."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution:
        ordered = sorted(values)
        if not ordered:
            return cls(0, None, None, None, None)

        def rank(q: float) -> float:  # nearest rank
            return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 4)

        return cls(len(ordered), rank(0.5), rank(0.95), rank(0.99), round(ordered[-1], 4))


@dataclass(frozen=True)
class Figures:
    """One window's figures, for every model or for one."""

    submitted: int
    started: int
    succeeded: int
    failed: int
    cancelled: int
    queued: int
    running: int
    failure_reasons: dict[str, int]
    queue_wait_s: Distribution
    run_s: Distribution
    end_to_end_s: Distribution
    steps_per_second: Distribution

    @classmethod
    def of(cls, tasks: list[Task]) -> Figures:
        by_status = Counter(t.status for t in tasks)
        started = [t for t in tasks if t.started_at is not None]
        ended = [t for t in started if t.finished_at is not None]
        failed = [t for t in tasks if t.status is TaskStatus.FAILED]
        return cls(
            submitted=len(tasks),
            started=len(started),
            succeeded=by_status[TaskStatus.SUCCEEDED],
            failed=by_status[TaskStatus.FAILED],
            cancelled=by_status[TaskStatus.CANCELLED],
            queued=by_status[TaskStatus.QUEUED],
            running=by_status[TaskStatus.RUNNING],
            failure_reasons=dict(Counter(failure_reason(t.error) for t in failed)),
            queue_wait_s=Distribution.of(t.started_at - t.created_at for t in started),  # type: ignore[operator]
            run_s=Distribution.of(t.finished_at - t.started_at for t in ended),  # type: ignore[operator]
            end_to_end_s=Distribution.of(
                t.finished_at - t.created_at
                for t in tasks
                if t.status is TaskStatus.SUCCEEDED and t.finished_at is not None
            ),
            steps_per_second=Distribution.of(_rates(ended)),
        )


def _rates(tasks: list[Task]) -> Iterable[float]:
    """Sampling steps per second of run, of succeeded tasks: the steps the engine reported
    (steps of the last job x jobs), over the run's time."""
    for t in tasks:
        run = (t.finished_at or 0) - (t.started_at or 0)
        if t.status is TaskStatus.SUCCEEDED and t.sampling_steps and run > 0:
            yield t.sampling_steps * max(t.job_count, 1) / run


@dataclass(frozen=True)
class ModelFigures:
    model: str
    fleet: str
    figures: Figures


@dataclass(frozen=True)
class Window:
    name: str
    since: float
    truncated: bool  # a status had more tasks than the scan reads: counts are lower bounds
    total: Figures
    models: list[ModelFigures] = field(default_factory=list)


@dataclass(frozen=True)
class Stats:
    generated_at: float
    scan_limit: int  # tasks read at most per status
    scanned: int  # tasks read
    windows: list[Window]


def task_stats(svc: Services) -> Stats:
    """The figures of the tasks created in the last hour and the last day (SCAN_LIMIT)."""
    now = svc.clock.now()
    day_ago = now - max(seconds for _, seconds in WINDOWS)
    tasks: list[Task] = []
    full: dict[TaskStatus, float] = {}  # status -> created_at of its oldest task read, if cut
    for status in TaskStatus:
        found = svc.tasks.list_created_since(status, day_ago, SCAN_LIMIT)
        tasks += found
        if len(found) >= SCAN_LIMIT:
            full[status] = found[-1].created_at
    windows = []
    for name, seconds in WINDOWS:
        since = now - seconds
        inside = [t for t in tasks if t.created_at >= since]
        by_model: dict[str, list[Task]] = defaultdict(list)
        for t in inside:
            by_model[t.model].append(t)
        models = [ModelFigures(m, fleet_of(svc, m), Figures.of(ts))
                  for m, ts in sorted(by_model.items())]  # fmt: skip
        truncated = any(oldest > since for oldest in full.values())
        windows.append(Window(name, since, truncated, Figures.of(inside), models))
    return Stats(now, SCAN_LIMIT, len(tasks), windows)
