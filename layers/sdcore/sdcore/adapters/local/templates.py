"""SQLite adapters of the template and batch stores (tables of their own in the one database)."""

from __future__ import annotations

import builtins

from sdcore.adapters.local.db import Database
from sdcore.domain.templates import Batch, Template
from sdcore.errors import ConflictError, NotFoundError, StaleWriteError
from sdcore.ports.templates import BatchStore, TemplateStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (owner, name)
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
"""


class SqliteTemplateStore(TemplateStore):
    def __init__(self, db: Database) -> None:
        self.db = db
        db.conn().executescript(SCHEMA)

    def put(self, template: Template, expected_version: int) -> None:
        with self.db.write() as conn:
            row = conn.execute(
                "SELECT version FROM templates WHERE owner=? AND name=?",
                (template.owner, template.name),
            ).fetchone()
            if (row[0] if row else 0) != expected_version:
                raise StaleWriteError(f"template {template.name} changed meanwhile")
            conn.execute(
                "INSERT OR REPLACE INTO templates (owner, name, version, data) VALUES (?,?,?,?)",
                (template.owner, template.name, template.version, template.model_dump_json()),
            )

    def get(self, owner: str, name: str) -> Template:
        row = (
            self.db.conn()
            .execute("SELECT data FROM templates WHERE owner=? AND name=?", (owner, name))
            .fetchone()
        )
        if row is None:
            raise NotFoundError(f"template {name} not found")
        return Template.model_validate_json(row[0])

    def list(self, owner: str) -> builtins.list[Template]:
        rows = (
            self.db.conn()
            .execute("SELECT data FROM templates WHERE owner=? ORDER BY name", (owner,))
            .fetchall()
        )
        return [Template.model_validate_json(r[0]) for r in rows]

    def delete(self, owner: str, name: str) -> None:
        with self.db.write() as conn:
            cur = conn.execute("DELETE FROM templates WHERE owner=? AND name=?", (owner, name))
            if cur.rowcount == 0:
                raise NotFoundError(f"template {name} not found")


class SqliteBatchStore(BatchStore):
    def __init__(self, db: Database) -> None:
        self.db = db
        db.conn().executescript(SCHEMA)

    def create(self, batch: Batch) -> None:
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM batches WHERE batch_id=?", (batch.batch_id,)).fetchone():
                raise ConflictError(f"batch {batch.batch_id} exists")
            conn.execute(
                "INSERT INTO batches (batch_id, data) VALUES (?,?)",
                (batch.batch_id, batch.model_dump_json()),
            )

    def get(self, batch_id: str) -> Batch:
        row = (
            self.db.conn()
            .execute("SELECT data FROM batches WHERE batch_id=?", (batch_id,))
            .fetchone()
        )
        if row is None:
            raise NotFoundError(f"batch {batch_id} not found")
        return Batch.model_validate_json(row[0])

    def set_grid(self, batch_id: str, key: str) -> Batch:
        with self.db.write() as conn:
            row = conn.execute("SELECT data FROM batches WHERE batch_id=?", (batch_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"batch {batch_id} not found")
            batch = Batch.model_validate_json(row[0])
            if batch.grid_key is None:
                batch.grid_key = key
                conn.execute(
                    "UPDATE batches SET data=? WHERE batch_id=?",
                    (batch.model_dump_json(), batch_id),
                )
            return batch
