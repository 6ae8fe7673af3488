"""Answering questions about tasks and acting on them by id: a task and its image URLs, the
caller's history, waiting for an end, cancel and skip (the proxy's use cases)."""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sdcore.domain.models import (
    Task,
    TaskChanges,
    TaskStatus,
)
from sdcore.errors import InvalidInputError, NotFoundError, WaitDeferred
from sdcore.services import Services
from sdcore.usecases.notify import end_task

# a client-chosen task id
TASK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def scoped_task_id(owner: str, client_id: str) -> str:
    """The stored id of a task whose id its owner chose: each user's ids are their own, so
    one user can neither see nor squat another's (the suffix keeps it apart from generated
    ids, 32 hex digits, and from every other user's)."""
    return f"{client_id}-{hashlib.sha256(owner.encode()).hexdigest()[:16]}"


def get_task(
    svc: Services, task_id: str, owner: str | None = None, caller: str | None = None
) -> Task:
    """The task, if `owner` may see it (None: anyone). `task_id` is one the caller chose
    (`caller`, default `owner`, is who asks) or a stored id. Raises NotFoundError, also for
    a task of someone else: whether it exists is not theirs to know."""
    caller = owner if caller is None else caller
    task: Task | None = None
    if caller is not None and TASK_ID_RE.match(task_id):
        try:
            task = svc.tasks.get(scoped_task_id(caller, task_id))
        except NotFoundError:
            pass
    if task is None:
        task = svc.tasks.get(task_id)
    if owner is not None and task.owner != owner:
        raise NotFoundError(f"task {task_id} not found")
    return task


def _cursor(task: Task) -> str:
    raw = json.dumps([task.created_at, task.task_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _position(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, task_id = json.loads(raw)
        return float(created_at), str(task_id)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidInputError("cursor", "not a cursor from a previous page") from None


def list_tasks(
    svc: Services, owner: str, status: TaskStatus | None, limit: int, cursor: str | None
) -> tuple[list[Task], str | None]:
    """The owner's tasks, newest first, a page at a time. Raises InvalidInputError."""
    before = _position(cursor) if cursor else None
    tasks = svc.tasks.list_by_owner(owner, status, limit + 1, before)
    more = len(tasks) > limit
    tasks = tasks[:limit]
    return tasks, (_cursor(tasks[-1]) if more and tasks else None)


@dataclass(frozen=True)
class _WaitMode:
    defer: bool = False  # hand a wait to the caller (WaitDeferred) instead of waiting here
    resumed: str | None = None  # the task whose wait the caller has done: do not wait again


_WAIT: contextvars.ContextVar[_WaitMode | None] = contextvars.ContextVar("wait", default=None)
_NO_MODE = _WaitMode()


@contextmanager
def deferrable_waits(defer: bool, resumed: str | None) -> Iterator[None]:
    """Within: a wait for a task that has not ended raises WaitDeferred (with `defer`), and a
    request replayed after its wait (`resumed`: the task id) neither submits again nor waits.
    The local front door uses it so that a sync request's wait holds no function process."""
    token = _WAIT.set(_WaitMode(defer, resumed))
    try:
        yield
    finally:
        _WAIT.reset(token)


def resumed_task() -> str | None:
    """The task of a request replayed after its wait, if this is one."""
    return (_WAIT.get() or _NO_MODE).resumed


def wait_for_task(svc: Services, task_id: str, timeout_s: float) -> Task:
    """Poll the task's state (not a connection to a worker) until it ends or time runs out.

    Raises WaitDeferred where the caller waits instead (`deferrable_waits`)."""
    mode = _WAIT.get() or _NO_MODE
    if mode.resumed == task_id:
        return svc.tasks.get(task_id)
    if mode.defer and timeout_s > 0:
        task = svc.tasks.get(task_id)
        if not task.status.terminal:
            raise WaitDeferred(task_id, timeout_s)
        return task
    deadline = svc.clock.now() + timeout_s
    delay = 0.02
    while True:
        task = svc.tasks.get(task_id)
        remaining = deadline - svc.clock.now()
        if task.status.terminal or remaining <= 0:
            return task
        svc.clock.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.1)  # a read every 0.1 s at most: cheap, and answers promptly


def request_cancel(
    svc: Services, task_id: str, owner: str | None = None, caller: str | None = None
) -> Task:
    """Cancel a task: a queued one never runs, a running one stops at its next step.

    Idempotent: cancelling a finished task returns it unchanged. Raises NotFoundError.
    """
    task_id = get_task(svc, task_id, owner, caller).task_id
    task = svc.tasks.request_cancel(task_id)
    if task.status is TaskStatus.QUEUED:
        # None: it started meanwhile, and the worker sees the flag at its next step
        task = end_task(svc, task_id, task.cancel(svc.clock.now())) or svc.tasks.get(task_id)
    return task


def request_skip(svc: Services, task_id: str, owner: str | None = None) -> Task:
    """The webui's "skip": end the job (one n_iter batch) of the running task that the worker
    is on when it sees the request; its partial images are kept and the next job runs.

    A task that is not running is returned unchanged. Raises NotFoundError.
    """
    task = get_task(svc, task_id, owner)
    if task.status is TaskStatus.RUNNING:
        svc.tasks.update_running(task.task_id, TaskChanges(skip_requests=task.skip_requests + 1))
        task = svc.tasks.get(task.task_id)
    return task


@dataclass(frozen=True)
class TaskOutcome:
    """A task and the expiring GET URLs of its images."""

    task: Task
    urls: list[str]


def outcome(svc: Services, task: Task) -> TaskOutcome:
    """`task` with fresh URLs of its images."""
    urls = [svc.blobs.url(key, svc.settings.url_expires_s) for key in task.images]
    return TaskOutcome(task, urls)


def get_outcome(
    svc: Services, task_id: str, owner: str | None = None, caller: str | None = None
) -> TaskOutcome:
    """The task (if `owner` may see it, as `get_task`) with its image URLs."""
    return outcome(svc, get_task(svc, task_id, owner, caller))


def current_task(svc: Services, owner: str) -> Task | None:
    """The owner's task running now, else the one queued most recently; None when neither."""
    for status in (TaskStatus.RUNNING, TaskStatus.QUEUED):
        tasks = svc.tasks.list_by_owner(owner, status, limit=1)
        if tasks:
            return tasks[0]
    return None


def image_bytes(svc: Services, task: Task) -> list[bytes]:
    """The task's PNGs, as stored."""
    return [svc.blobs.get(key) for key in task.images]
