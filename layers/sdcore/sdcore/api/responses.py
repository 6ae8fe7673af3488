"""Response bodies of the native and admin routes, in the API's wire names, built once from the
domain records, so `/openapi.json` documents every body. (The webui's own shapes are in
`webui_responses`.)"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from sdcore.api.wire import wire_parameters
from sdcore.clock import iso
from sdcore.domain.models import (
    ApiKey,
    FunctionRecord,
    Model,
    PendingVersion,
    Task,
    TaskStatus,
    User,
)
from sdcore.usecases.tasks import TaskOutcome


class Health(BaseModel):
    status: str = "ok"


class Starting(BaseModel):
    """Up, but not ready for the requests it will take: what it waits for."""

    status: str = "starting"
    detail: str


class Timings(BaseModel):
    """ISO-8601 UTC; startedAt/finishedAt bracket the inference work."""

    createdAt: str | None
    startedAt: str | None
    finishedAt: str | None

    @classmethod
    def of(cls, task: Task) -> Timings:
        return cls(
            createdAt=iso(task.created_at),
            startedAt=iso(task.started_at),
            finishedAt=iso(task.finished_at),
        )


class TaskAccepted(BaseModel):
    """A task that is queued or running: poll GET /tasks/{taskId}/result."""

    taskId: str
    status: TaskStatus

    @classmethod
    def of(cls, task: Task) -> TaskAccepted:
        return cls(taskId=task.public_id, status=task.status)


class TaskResult(BaseModel):
    """A task: its status, images (object keys and expiring URLs, never base64), the request's
    parameters in webui words, what the run reported (`info`), and why it failed."""

    taskId: str
    status: TaskStatus
    images: list[str]
    urls: list[str] = Field(description="expiring GET URLs of `images`")
    md5: list[str]
    parameters: dict[str, Any]
    info: dict[str, Any]
    error: str | None
    attempts: int
    timings: Timings

    @classmethod
    def of(cls, done: TaskOutcome) -> TaskResult:
        task = done.task
        return cls(
            taskId=task.public_id,
            status=task.status,
            images=task.images,
            urls=done.urls,
            md5=task.image_md5,
            parameters=wire_parameters(task),
            info=task.info,
            error=task.error,
            attempts=task.attempts,
            timings=Timings.of(task),
        )


class TaskSummary(BaseModel):
    """One task of the caller's history."""

    taskId: str
    kind: str
    status: TaskStatus
    model: str
    prompt: str
    seed: int
    parameters: dict[str, Any]
    images: list[str]
    md5: list[str]
    error: str | None
    timings: Timings

    @classmethod
    def of(cls, task: Task) -> TaskSummary:
        return cls(
            taskId=task.public_id,
            kind=task.kind.value,
            status=task.status,
            model=task.model,
            prompt=task.params.prompt,
            seed=task.info.get("seed", task.params.seed),
            parameters=wire_parameters(task),
            images=task.images,
            md5=task.image_md5,
            error=task.error,
            timings=Timings.of(task),
        )


class TaskList(BaseModel):
    tasks: list[TaskSummary]
    cursor: str | None = Field(description="pass as ?cursor= for the next page; null: no more")


class ProgressState(BaseModel):
    samplingStep: int
    samplingSteps: int
    jobNo: int
    jobCount: int
    interrupted: bool
    skipped: bool


class TaskProgress(BaseModel):
    taskId: str
    status: TaskStatus
    progress: float = Field(description="0..1")
    etaRelative: float = Field(description="seconds left")
    state: ProgressState
    currentImage: str | None = Field(
        description="base64 PNG preview while running (SD_PREVIEW_EVERY > 0), else null"
    )

    @classmethod
    def of(cls, task: Task) -> TaskProgress:
        progress = 1.0 if task.status is TaskStatus.SUCCEEDED else task.progress
        return cls(
            taskId=task.public_id,
            status=task.status,
            progress=progress,
            etaRelative=task.eta_s if task.eta_s is not None else 0.0,
            state=ProgressState(
                samplingStep=task.sampling_step,
                samplingSteps=task.sampling_steps,
                jobNo=task.job_no,
                jobCount=task.job_count,
                interrupted=task.cancel_requested or task.status is TaskStatus.CANCELLED,
                skipped=task.skip_requests > 0,
            ),
            currentImage=task.current_image,
        )


class CancelResult(BaseModel):
    taskId: str
    status: TaskStatus
    cancelRequested: bool = True


