"""A local worker process killed mid-task (`kill -9`, as an out-of-memory kill does it): the
fleet that spawned it sees it exit, so its task ends `failed: worker lost`, or goes back to the
queue under SD_MAX_ATTEMPTS, and its slots come back within moments, not when the heartbeat goes
stale (60 s). The worker is real (the local runtime); its handler runs the task on an engine
that never finishes (tests/functional/stuck_handler.py), so no model loads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy_function.app import lambda_handler as proxy
from sdcore.composition import get_services
from sdcore.domain.models import Model, ModelStatus, Task, TaskStatus
from sdcore.usecases.control import Outcome, dispatch_task
from tests.functional.events import Context, api

REPO = Path(__file__).resolve().parents[2]
BOUND_S = 5.0  # the bound: well under the heartbeat's 60 s


@pytest.fixture
def env(local_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # the worker imports the stand-in handler from the repository's tests package
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    svc = get_services()
    svc.settings.inference_handler = "tests.functional.stuck_handler.handler"
    assert svc.settings.heartbeat_stale_s >= 60  # only the exit can end the task in time
    svc.models.create(Model(name="demo", status=ModelStatus.UNLOADED, sha256="0" * 64, size=1,
                            key="models/checkpoint/demo/x", registered_at=0,
                            modified_at=0))  # fmt: skip
    yield local_env
    for record in svc.fleet.list():  # a stuck worker would finish its task before a SIGTERM
        if record.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
    svc.fleet.shutdown()  # type: ignore[attr-defined]


def _wait(what: str, ready: Callable[[], Any], bound_s: float) -> Any:
    deadline = time.monotonic() + bound_s
    while not (found := ready()):
        assert time.monotonic() < deadline, f"{what} within {bound_s} s"
        time.sleep(0.02)
    return found


def _running_task() -> tuple[Task, int]:
    """A task submitted and dispatched, running on its (just started) worker; and its pid."""
    svc = get_services()
    resp = proxy(api("POST", "/txt2img", {"prompt": "x", "steps": 2},
                     {"Request-Type": "async"}), Context())  # fmt: skip
    task_id = json.loads(resp["body"])["taskId"]
    [message] = svc.queue.receive(10, visibility_s=60)  # as control's event source takes it
    assert message.body["taskId"] == task_id
    assert dispatch_task(svc, task_id) is Outcome.DISPATCHED
    svc.queue.delete(message.receipt)
    # a cold worker imports the stack's modules first: a generous bound for a slow machine
    task = _wait(
        "the worker starts the task",
        lambda: (t := svc.tasks.get(task_id)).status is TaskStatus.RUNNING and t,
        60,
    )
    [record] = svc.fleet.list()
    assert record.pid is not None and svc.slots.active(svc.clock.now())
    return task, record.pid


def _lost(task_id: str, status: TaskStatus) -> Task:
    """The task once it is `status` and its slots are back (the next task may start)."""
    svc = get_services()

    def lost() -> Task | None:
        task = svc.tasks.get(task_id)
        done = task.status is status and not svc.slots.active(svc.clock.now())
        return task if done else None

    return _wait(f"the task is {status.value}, its slots free", lost, BOUND_S)


def test_a_worker_killed_mid_task_fails_its_task_and_frees_its_slots_at_once(env: Path) -> None:
    svc = get_services()
    task, pid = _running_task()

    os.kill(pid, signal.SIGKILL)

    ended = _lost(task.task_id, TaskStatus.FAILED)
    assert ended.error == "worker lost" and ended.finished_at is not None
    assert svc.fleet.list()[0].status == "stopped"


def test_with_attempts_left_the_task_is_retried_on_a_new_worker(env: Path) -> None:
    svc = get_services()
    svc.settings.max_attempts = 2
    task, pid = _running_task()

    os.kill(pid, signal.SIGKILL)

    requeued = _lost(task.task_id, TaskStatus.QUEUED)
    assert requeued.info["lastError"] == "worker lost (attempt 1)" and requeued.lease is None
    # back in control's queue: dispatched again, a new worker runs it (its second attempt)
    [message] = _wait("it is back in control's queue",
                      lambda: svc.queue.receive(10, visibility_s=60), BOUND_S)  # fmt: skip
    assert message.body == {"taskId": task.task_id}
    assert dispatch_task(svc, task.task_id) is Outcome.DISPATCHED
    again = _wait("a new worker runs it",
                  lambda: (t := svc.tasks.get(task.task_id)).status is TaskStatus.RUNNING and t,
                  60)  # fmt: skip
    assert again.attempts == 2 and svc.fleet.list()[0].pid not in (None, pid)
