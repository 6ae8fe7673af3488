"""Parked tasks in SQLite: a row per waiting task, read per checkpoint in (priority, age) order
through one index, taken in the write transaction that reads them."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sdcore.adapters.local.db import Database
from sdcore.domain.models import TaskStatus
from sdcore.ports import ParkedTask, ParkedTasks


def _rank(task: ParkedTask) -> tuple[int, float, str]:
    return (-task.priority, task.created_at, task.task_id)


class SqliteParkedTasks(ParkedTasks):
    def __init__(self, db: Database) -> None:
        self.db = db

    def park(self, task_id: str, model: str, priority: int, created_at: float) -> bool:
        with self.db.write() as conn:
            queued = conn.execute(
                "SELECT 1 FROM tasks WHERE task_id=? AND status=?",
                (task_id, TaskStatus.QUEUED.value),
            ).fetchone()
            if queued is None:
                return False
            conn.execute(
                "INSERT OR REPLACE INTO parked (task_id, model, priority, created_at)"
                " VALUES (?,?,?,?)",
                (task_id, model, priority, created_at),
            )
            return True

    def take(self, count: int, models: Collection[str]) -> list[ParkedTask]:
        if count <= 0 or not models:
            return []
        taken: list[ParkedTask] = []
        # BEGIN IMMEDIATE: what is read is deleted before any other taker reads
        with self.db.write() as conn:
            while len(taken) < count:
                heads = self._heads(conn, count - len(taken), models)
                if not heads:
                    break
                for task in heads:
                    conn.execute("DELETE FROM parked WHERE task_id=?", (task.task_id,))
                    status = conn.execute(
                        "SELECT status FROM tasks WHERE task_id=?", (task.task_id,)
                    ).fetchone()
                    if status is not None and status[0] == TaskStatus.QUEUED.value:
                        taken.append(task)  # else it ended while parked: dropped
        return taken

    @staticmethod
    def _heads(conn: Any, count: int, models: Collection[str]) -> list[ParkedTask]:
        """The first `count` across `models`: the first `count` of each (an index seek per
        checkpoint, never a sort of the backlog), merged."""
        found: list[ParkedTask] = []
        for model in set(models):
            rows = conn.execute(
                "SELECT task_id, priority, created_at FROM parked WHERE model=?"
                " ORDER BY priority DESC, created_at, task_id LIMIT ?",
                (model, count),
            ).fetchall()
            found += [ParkedTask(task_id=t, model=model, priority=p, created_at=c)
                      for t, p, c in rows]  # fmt: skip
        return sorted(found, key=_rank)[:count]

    def count(self) -> int:
        row = self.db.conn().execute("SELECT COUNT(*) FROM parked").fetchone()
        return int(row[0])
