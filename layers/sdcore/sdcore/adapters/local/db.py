"""One SQLite database (WAL) holds the local backend's tables and queues."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, created_at);
CREATE INDEX IF NOT EXISTS tasks_owner ON tasks (owner, created_at, task_id);
-- the per-user quota counts queued/running tasks from this index alone
CREATE INDEX IF NOT EXISTS tasks_owner_status ON tasks (owner, status, created_at);
-- control asks on every dispatch whether a high-priority task waits: partial, so the count
-- reads those tasks only, not the backlog
CREATE INDEX IF NOT EXISTS tasks_waiting_high ON tasks (created_at)
    WHERE status = 'queued' AND json_extract(data, '$.priority') = 1;
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS slots (
    slot_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    model TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_at REAL NOT NULL,
    receipt TEXT,
    receive_count INTEGER NOT NULL DEFAULT 0,
    sent_at REAL NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (queue, visible_at);
-- tasks over a cap, waiting for a slot of their checkpoint (adapters/local/parked.py)
CREATE TABLE IF NOT EXISTS parked (
    task_id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS parked_order ON parked (model, priority DESC, created_at, task_id);
"""


class Database:
    """A connection per thread to one SQLite file; `write()` is a serialised transaction."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # it holds webhook secrets and key hashes: the owner's only, like credentials.json
        # (SQLite makes its -wal and -shm files with the database's mode)
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)  # a database made before this was 0644
        self._local = threading.local()
        # executescript manages its own transaction; CREATE ... IF NOT EXISTS is idempotent
        self.conn().executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added after a data directory was first created."""
        conn = self.conn()
        columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
        if "priority" not in columns:
            try:
                conn.execute("ALTER TABLE messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")
            except sqlite3.OperationalError as e:  # another process added it first
                if "duplicate column" not in str(e):
                    raise

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: the transaction takes the write lock up front, so reads in it are
        consistent with the writes (the local counterpart of DynamoDB's conditional writes)."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
