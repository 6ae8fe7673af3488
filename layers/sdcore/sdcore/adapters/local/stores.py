"""SQLite adapters of the table ports, with DynamoDB's state rules (conditional transitions)."""

from __future__ import annotations

import builtins
from typing import Any

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.doorbell import ring
from sdcore.domain.models import (
    ApiKey,
    FunctionRecord,
    Lease,
    Model,
    ModelChanges,
    ModelStatus,
    Task,
    TaskChanges,
    TaskStatus,
    TaskTransition,
    User,
    UserChanges,
)
from sdcore.errors import (
    ConflictError,
    NotFoundError,
    OverCapError,
    StaleWriteError,
    over_active_limit,
)
from sdcore.ports import FunctionStore, ModelStore, SlotStore, TaskStore, UserStore

TASKS_BELL = "tasks"  # rung when a task ends (the front door's sync waits listen)


class SqliteTaskStore(TaskStore):
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, task: Task, active_limit: int | None = None) -> None:
        with self.db.write() as conn:  # one writer at a time: the count and insert are atomic
            exists = conn.execute("SELECT 1 FROM tasks WHERE task_id=?", (task.task_id,)).fetchone()
            if exists:
                raise ConflictError(f"task {task.task_id} exists")
            if active_limit is not None:
                active = conn.execute(
                    "SELECT COUNT(*) FROM tasks WHERE owner=? AND status IN (?,?)",
                    (task.owner, TaskStatus.QUEUED.value, TaskStatus.RUNNING.value),
                ).fetchone()[0]
                if active >= active_limit:
                    raise OverCapError(over_active_limit(active, active_limit), retry_after_s=5)
            conn.execute(
                "INSERT INTO tasks (task_id, status, created_at, owner, data) VALUES (?,?,?,?,?)",
                (
                    task.task_id,
                    task.status.value,
                    task.created_at,
                    task.owner,
                    task.model_dump_json(),
                ),
            )

    def get(self, task_id: str) -> Task:
        row = (
            self.db.conn().execute("SELECT data FROM tasks WHERE task_id=?", (task_id,)).fetchone()
        )
        if row is None:
            raise NotFoundError(f"task {task_id} not found")
        return Task.model_validate_json(row[0])

    def _update(self, conn: Any, task: Task) -> None:
        conn.execute(
            "UPDATE tasks SET status=?, data=? WHERE task_id=?",
            (task.status.value, task.model_dump_json(), task.task_id),
        )

    def transition(self, task_id: str, change: TaskTransition) -> Task:
        with self.db.write() as conn:
            row = conn.execute("SELECT data FROM tasks WHERE task_id=?", (task_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"task {task_id} not found")
            task = Task.model_validate_json(row[0])
            if task.status not in change.from_:
                raise StaleWriteError(f"task {task_id} is {task.status.value}")
            task = task.model_copy(update={**change.changes.fields(), "status": change.to})
            self._update(conn, task)
        if change.to.terminal:  # committed: the sync waits read it at once
            ring(self.db.path.parent, TASKS_BELL)
        return task

    def update_while(self, task_id: str, status: TaskStatus, changes: TaskChanges) -> bool:
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT data FROM tasks WHERE task_id=? AND status=?",
                (task_id, status.value),
            ).fetchone()
            if row is None:
                return False
            task = Task.model_validate_json(row[0]).model_copy(update=changes.fields())
            self._update(conn, task)
            return True

    def claim_queued(self, task_id: str, change: TaskTransition) -> Task | None:
        if TaskStatus.QUEUED not in change.from_ or change.to.terminal:
            raise ValueError(f"a claim starts a queued task, not {change.from_} -> {change.to}")
        with self.db.write() as conn:  # BEGIN IMMEDIATE: the checks and the write are atomic
            row = conn.execute(
                "SELECT data FROM tasks WHERE task_id=? AND status=?",
                (task_id, TaskStatus.QUEUED.value),
            ).fetchone()
            if row is None:
                return None
            task = Task.model_validate_json(row[0])
            if task.dispatched_at is not None or task.lease is not None or task.cancel_requested:
                return None
            task = task.model_copy(update={**change.changes.fields(), "status": change.to})
            self._update(conn, task)
            return task

    def request_cancel(self, task_id: str) -> Task:
        with self.db.write() as conn:
            row = conn.execute("SELECT data FROM tasks WHERE task_id=?", (task_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"task {task_id} not found")
            task = Task.model_validate_json(row[0])
            if not task.status.terminal and not task.cancel_requested:
                task = task.model_copy(update={"cancel_requested": True})
                self._update(conn, task)
            return task

    def list_by_status(self, status: TaskStatus, limit: int = 100) -> list[Task]:
        rows = self.db.conn().execute(
            "SELECT data FROM tasks WHERE status=? ORDER BY created_at LIMIT ?",
            (status.value, limit),
        )
        return [Task.model_validate_json(r[0]) for r in rows]

    def list_created_since(self, status: TaskStatus, since: float, limit: int) -> list[Task]:
        rows = self.db.conn().execute(
            "SELECT data FROM tasks WHERE status=? AND created_at>=? "
            "ORDER BY created_at DESC LIMIT ?",
            (status.value, since, limit),
        )
        return [Task.model_validate_json(r[0]) for r in rows]

    def list_by_owner(
        self,
        owner: str,
        status: TaskStatus | None = None,
        limit: int = 20,
        before: tuple[float, str] | None = None,
    ) -> list[Task]:
        sql = "SELECT data FROM tasks WHERE owner=?"
        args: list[Any] = [owner]
        if status is not None:
            sql += " AND status=?"
            args.append(status.value)
        if before is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND task_id < ?))"
            args += [before[0], before[0], before[1]]
        sql += " ORDER BY created_at DESC, task_id DESC LIMIT ?"
        args.append(limit)
        return [Task.model_validate_json(r[0]) for r in self.db.conn().execute(sql, args)]

    def count_active(self, owner: str, since: float) -> int:
        row = self.db.conn().execute(
            "SELECT COUNT(*) FROM tasks WHERE owner=? AND created_at>? AND status IN (?,?)",
            (owner, since, TaskStatus.QUEUED.value, TaskStatus.RUNNING.value),
        )
        return int(row.fetchone()[0])

    def count_waiting_high(self, since: float) -> int:
        # the literals match the partial index tasks_waiting_high (a bound parameter would not)
        row = self.db.conn().execute(
            "SELECT COUNT(*) FROM tasks INDEXED BY tasks_waiting_high WHERE status='queued'"
            " AND json_extract(data, '$.priority')=1 AND created_at>?",
            (since,),
        )
        return int(row.fetchone()[0])


