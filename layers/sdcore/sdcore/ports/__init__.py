"""Ports: what the use cases need from the outside world. Each store, queue and fleet has an AWS
and a local adapter; the engine port has the diffusers engine (`sdcore.engine`)."""

from __future__ import annotations

import builtins
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sdcore.domain.models import (
    ApiKey,
    FunctionChanges,
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
from sdcore.ports.engine import (
    BatchItem as BatchItem,
)
from sdcore.ports.engine import (
    ControlInput as ControlInput,
)
from sdcore.ports.engine import (  # noqa: F401 (the engine port, re-exported)
    Engine as Engine,
)
from sdcore.ports.engine import (
    EngineFactory as EngineFactory,
)
from sdcore.ports.engine import (
    EngineInputs as EngineInputs,
)
from sdcore.ports.engine import (
    EngineResult as EngineResult,
)
from sdcore.ports.engine import (
    NetworkFile as NetworkFile,
)
from sdcore.ports.engine import (
    StepAction as StepAction,
)
from sdcore.ports.engine import (
    StepCallback as StepCallback,
)
from sdcore.ports.engine import (
    StepInfo as StepInfo,
)
from sdcore.ports.parking import (
    ParkedTask as ParkedTask,
)
from sdcore.ports.parking import (
    ParkedTasks as ParkedTasks,
)


class TaskStore(ABC):
    @abstractmethod
    def create(self, task: Task, active_limit: int | None = None) -> None:
        """Store a new task; with `active_limit`, only while its owner has fewer than that
        many tasks queued or running, checked and stored atomically (exact under concurrency).

        Raises
        ------
        ConflictError
            A task with that id exists.
        OverCapError
            The owner is at `active_limit`.
        """

    @abstractmethod
    def get(self, task_id: str) -> Task:
        """Raises NotFoundError."""

    @abstractmethod
    def transition(self, task_id: str, change: TaskTransition) -> Task:
        """Apply `change` atomically: the task moves from one of `change.from_` to
        `change.to`, with `change.changes` set.

        Raises
        ------
        NotFoundError
            No such task.
        StaleWriteError
            The task was not in one of `change.from_` (someone else moved it first).
        """

    @abstractmethod
    def update_while(self, task_id: str, status: TaskStatus, changes: TaskChanges) -> bool:
        """Set `changes` only while the task is in `status`, atomically; False otherwise (or
        when there is no such task)."""

    def update_running(self, task_id: str, changes: TaskChanges) -> bool:
        """Set progress/heartbeat fields only while the task is running; False otherwise."""
        return self.update_while(task_id, TaskStatus.RUNNING, changes)

    @abstractmethod
    def claim_queued(self, task_id: str, change: TaskTransition) -> Task | None:
        """Apply `change` (a queued task's start) only while the task is queued, not handed to
        a function by control (no `dispatched_at`, no lease) and not asked to cancel, checked
        and written atomically: a worker taking a queued task along into its batch. Returns
        the task as written; None when any of that does not hold (or there is no such task).

        Raises
        ------
        ValueError
            `change` does not start from `queued`, or ends the task (a claim only starts one).
        """

    @abstractmethod
    def request_cancel(self, task_id: str) -> Task:
        """Flag the task for cancellation. Raises NotFoundError."""

    @abstractmethod
    def list_by_status(self, status: TaskStatus, limit: int = 100) -> list[Task]:
        """Tasks in `status`, oldest first."""

    @abstractmethod
    def list_created_since(self, status: TaskStatus, since: float, limit: int) -> list[Task]:
        """Tasks in `status` created at or after `since`, newest first, at most `limit`."""

    @abstractmethod
    def list_by_owner(
        self,
        owner: str,
        status: TaskStatus | None = None,
        limit: int = 20,
        before: tuple[float, str] | None = None,
    ) -> list[Task]:
        """The owner's tasks, newest first, optionally only in `status`, strictly before the
        (created_at, task_id) position `before` (the cursor of a previous page)."""

    @abstractmethod
    def count_active(self, owner: str, since: float) -> int:
        """How many of the owner's tasks created after `since` are queued or running."""

    @abstractmethod
    def count_waiting_high(self, since: float) -> int:
        """How many high-priority tasks (priority 1) created after `since` are queued."""


class ModelStore(ABC):
    @abstractmethod
    def create(self, model: Model) -> None:
        """Register a new model; a deleted one of the same name may be replaced.

        Raises
        ------
        ConflictError
            A model with that name exists and is not deleted.
        """

    @abstractmethod
    def get(self, name: str) -> Model:
        """Raises NotFoundError (also for deleted models)."""

    @abstractmethod
    def update(
        self,
        name: str,
        changes: ModelChanges,
        expected: set[ModelStatus] | None = None,
        pending_key: str | None = None,
    ) -> Model:
        """Set `changes`; if `expected` is given the model must be in one of those statuses, and
        if `pending_key` is given its pending version must have that key (the job writing is
        still the one in charge: not aborted nor replaced by a newer upload).

        Raises
        ------
        NotFoundError, StaleWriteError
        """

    @abstractmethod
    def list(self) -> list[Model]:
        """Every model not deleted, by name."""


class UserStore(ABC):
    @abstractmethod
    def create(self, user: User) -> None:
        """Raises ConflictError if the name is taken."""

    @abstractmethod
    def get(self, name: str) -> User:
        """Raises NotFoundError."""

    @abstractmethod
    def list(self) -> list[User]: ...

    @abstractmethod
    def update(self, name: str, changes: UserChanges) -> User:
        """Raises NotFoundError."""

    @abstractmethod
    def put_key(self, key: ApiKey) -> None: ...

    @abstractmethod
    def find_key(self, key_hash: str) -> ApiKey | None: ...

    @abstractmethod
    def list_keys(self, user: str) -> builtins.list[ApiKey]: ...

    @abstractmethod
    def revoke_keys(self, user: str) -> int:
        """Revoke every key of `user`; return how many were live."""

    @abstractmethod
    def hit(self, counter: str, expires_at: float) -> int:
        """Add one to a counter (created at 0, forgotten after `expires_at`); return the new
        value, atomically."""

    @abstractmethod
    def peek(self, counter: str) -> int:
        """A counter's value (0 when there is none)."""


class FunctionStore(ABC):
    @abstractmethod
    def put(self, record: FunctionRecord) -> None: ...

    @abstractmethod
    def get(self, name: str) -> FunctionRecord:
        """Raises NotFoundError."""

    @abstractmethod
    def list(self) -> list[FunctionRecord]: ...

    @abstractmethod
    def delete(self, name: str) -> None: ...

    @abstractmethod
    def touch(self, name: str, last_used: float) -> None:
        """Set only `last_used` (a put of a record read earlier could undo an admin's update);
        no error if the record is gone."""


class SlotStore(ABC):
    @abstractmethod
    def acquire(
        self, task_id: str, model: str, now: float, lease_s: float, global_cap: int, model_cap: int
    ) -> Lease | None:
        """Take one global slot and one slot of `model`, atomically, or nothing (None)."""

    @abstractmethod
    def renew(self, lease: Lease, expires_at: float) -> bool:
        """Extend a lease still held; False if it was lost."""

    @abstractmethod
    def release(self, lease: Lease) -> None:
        """Give the slots back (no error if already gone)."""

    @abstractmethod
    def active(self, now: float) -> list[Lease]:
        """Leases not expired at `now`."""


class Message(BaseModel):
    message_id: str
    receipt: str
    body: dict[str, Any]
    receive_count: int = 1


class Queue(ABC):
    @abstractmethod
    def send(self, body: dict[str, Any], delay_s: float = 0, priority: int = 0) -> str:
        """Enqueue; return the message id. Where the queue can order by `priority` (the local
        one can, SQS cannot) a higher one is received first among visible messages."""

    @abstractmethod
    def receive(self, max_messages: int = 10, visibility_s: float = 30) -> list[Message]:
        """Messages now visible, hidden for `visibility_s` until deleted."""

    @abstractmethod
    def delete(self, receipt: str) -> None: ...

    @abstractmethod
    def change_visibility(self, receipt: str, visibility_s: float) -> None: ...

    def wake(self, count: int) -> int:
        """Make up to `count` delayed, never-received messages deliverable now (highest priority,
        earliest first); return how many. Control calls it when a slot frees and there is no
        parked store (`Services.parked`: tasks over a cap are parked and woken instead), so
        tasks waiting out a back-off start at once. SQS cannot shorten a delay: there (this
        default) waiting tasks are picked up when their back-off ends."""
        return 0


class UploadedPart(BaseModel):
    part_number: int
    etag: str


class MultipartUpload(BaseModel):
    """A multipart upload not completed nor aborted yet."""

    key: str
    upload_id: str
    initiated: float  # epoch seconds


class BlobStore(ABC):
    @abstractmethod
    def put(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Raises NotFoundError."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int:
        """Raises NotFoundError."""

    @abstractmethod
    def iter_chunks(self, key: str, chunk_size: int = 8 * 1024 * 1024) -> Iterator[bytes]:
        """Stream an object. Raises NotFoundError."""

    @abstractmethod
    def download(self, key: str, dest: Path) -> None:
        """Copy an object to a local file. Raises NotFoundError."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; return how many."""

    @abstractmethod
    def url(self, key: str, expires_s: int) -> str:
        """An expiring GET URL."""

    def local_path(self, key: str) -> Path | None:
        """The object as a local file, where the store keeps it as one (no copy needed)."""
        return None

    @abstractmethod
    def create_multipart(self, key: str) -> str:
        """Start a multipart upload; return its id."""

    @abstractmethod
    def part_url(self, key: str, upload_id: str, part_number: int, expires_s: int) -> str:
        """An expiring URL that takes one part by HTTP PUT and answers its ETag."""

    @abstractmethod
    def complete_multipart(self, key: str, upload_id: str, parts: list[UploadedPart]) -> None:
        """Join the parts in order into the object.

        Raises
        ------
        InvalidInputError
            A part is missing or its ETag does not match what was received.
        NotFoundError
            No such upload.
        """

    @abstractmethod
    def list_parts(self, key: str, upload_id: str) -> list[UploadedPart]:
        """Parts received so far, by part number. Raises NotFoundError (no such upload)."""

    @abstractmethod
    def abort_multipart(self, key: str, upload_id: str) -> None: ...

    @abstractmethod
    def list_multipart(self, prefix: str) -> list[MultipartUpload]:
        """Multipart uploads in progress under `prefix` (to sweep abandoned ones)."""

    @abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store an object of unknown size from a stream of chunks, never all in memory; a
        reader never sees it half written. Returns its size."""


class WorkerFleet(ABC):
    """Inference functions, one per checkpoint, created on first use."""

    @abstractmethod
    def ensure(self, model: Model) -> FunctionRecord:
        """The function of `model`, created if missing. It may not be active yet."""

    @abstractmethod
    def invoke(self, record: FunctionRecord, payload: dict[str, Any]) -> None:
        """Hand one task to the function, asynchronously and durably."""

    @abstractmethod
    def delete(self, model_name: str) -> None:
        """Remove the function of `model_name` (no error if there is none)."""

    @abstractmethod
    def update(self, model_name: str, changes: FunctionChanges) -> FunctionRecord:
        """Apply an admin's changes to the function of `model_name` and record its new resources.

        Raises
        ------
        NotFoundError
            `model_name` has no function.
        InvalidInputError
            The backend refused a value (a memory size or timeout out of its range).
        """

    @abstractmethod
    def list(self) -> list[FunctionRecord]: ...

    @abstractmethod
    def delete_all(self) -> builtins.list[str]:
        """Remove every function of this deployment (not another's); returns their names."""

    def refuses(self, model: Model) -> str | None:
        """Why this fleet cannot serve `model` (too large for its functions), or None. Asked at
        submit, so a task it could never run is refused at once, not failed after a wait."""
        return None

    def check(self, model_name: str, changes: FunctionChanges) -> None:
        """Raises InvalidInputError (naming it) for a setting this fleet does not have."""
        return None  # this fleet takes every change

    # What the fleet of `model_name`'s function says of it; None: the settings' value.
    def capacity(self, model_name: str) -> int | None:
        """Tasks it may run at once (an endpoint: instances x invocations each)."""
        return None

    def max_task_work(self, model_name: str) -> int | None:
        """Most pixel-steps one task may run on it (0: no limit)."""
        return None

    def start_timeout_s(self, model_name: str) -> float | None:
        """How long a task handed to it may wait to start (waking from zero takes minutes)."""
        return None


def function_name(prefix: str, model_name: str) -> str:
    """Function names come from a hash of the model name: model names may hold any character."""
    return f"{prefix}-{hashlib.sha256(model_name.encode()).hexdigest()[:16]}"
