"""Torch's intra-op threads sized to the tasks running on this machine now.

The local stack's workers are processes sharing one machine's cores. A fixed share per worker
(cores // SD_MAX_CONCURRENCY) leaves a lone task with part of an idle machine; all cores for
each oversubscribes it when several run (OpenMP threads spinning against each other: a 1-step
64x64 image took 0.05 s on 1 thread, up to 4.4 s with 2 workers x 2 threads). So a run asks,
as each pipeline call starts and then between its steps (at most every `EVERY_S`), how many
tasks run now, and takes `cores // running` threads (at least 1).

Who counts is injected (`configure`, by the local worker's start): the engine knows no stack.
Where nothing configured it (Lambda, SageMaker: one task per execution environment), threads
stay as they are.

`torch.set_num_threads` sets OpenMP's threads for the calling thread: the share is applied
from the step callback and just before the pipeline call (`shared`), both on the thread that
runs the pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

EVERY_S = 0.25  # the count is read at most this often during a run
# the process's threads before any share changed them: OMP_NUM_THREADS, else the machine's cores
STARTED_WITH = torch.get_num_threads()

Count = Callable[[], int]


class CoreShare:
    """`cores` threads shared evenly among the tasks `count` says are running."""

    def __init__(
        self,
        count: Count,
        cores: int,
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.count, self.cores, self.every_s, self.clock = count, max(1, cores), every_s, clock
        self._checked: float | None = None

    def threads(self, running: int) -> int:
        """This task's share: running counts this task too (at least 1 when it runs)."""
        return max(1, self.cores // max(1, running))

    def fit(self, force: bool = False) -> int:
        """Set this thread's torch threads to the share of what runs now (`force`: whatever
        the time since the last look); returns the threads it has."""
        now = self.clock()
        if not force and self._checked is not None and now - self._checked < self.every_s:
            return torch.get_num_threads()
        self._checked = now
        running = self.count()
        want, have = self.threads(running), torch.get_num_threads()
        if want != have:
            torch.set_num_threads(want)
            log.info("torch threads %d -> %d (%d tasks running)", have, want, running)
        return want


_share: CoreShare | None = None


def configure(count: Count | None, cores: int | None = None) -> None:
    """Share this process's threads with the other tasks `count` says run on this machine, up
    to `cores` (default: the threads the process started with, `STARTED_WITH`); `count` None
    stops sharing."""
    global _share
    _share = None if count is None else CoreShare(count, cores or STARTED_WITH)


def fit() -> None:
    """Size this thread's torch threads to what runs now (a task's start: its work outside
    pipeline calls, e.g. an upscale or an interrogation, runs on them too)."""
    if _share is not None:
        _share.fit(force=True)


def shared(callback: Callable[..., Any]) -> Callable[..., Any]:
    """`callback` (a pipeline call's `callback_on_step_end`) sizing the threads before each
    step; they are sized now too, so the first step has the right count."""
    share = _share
    if share is None:
        return callback
    share.fit(force=True)

    def on_step(*args: Any, **kwargs: Any) -> Any:
        share.fit()
        return callback(*args, **kwargs)

    return on_step