class SqliteModelStore(ModelStore):
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, model: Model) -> None:
        with self.db.write() as conn:
            row = conn.execute("SELECT status FROM models WHERE name=?", (model.name,)).fetchone()
            if row is not None and row[0] != ModelStatus.DELETED.value:
                raise ConflictError(f"model {model.name} exists")
            conn.execute(
                "INSERT OR REPLACE INTO models (name, status, data) VALUES (?,?,?)",
                (model.name, model.status.value, model.model_dump_json()),
            )

    def get(self, name: str) -> Model:
        row = self.db.conn().execute("SELECT data FROM models WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"model {name} not found")
        model = Model.model_validate_json(row[0])
        if model.status is ModelStatus.DELETED:
            raise NotFoundError(f"model {name} not found")
        return model

    def update(
        self,
        name: str,
        changes: ModelChanges,
        expected: set[ModelStatus] | None = None,
        pending_key: str | None = None,
    ) -> Model:
        with self.db.write() as conn:
            row = conn.execute("SELECT data FROM models WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"model {name} not found")
            model = Model.model_validate_json(row[0])
            if expected is not None and model.status not in expected:
                raise StaleWriteError(f"model {name} is {model.status.value}")
            if pending_key is not None and (
                model.pending is None or model.pending.key != pending_key
            ):
                raise StaleWriteError(f"model {name} has no pending version {pending_key}")
            model = model.model_copy(update=changes.fields())
            conn.execute(
                "UPDATE models SET status=?, data=? WHERE name=?",
                (model.status.value, model.model_dump_json(), name),
            )
            return model

    def list(self) -> list[Model]:
        rows = self.db.conn().execute(
            "SELECT data FROM models WHERE status != ? ORDER BY name", (ModelStatus.DELETED.value,)
        )
        return [Model.model_validate_json(r[0]) for r in rows]


class SqliteFunctionStore(FunctionStore):
    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, record: FunctionRecord) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO functions (name, data) VALUES (?,?)",
                (record.name, record.model_dump_json()),
            )

    def get(self, name: str) -> FunctionRecord:
        row = self.db.conn().execute("SELECT data FROM functions WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"function {name} not found")
        return FunctionRecord.model_validate_json(row[0])

    def list(self) -> list[FunctionRecord]:
        rows = self.db.conn().execute("SELECT data FROM functions ORDER BY name")
        return [FunctionRecord.model_validate_json(r[0]) for r in rows]

    def delete(self, name: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM functions WHERE name=?", (name,))

    def touch(self, name: str, last_used: float) -> None:
        with self.db.write() as conn:
            conn.execute(
                "UPDATE functions SET data=json_set(data, '$.last_used', ?) WHERE name=?",
                (last_used, name),
            )


class SqliteSlotStore(SlotStore):
    """Slots are rows; a slot is free when absent or its lease has expired."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def acquire(
        self, task_id: str, model: str, now: float, lease_s: float, global_cap: int, model_cap: int
    ) -> Lease | None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM slots WHERE expires_at <= ?", (now,))
            held = conn.execute("SELECT slot_id FROM slots WHERE task_id=?", (task_id,)).fetchall()
            if held:  # a redelivered message for a task that already holds its slots
                return None
            total = conn.execute("SELECT COUNT(*) FROM slots WHERE slot_id LIKE 'g#%'").fetchone()[
                0
            ]
            mine = conn.execute(
                "SELECT COUNT(*) FROM slots WHERE slot_id LIKE 'm#%' AND model=?", (model,)
            ).fetchone()[0]
            if total >= global_cap or mine >= model_cap:
                return None
            slots = [f"g#{task_id}", f"m#{task_id}"]
            expires = now + lease_s
            conn.executemany(
                "INSERT INTO slots (slot_id, task_id, model, expires_at) VALUES (?,?,?,?)",
                [(s, task_id, model, expires) for s in slots],
            )
            return Lease(task_id=task_id, model=model, slots=slots, expires_at=expires)

    def renew(self, lease: Lease, expires_at: float) -> bool:
        with self.db.write() as conn:
            cur = conn.execute(
                "UPDATE slots SET expires_at=? WHERE task_id=?", (expires_at, lease.task_id)
            )
            return cur.rowcount > 0

    def release(self, lease: Lease) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM slots WHERE task_id=?", (lease.task_id,))

    def active(self, now: float) -> list[Lease]:
        rows = self.db.conn().execute(
            "SELECT task_id, model, slot_id, expires_at FROM slots WHERE expires_at > ?", (now,)
        )
        leases: dict[str, Lease] = {}
        for task_id, model, slot_id, expires_at in rows:
            lease = leases.setdefault(
                task_id, Lease(task_id=task_id, model=model, slots=[], expires_at=expires_at)
            )
            lease.slots.append(slot_id)
        return list(leases.values())


class SqliteUserStore(UserStore):
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, user: User) -> None:
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM users WHERE name=?", (user.name,)).fetchone():
                raise ConflictError(f"user {user.name} exists")
            conn.execute(
                "INSERT INTO users (name, data) VALUES (?,?)", (user.name, user.model_dump_json())
            )

    def get(self, name: str) -> User:
        row = self.db.conn().execute("SELECT data FROM users WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"user {name} not found")
        return User.model_validate_json(row[0])

    def list(self) -> list[User]:
        rows = self.db.conn().execute("SELECT data FROM users ORDER BY name")
        return [User.model_validate_json(r[0]) for r in rows]

    def update(self, name: str, changes: UserChanges) -> User:
        with self.db.write() as conn:
            row = conn.execute("SELECT data FROM users WHERE name=?", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"user {name} not found")
            user = User.model_validate_json(row[0]).model_copy(update=changes.fields())
            conn.execute("UPDATE users SET data=? WHERE name=?", (user.model_dump_json(), name))
            return user

    def put_key(self, key: ApiKey) -> None:
        with self.db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO api_keys (key_hash, user, data) VALUES (?,?,?)",
                (key.key_hash, key.user, key.model_dump_json()),
            )

    def find_key(self, key_hash: str) -> ApiKey | None:
        row = (
            self.db.conn()
            .execute("SELECT data FROM api_keys WHERE key_hash=?", (key_hash,))
            .fetchone()
        )
        return None if row is None else ApiKey.model_validate_json(row[0])

    def list_keys(self, user: str) -> builtins.list[ApiKey]:
        rows = self.db.conn().execute("SELECT data FROM api_keys WHERE user=?", (user,))
        return [ApiKey.model_validate_json(r[0]) for r in rows]

    def revoke_keys(self, user: str) -> int:
        count = 0
        with self.db.write() as conn:
            rows = conn.execute("SELECT data FROM api_keys WHERE user=?", (user,)).fetchall()
            for (data,) in rows:
                key = ApiKey.model_validate_json(data)
                if not key.revoked:
                    count += 1
                    key = key.model_copy(update={"revoked": True})
                    conn.execute(
                        "UPDATE api_keys SET data=? WHERE key_hash=?",
                        (key.model_dump_json(), key.key_hash),
                    )
        return count

    def hit(self, counter: str, expires_at: float) -> int:
        with self.db.write() as conn:
            conn.execute(
                "INSERT INTO counters (name, value, expires_at) VALUES (?, 1, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + 1",
                (counter, expires_at),
            )
            value = conn.execute("SELECT value FROM counters WHERE name=?", (counter,)).fetchone()
            if value[0] == 1:  # a new window: forget windows that have passed
                conn.execute("DELETE FROM counters WHERE expires_at < ?", (expires_at - 3600,))
            return int(value[0])

    def peek(self, counter: str) -> int:
        found = self.db.conn().execute("SELECT value FROM counters WHERE name=?", (counter,))
        row = found.fetchone()
        return int(row[0]) if row else 0
