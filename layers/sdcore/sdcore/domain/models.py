"""Domain records (tasks, models, inference functions, slot leases, users), and their changes
as typed updates: a state change is asked of the record (`task.cancel(now)`), which answers what
to write; a port writes it atomically (`svc.tasks.transition(task_id, change)`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sdcore.domain.params import GenerationParams as GenerationParams
from sdcore.domain.params import TaskKind as TaskKind

# a checkpoint's config "auto": the engine picks the shipped config of the file's architecture
# (SD 1.x, 2.x or XL, from its keys), as the webui does
AUTO_CONFIG = "auto"


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})


# Objects a request may name as an input image: uploads and earlier results, never models.
INPUT_PREFIXES = ("inputs/", "outputs/")
CANCELLED_BY_REQUEST = "cancelled by request"


@dataclass
class ImageInput:
    """An input image as the caller gave it: decoded bytes, the key of a stored object, or an
    http(s) URL to fetch."""

    field: str
    data: bytes | None = None
    key: str | None = None
    url: str | None = None


class Lease(BaseModel):
    """Slots held by one running task; they come back on release or when the lease expires."""

    task_id: str
    model: str
    slots: list[str]
    expires_at: float


class _Changes(BaseModel):
    """Fields of a record to set: only those given are written (None clears a field)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class TaskChanges(_Changes):
    """A task's fields a transition or a progress write sets."""

    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    progress: float = 0.0
    sampling_step: int = 0
    sampling_steps: int = 0
    job_no: int = 0
    job_count: int = 0
    eta_s: float | None = None
    current_image: str | None = None
    skip_requests: int = 0
    attempts: int = 0
    lease: Lease | None = None
    images: list[str] = Field(default_factory=list)
    image_md5: list[str] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    dispatched_at: float | None = None


class TaskTransition(BaseModel):
    """Move a task from one of `from_` to `to`, setting `changes`, or not at all."""

    model_config = ConfigDict(frozen=True)

    from_: frozenset[TaskStatus]
    to: TaskStatus
    changes: TaskChanges = TaskChanges()

    @classmethod
    def between(
        cls, from_: set[TaskStatus] | frozenset[TaskStatus], to: TaskStatus, **changes: Any
    ) -> TaskTransition:
        """A transition setting `changes` (validated as TaskChanges: a typo is an error)."""
        return cls(from_=frozenset(from_), to=to, changes=TaskChanges(**changes))