class ModelListing(BaseModel):
    """A model as users see it."""

    type: str
    name: str
    status: str = Field(description="registering, loading, loaded, unloaded or deleted")
    sha256: str
    size: int
    registeredTime: str | None
    lastModificationTime: str | None
    error: str | None

    @classmethod
    def of(cls, m: Model) -> ModelListing:
        return cls(
            type=m.type.value,
            name=m.name,
            status=m.status.value,
            sha256=m.sha256,
            size=m.size,
            registeredTime=iso(m.registered_at),
            lastModificationTime=iso(m.modified_at),
            error=m.error,
        )


# --- admin -----------------------------------------------------------------------------------


class PendingInfo(BaseModel):
    """A version on its way in: an upload, or a job (verify, import) and its progress."""

    stage: str
    sha256: str | None
    size: int | None
    bytesDone: int
    progress: float | None
    source: str | None
    config: str
    error: str | None
    startedTime: str | None
    updatedTime: str | None

    @classmethod
    def of(cls, p: PendingVersion) -> PendingInfo:
        return cls(
            stage=p.stage.value,
            sha256=p.sha256 or None,
            size=p.size or None,
            bytesDone=p.bytes_done,
            progress=round(min(1.0, p.bytes_done / p.size), 4) if p.size else None,
            source=p.source,
            config=p.config,
            error=p.error,
            startedTime=iso(p.started_at),
            updatedTime=iso(p.updated_at),
        )


class AdminModel(BaseModel):
    """A model as admins see it: its current version and the one on its way in."""

    name: str
    type: str
    status: str
    sha256: str
    size: int
    format: str | None
    config: str
    version: int
    details: dict[str, Any]
    error: str | None
    pending: PendingInfo | None
    registeredTime: str | None
    lastModificationTime: str | None

    @classmethod
    def of(cls, m: Model) -> AdminModel:
        return cls(
            name=m.name,
            type=m.type.value,
            status=m.status.value,
            sha256=m.sha256,
            size=m.size,
            format=m.format.value if m.format else None,
            config=m.config,
            version=m.version,
            details=m.details,
            error=m.error,
            pending=PendingInfo.of(m.pending) if m.pending is not None else None,
            registeredTime=iso(m.registered_at),
            lastModificationTime=iso(m.modified_at),
        )


class PartUrl(BaseModel):
    partNumber: int
    url: str


class UploadPlanBody(BaseModel):
    """Where to PUT each part of the file (presigned URLs); then POST .../complete."""

    name: str
    status: str
    uploadId: str
    partSize: int
    parts: list[PartUrl]


class ReceivedPart(BaseModel):
    partNumber: int
    etag: str


class UploadStatusBody(BaseModel):
    """An upload in progress and the parts received so far (to resume it)."""

    name: str
    uploadId: str | None
    partSize: int
    size: int
    sha256: str
    parts: list[ReceivedPart]


class FunctionInfo(BaseModel):
    """One inference function (it serves one checkpoint)."""

    name: str
    model: str
    resources: dict[str, Any]
    status: str
    lastUsed: str | None
    pid: int | None = Field(description="a local worker process; null on AWS")
    createdTime: str | None

    @classmethod
    def of(cls, f: FunctionRecord) -> FunctionInfo:
        return cls(
            name=f.name,
            model=f.model,
            resources=f.resources,
            status=f.status,
            lastUsed=iso(f.last_used),
            pid=f.pid,
            createdTime=iso(f.created_at),
        )


class UserInfo(BaseModel):
    name: str
    role: str
    disabled: bool
    createdTime: str | None

    @classmethod
    def of(cls, u: User) -> UserInfo:
        return cls(
            name=u.name, role=u.role.value, disabled=u.disabled, createdTime=iso(u.created_at)
        )


class UserCreated(UserInfo):
    """A new user, with the API key and webhook secret shown this once."""

    apiKey: str
    webhookSecret: str


class KeyInfo(BaseModel):
    prefix: str
    revoked: bool
    createdTime: str | None

    @classmethod
    def of(cls, k: ApiKey) -> KeyInfo:
        return cls(prefix=k.prefix, revoked=k.revoked, createdTime=iso(k.created_at))


class UserListing(UserInfo):
    keys: list[KeyInfo]


class NewKey(BaseModel):
    """Another API key for a user, shown this once."""

    name: str
    apiKey: str
