"""Inference functions as local worker processes: one per checkpoint, loaded once, kept warm,
exiting after SD_IDLE_SECONDS idle (scale to zero). Each has a durable invocation queue, the
counterpart of Lambda's asynchronous-invoke queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.queue import SqliteQueue
from sdcore.adapters.local.stores import SqliteSlotStore
from sdcore.clock import Clock
from sdcore.domain.models import FunctionRecord, Lease, Model
from sdcore.errors import NotFoundError
from sdcore.ports import FunctionStore, WorkerFleet, function_name
from sdcore.settings import Settings

REPO = Path(__file__).resolve().parents[5]
PYTHONPATH = [
    REPO / "layers" / "sdcore",
    REPO / "functions" / "inference",
]


def invocation_queue(db: Database, name: str, now: Any = None) -> SqliteQueue:
    kwargs = {"now": now} if now else {}
    return SqliteQueue(db, f"fn:{name}", max_receives=3, **kwargs)


class ProcessWorkerFleet(WorkerFleet):
    def __init__(
        self, db: Database, functions: FunctionStore, settings: Settings, clock: Clock
    ) -> None:
        self.db = db
        self.functions = functions
        self.settings = settings
        self.clock = clock
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def _alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _spawn(self, name: str, model_name: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, **self.settings.to_env(), "SD_MODEL_NAME": model_name}
        env["PYTHONPATH"] = os.pathsep.join(
            [str(p) for p in PYTHONPATH] + [env.get("PYTHONPATH", "")]
        )
        env.setdefault("HF_HUB_OFFLINE", "1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "sdcore.local.worker", "--function", name],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        self._procs[name] = proc
        return proc

    def ensure(self, model: Model) -> FunctionRecord:
        name = function_name(self.settings.function_prefix, model.name)
        with self._lock:
            try:
                record = self.functions.get(name)
            except NotFoundError:
                record = FunctionRecord(name=name, model=model.name, created_at=self.clock.now())
            if not self._alive(name):
                proc = self._spawn(name, model.name)
                record = record.model_copy(update={"pid": proc.pid, "status": "active"})
                self.functions.put(record)
            return record

    def invoke(self, record: FunctionRecord, payload: dict[str, Any]) -> None:
        invocation_queue(self.db, record.name, self.clock.now).send(payload)

    def revive(self) -> list[str]:
        """Start a worker for every function with invocations waiting and no live process
        (after a restart, or when a worker idled out just as work arrived)."""
        started = []
        for record in self.functions.list():
            if record.status == "deleted" or self._alive(record.name):
                continue
            if invocation_queue(self.db, record.name).depth() > 0:
                with self._lock:
                    proc = self._spawn(record.name, record.model)
                self.functions.put(record.model_copy(update={"pid": proc.pid, "status": "active"}))
                started.append(record.name)
        return started

    def delete(self, model_name: str) -> None:
        name = function_name(self.settings.function_prefix, model_name)
        with self._lock:
            proc = self._procs.pop(name, None)
        try:
            record = self.functions.get(name)
        except NotFoundError:
            record = None
        pid = proc.pid if proc else (record.pid if record else None)
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if proc:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        # Invocations still waiting go back to control, which ends them (their model is gone).
        queue = invocation_queue(self.db, name, self.clock.now)
        slots = SqliteSlotStore(self.db)
        tasks = SqliteQueue(self.db, "tasks", now=self.clock.now)
        while messages := queue.receive(10, visibility_s=60):
            for message in messages:
                if message.body.get("lease"):
                    slots.release(Lease.model_validate(message.body["lease"]))
                tasks.send({"taskId": message.body["taskId"]})
                queue.delete(message.receipt)
        self.functions.delete(name)

    def list(self) -> list[FunctionRecord]:
        out = []
        for record in self.functions.list():
            if (
                record.status == "active"
                and record.name in self._procs
                and not self._alive(record.name)
            ):
                record = record.model_copy(update={"status": "stopped"})
            out.append(record)
        return out

    def shutdown(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
            self._procs.clear()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