class Task(BaseModel):
    task_id: str  # the stored id; a client-chosen one is stored scoped to its owner
    client_id: str | None = None  # the id the client chose, which its owner uses
    kind: TaskKind
    model: str
    owner: str = ""
    webhook: str | None = None
    status: TaskStatus = TaskStatus.QUEUED
    params: GenerationParams
    images: list[str] = Field(default_factory=list)
    image_md5: list[str] = Field(default_factory=list)
    info: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    progress: float = 0.0
    sampling_step: int = 0
    sampling_steps: int = 0
    job_no: int = 0
    job_count: int = 0
    eta_s: float | None = None
    cancel_requested: bool = False
    # webui "skip": each request ends the job (one n_iter batch) running when the worker sees it
    skip_requests: int = 0
    # live preview of the running task: a base64 PNG from a cheap latent approximation, written
    # with progress when SD_PREVIEW_EVERY is set; cleared when the task ends
    current_image: str | None = None
    keep: bool = True
    attempts: int = 0
    expires_at: int | None = None
    # the slots the task holds once dispatched, so the reaper can give them back if its worker
    # dies (or never starts it)
    lease: Lease | None = None
    # when control last handed the queued task to its function: a task that is still queued
    # long after it is ended by the reaper (its worker died while loading, or never ran)
    dispatched_at: float | None = None
    # 0 normal, 1 high: control hands a slot to a normal task only while no high one waits
    priority: int = Field(0, ge=0, le=1)

    @property
    def public_id(self) -> str:
        """The id the owner knows the task by: theirs if they chose one."""
        return self.client_id or self.task_id

    # --- state changes -------------------------------------------------------------------------

    def cancel(self, now: float) -> TaskTransition:
        """A queued task cancelled: it never runs."""
        return TaskTransition.between(
            {TaskStatus.QUEUED}, TaskStatus.CANCELLED, finished_at=now, error=CANCELLED_BY_REQUEST
        )

    def fail(self, reason: str, now: float) -> TaskTransition:
        """A queued task that cannot run (its model went away, failed to load)."""
        return TaskTransition.between(
            {TaskStatus.QUEUED}, TaskStatus.FAILED, error=reason, finished_at=now
        )

    def start(self, now: float, lease: Lease | None) -> TaskTransition:
        """A queued task taken by its worker, holding `lease`."""
        return TaskTransition.between(
            {TaskStatus.QUEUED},
            TaskStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=self.attempts + 1,
            lease=lease,
        )

    def end(self, to: TaskStatus, now: float, changes: TaskChanges | None = None) -> TaskTransition:
        """A running task ended as `to` (succeeded, failed or cancelled) with `changes`."""
        fields = {**(changes.fields() if changes else {}), "finished_at": now}
        return TaskTransition.between({TaskStatus.RUNNING}, to, **fields)

    def dispatched(self, now: float, lease: Lease) -> TaskChanges:
        """What control records when it hands the queued task to its function."""
        return TaskChanges(dispatched_at=now, lease=lease)

    def never_started(self, now: float, waited_s: float) -> TaskTransition:
        """A dispatched task its function never started: its worker died while loading (out of
        memory, a bad file), or never ran."""
        reason = f"the inference function did not start the task within {waited_s:g} s"
        return TaskTransition.between(
            {TaskStatus.QUEUED}, TaskStatus.FAILED, error=reason, finished_at=now
        )

    def abort(self, reason: str, now: float) -> TaskTransition:
        """A queued or running task whose function failed outside the task's own code (the
        invocation was lost, the process was killed)."""
        return TaskTransition.between(
            {TaskStatus.QUEUED, TaskStatus.RUNNING}, TaskStatus.FAILED, error=reason,
            finished_at=now,
        )  # fmt: skip

    def lose(self, now: float) -> TaskTransition:
        """A running task whose worker was lost, with no attempt left."""
        return TaskTransition.between(
            {TaskStatus.RUNNING}, TaskStatus.FAILED, error="worker lost", finished_at=now
        )

    def requeue(self, reason: str) -> TaskTransition:
        """A running task whose worker was lost, back in the queue for another attempt: the
        run's fields cleared, `reason` kept in its info."""
        return TaskTransition.between(
            {TaskStatus.RUNNING},
            TaskStatus.QUEUED,
            started_at=None,
            heartbeat_at=None,
            lease=None,
            progress=0.0,
            sampling_step=0,
            sampling_steps=0,
            job_no=0,
            eta_s=None,
            dispatched_at=None,
            info={**self.info, "lastError": reason},
        )


class ModelType(StrEnum):
    CHECKPOINT = "checkpoint"
    VAE = "vae"
    LORA = "lora"
    EMBEDDING = "embedding"
    UPSCALER = "upscaler"
    FACE_RESTORER = "face_restorer"
    CONTROLNET = "controlnet"
    CAPTIONER = "captioner"  # BLIP captioning + CLIP ranking folder (webui interrogate "clip")
    TAGGER = "tagger"  # multi-label image classifier folder (interrogate "deepdanbooru")
    SEGMENTER = "segmenter"  # semantic segmentation folder (POST /edits/remove)
    PREPROCESSOR = "preprocessor"  # depth estimation folder (ControlNet depth modules)


class ModelStatus(StrEnum):
    REGISTERING = "registering"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADED = "unloaded"
    DELETED = "deleted"


READY = frozenset({ModelStatus.LOADING, ModelStatus.LOADED, ModelStatus.UNLOADED})


class ModelFormat(StrEnum):
    SAFETENSORS = "safetensors"
    DIFFUSERS = "diffusers"
    PICKLE = "pickle"  # a torch .ckpt, only with SD_ALLOW_PICKLE


class ModelStage(StrEnum):
    """What a version on its way in is doing."""

    UPLOADING = "uploading"  # parts are coming in (presigned PUTs)
    VERIFYING = "verifying"  # a job reads it back: size, sha256, format, type
    IMPORTING = "importing"  # a job downloads it from a URL, then verifies it


