"""Small guards of the local backend.

SD_MAX_CONCURRENCY=0 pauses dispatch: tasks are accepted and wait. Control still starts the
checkpoint's worker on a task's first wait (so its cold start overlaps the wait); with no share
of the cores to divide, the worker must still start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.fleet import ProcessWorkerFleet
from sdcore.adapters.local.stores import SqliteFunctionStore
from sdcore.clock import Clock
from sdcore.domain.models import Model
from sdcore.settings import Settings

REPO = Path(__file__).resolve().parents[3]


def test_a_worker_starts_while_dispatch_is_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SD_TEST_HANDLED", str(tmp_path / "handled.jsonl"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ["PYTHONPATH"]]))
    settings = Settings(data_dir=tmp_path, max_concurrency=0,
                        inference_handler="tests.contract.fleet_handler.handler")  # fmt: skip
    db = Database(tmp_path / "state.db")
    fleet = ProcessWorkerFleet(db, SqliteFunctionStore(db), settings, Clock())
    try:
        record = fleet.ensure(Model(name="demo", sha256="0" * 64, size=1, key="models/demo",
                                    registered_at=1, modified_at=1))  # fmt: skip
        assert record.status == "active" and record.pid
    finally:
        fleet.shutdown()


def test_the_database_is_the_owners_only(tmp_path: Path) -> None:
    """state.db holds webhook secrets: 0600, like credentials.json (and so its WAL)."""
    old = tmp_path / "old" / "state.db"
    old.parent.mkdir()
    old.touch(mode=0o644)
    for path in (tmp_path / "state.db", old):
        db = Database(path)
        with db.write() as conn:
            conn.execute("INSERT INTO counters VALUES ('c', 1, 0)")
        for made in (path, path.with_name("state.db-wal")):
            assert made.stat().st_mode & 0o777 == 0o600, made
        db.close()
