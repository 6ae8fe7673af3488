"""Inference functions as local worker processes: one per checkpoint, loaded once, kept warm,
exiting after SD_IDLE_SECONDS idle (scale to zero). Each has a durable invocation queue, the
counterpart of Lambda's asynchronous-invoke queue.

A worker's process belongs to the fleet that spawned it (the local stack's control loop), but the
admin function runs in other processes: so liveness is judged from the recorded pid, and an
admin's update stops a running worker for its owner to start again with the new settings.

The fleet that spawned a worker waits on it: when it exits holding invocations (killed, out of
memory, crashed mid-task) they are taken from its queue and handed to `on_exit` at once, so its
tasks end or are retried within moments, not when their heartbeat goes stale.
"""

from __future__ import annotations

import builtins
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.queue import SqliteQueue
from sdcore.adapters.local.stores import SqliteSlotStore
from sdcore.clock import Clock
from sdcore.domain.models import FunctionChanges, FunctionRecord, Lease, Model
from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.ports import FunctionStore, WorkerFleet, function_name
from sdcore.settings import Settings

# the process each function runs in (the handler it runs is a setting, as on Lambda)
RUNTIME = "sdcore.adapters.local.runtime"

log = logging.getLogger(__name__)


def invocation_queue(db: Database, name: str, now: Any = None) -> SqliteQueue:
    kwargs = {"now": now} if now else {}
    return SqliteQueue(db, f"fn:{name}", max_receives=3, **kwargs)


def running_dir(data_dir: Path) -> Path:
    """Where workers mark the invocations they run (see `runtime.RunningInvocations`)."""
    return data_dir / "running"


TOUCH_EVERY_S = 60.0