class PendingVersion(BaseModel):
    """A version of a model on its way in (upload or import). It replaces the current version
    only once verified; until then tasks keep using the current one (if there is one)."""

    stage: ModelStage
    sha256: str = ""  # "" for an import that gave none: the digest of what arrives
    size: int = 0  # 0 while unknown (an import without Content-Length)
    key: str
    config: str = AUTO_CONFIG
    upload_id: str | None = None
    part_size: int = 0
    source: str | None = None  # the URL of an import
    bytes_done: int = 0  # progress of the job at hand (received, downloaded or verified)
    started_at: float
    updated_at: float  # the job's last sign of life: the sweep ends one that stopped
    error: str | None = None  # why it failed (it then never replaces the current version)


class Model(BaseModel):
    name: str
    type: ModelType = ModelType.CHECKPOINT
    status: ModelStatus = ModelStatus.REGISTERING
    # the current version (for a model still registering: the one declared)
    sha256: str
    size: int
    key: str
    format: ModelFormat | None = None
    config: str = AUTO_CONFIG
    error: str | None = None  # why a model that never became usable is not
    version: int = 1  # the current version's number; an update adds one
    # what its check found (a LoRA's rank, an embedding's vectors, an upscaler's scale)
    details: dict[str, Any] = Field(default_factory=dict)
    pending: PendingVersion | None = None
    registered_at: float
    modified_at: float

    @property
    def usable(self) -> bool:
        return self.status in READY and self.error is None


class ModelChanges(_Changes):
    """A model's fields an update sets."""

    status: ModelStatus = ModelStatus.REGISTERING
    sha256: str = ""
    size: int = 0
    key: str = ""
    format: ModelFormat | None = None
    config: str = AUTO_CONFIG
    error: str | None = None
    version: int = 1
    details: dict[str, Any] = Field(default_factory=dict)
    pending: PendingVersion | None = None
    modified_at: float = 0.0


class FunctionRecord(BaseModel):
    """One inference function: it serves exactly one checkpoint."""

    name: str
    model: str
    status: str = "pending"  # pending | active | failed | stopped
    resources: dict[str, Any] = Field(default_factory=dict)
    pid: int | None = None
    created_at: float
    last_used: float | None = None


class FunctionChanges(BaseModel):
    """An admin's changes to one inference function; None leaves a setting as it is.

    `env` replaces the variables the admin set before (the function's own SD_* variables are
    kept); `extra_args` reach the worker as SD_EXTRA_ARGS."""

    memory_mb: int | None = None
    cpu: float | None = None
    gpu_memory_mb: int | None = None
    image: str | None = None
    timeout_s: int | None = None
    env: dict[str, str] | None = None
    extra_args: list[str] | None = None
    # which fleet serves the model ("lambda" or "sagemaker" on AWS): a change moves it there
    fleet: str | None = None
    # a SageMaker endpoint's instance type and instance counts (min 0: it scales to zero)
    instance_type: str | None = None
    min_instances: int | None = None
    max_instances: int | None = None


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class PromptStyle(BaseModel):
    """A named prompt style, as the webui's styles: `{prompt}` in `prompt` marks where the
    request's prompt goes (else the style is appended after ", "); `negative_prompt` likewise."""

    name: str
    prompt: str = ""
    negative_prompt: str = ""


class User(BaseModel):
    name: str
    role: Role = Role.USER
    created_at: float
    disabled: bool = False
    # the webui settings this caller set (POST /sdapi/v1/options), checked against
    # sdcore.webui.options; the rest read as their defaults
    options: dict[str, Any] = Field(default_factory=dict)
    # the caller's prompt styles (a request's `styles` applies them by name)
    styles: list[PromptStyle] = Field(default_factory=list)
    # signs this user's webhook deliveries (X-Signature-256); shown once, at creation
    webhook_secret: str = ""
    # the NSFW censor this user asked for (off/flag/blur/block); the deployment's SD_CENSOR
    # applies when it is stricter
    censor: str | None = None


class UserChanges(_Changes):
    """A user's fields an update sets."""

    disabled: bool = False
    options: dict[str, Any] = Field(default_factory=dict)
    styles: list[PromptStyle] = Field(default_factory=list)
    censor: str | None = None


class ApiKey(BaseModel):
    """An API key, stored by its SHA-256 only (keys are 256-bit random, so no salt is needed)."""

    key_hash: str
    user: str
    prefix: str  # the first characters, to tell keys apart in listings
    created_at: float
    revoked: bool = False
