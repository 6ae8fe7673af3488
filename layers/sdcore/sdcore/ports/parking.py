"""Tasks parked over a cap: control parks a task that found no free slot, and hands it its queue
message again when a slot of its kind frees, instead of re-queueing it on a timer (so a waiting
task costs nothing while it waits, whatever the backlog)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection

from pydantic import BaseModel


class ParkedTask(BaseModel):
    task_id: str
    model: str
    priority: int
    created_at: float


class ParkedTasks(ABC):
    """Waiting tasks by checkpoint, highest priority then oldest first."""

    @abstractmethod
    def park(self, task_id: str, model: str, priority: int, created_at: float) -> bool:
        """Park a stored, queued task (one write; parking it again changes nothing). False
        when there is no such task or it is no longer queued (cancelled meanwhile)."""

    @abstractmethod
    def take(self, count: int, models: Collection[str]) -> list[ParkedTask]:
        """Remove and return up to `count` parked tasks of `models`, highest priority then
        oldest first across them. Atomic per task: two takers never get the same one, a
        taker that loses a race moves on to the next. A task that ended while parked is
        dropped, never returned."""

    @abstractmethod
    def count(self) -> int:
        """Tasks parked and not taken (one that ended while parked counts until a take
        drops it). Reads every parked entry: for gauges and tests, not per task."""