class ProcessWorkerFleet(WorkerFleet):
    def __init__(
        self, db: Database, functions: FunctionStore, settings: Settings, clock: Clock
    ) -> None:
        self.db = db
        self.functions = functions
        self._touched: dict[str, float] = {}
        self.settings = settings
        self.clock = clock
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        # told of the invocations a worker this fleet spawned held when it exited
        self.on_exit: Callable[[builtins.list[dict[str, Any]]], Any] | None = None

    def _alive(self, name: str) -> bool:
        proc = self._procs.get(name)
        return proc is not None and proc.poll() is None

    def _running(self, record: FunctionRecord) -> bool:
        """Whether the record's worker process runs, also when another process spawned it."""
        if record.name in self._procs:
            return self._alive(record.name)
        return record.pid is not None and _is_worker(record.pid, record.name)

    def _spawn(self, record: FunctionRecord) -> subprocess.Popen[bytes]:
        # the admin's env first: the function's own variables (settings, model) always win
        admin_env = record.resources.get("env") or {}
        env = {**os.environ, **admin_env, **self.settings.to_env(), "SD_MODEL_NAME": record.model}
        env["SD_EXTRA_ARGS"] = shlex.join(record.resources.get("extraArgs") or [])
        env.setdefault("HF_HUB_OFFLINE", "1")
        # Workers share this machine's cores: each may use them all, and its engine takes its
        # share of them, cores // tasks running now, as each run starts and between its steps
        # (sdcore.engine.threads, told what runs by the inference function's start), so a lone
        # task has every core and several never oversubscribe them. OMP_NUM_THREADS caps it.
        env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                RUNTIME,
                "--function",
                record.name,
                "--handler",
                self.settings.inference_handler,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        self._procs[record.name] = proc
        threading.Thread(
            target=self._watch, args=(record.name, proc), name=f"watch-{proc.pid}", daemon=True
        ).start()
        return proc

    def _watch(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        """Wait for the worker to exit; then what it held (received, never finished) can never
        finish: hand it to `on_exit`. Messages a successor received since are not its."""
        proc.wait()
        exited = self.clock.now()
        # dead mid-invocation, it left its mark of one running (see runtime.RunningInvocations)
        (running_dir(self.settings.data_dir) / str(proc.pid)).unlink(missing_ok=True)
        if self.on_exit is None:
            return  # nobody to tell: they go to a new worker when their visibility ends
        try:
            queue = invocation_queue(self.db, name, self.clock.now)
            held = queue.take_received(exited, self.settings.lease_s)
            if held:
                log.warning("worker %s of %s exited (%s) holding %d invocation(s)",
                            proc.pid, name, proc.returncode, len(held))  # fmt: skip
                self.on_exit([message.body for message in held])
        except Exception:
            log.exception("handling the exit of worker %s of %s failed", proc.pid, name)

    def ensure(self, model: Model) -> FunctionRecord:
        name = function_name(self.settings.function_prefix, model.name)
        with self._lock:
            try:
                record = self.functions.get(name)
            except NotFoundError:
                record = FunctionRecord(name=name, model=model.name, created_at=self.clock.now())
            if not self._alive(name):
                proc = self._spawn(record)
                record = record.model_copy(update={"pid": proc.pid, "status": "active"})
                self.functions.put(record)
            return record

    def _touch(self, name: str, now: float) -> None:
        # `last_used` is for people reading the function list: a write a minute at most per
        # function, not one per task (table writes per task are a cost)
        if now - self._touched.get(name, 0.0) >= TOUCH_EVERY_S:
            self._touched[name] = now
            self.functions.touch(name, now)

    def invoke(self, record: FunctionRecord, payload: dict[str, Any]) -> None:
        invocation_queue(self.db, record.name, self.clock.now).send(payload)
        self._touch(record.name, self.clock.now())

    def revive(self) -> list[str]:
        """Start a worker for every function with invocations waiting and no live process
        (after a restart, or when a worker idled out just as work arrived)."""
        started = []
        for record in self.functions.list():
            if record.status == "deleted" or self._alive(record.name):
                continue
            if invocation_queue(self.db, record.name).depth() > 0:
                with self._lock:
                    proc = self._spawn(record)
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
        if proc is not None:
            _stop(None, proc)
        elif record is not None and record.pid and _is_worker(record.pid, name):
            _stop(record.pid, None)  # a worker another process spawned
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

    def update(self, model_name: str, changes: FunctionChanges) -> FunctionRecord:
        """Record the new resources. There are no resource limits on a local process: memory,
        cpu, gpu memory, image and timeout are recorded only; env and extra args reach the
        worker's environment, so a running worker is stopped and started again with them (by
        its owner when another process spawned it: on its next task). A task it was running
        then ends as `worker lost`, or is retried (SD_MAX_ATTEMPTS)."""
        name = function_name(self.settings.function_prefix, model_name)
        with self._lock:
            try:
                record = self.functions.get(name)
            except NotFoundError:
                raise NotFoundError(f"model {model_name} has no inference function") from None
            record = record.model_copy(update={"resources": _resources(record, changes)})
            self.functions.put(record)
            if changes.env is None and changes.extra_args is None:
                return record
            if not self._running(record):
                return record  # the next spawn reads the new settings from the record
            owned = self._procs.pop(name, None)
            _stop(record.pid, owned)
            if owned is None:
                record = record.model_copy(update={"status": "stopped", "pid": None})
            else:
                proc = self._spawn(record)
                record = record.model_copy(update={"status": "active", "pid": proc.pid})
            self.functions.put(record)
            return record

    def list(self) -> list[FunctionRecord]:
        out = []
        for record in self.functions.list():
            if record.status == "active" and not self._running(record):
                record = record.model_copy(update={"status": "stopped", "pid": None})
            out.append(record)
        return out

    def check(self, model_name: str, changes: FunctionChanges) -> None:
        """The local stack has one fleet, worker processes, with no instances to choose."""
        for field, wire in (
            ("fleet", "fleet"),
            ("instance_type", "instanceType"),
            ("min_instances", "minInstances"),
            ("max_instances", "maxInstances"),
        ):
            if getattr(changes, field) is not None:
                raise InvalidInputError(wire, "the local stack runs each model in a worker process")

    def delete_all(self) -> builtins.list[str]:
        records = self.functions.list()
        for record in records:
            self.delete(record.model)
        return [record.name for record in records]

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


_RECORDED = {
    "memory_mb": "memoryMb",
    "cpu": "cpu",
    "gpu_memory_mb": "gpuMemoryMb",
    "image": "imageUri",
    "timeout_s": "timeoutS",
    "env": "env",
    "extra_args": "extraArgs",
}


def _resources(record: FunctionRecord, changes: FunctionChanges) -> dict[str, Any]:
    given = changes.model_dump(exclude_none=True)
    return {**record.resources, **{_RECORDED[k]: v for k, v in given.items()}}


def _is_worker(pid: int, name: str | None = None) -> bool:
    """Whether `pid` is a live worker (of function `name`): a pid alone may have been reused."""
    if Path("/proc/self/cmdline").exists():
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        # an exited worker its parent has not reaped yet (a zombie) has an empty cmdline
        return RUNTIME.encode() in args and (name is None or name.encode() in args)
    try:  # no /proc (macOS): the pid is the best evidence there is
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop(pid: int | None, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a worker and wait for it (SIGKILL after 10 s)."""
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        if not _is_worker(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
