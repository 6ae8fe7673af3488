"""Domain records: tasks, models, inference functions, slot leases."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

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


class TaskKind(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    EXTRAS = "extras"


class GenerationParams(BaseModel):
    """What to generate, in domain words. Images are object keys, never pixels."""

    kind: TaskKind
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    guidance: float = 7.0
    width: int | None = None
    height: int | None = None
    sampler: str = "Euler"
    # the webui's schedule type label ("Automatic", "Karras", ...); see sdcore.webui.samplers
    scheduler: str = "Automatic"
    # webui variation seeds: noise from `subseed` slerped in at `subseed_strength` (0 = off)
    subseed: int = -1
    subseed_strength: float = 0.0
    # draw the seed's noise as for this size (0 = off), so a seed keeps its picture when resized
    seed_resize_from_w: int = 0
    seed_resize_from_h: int = 0
    clip_skip: int = 1
    batch_size: int = 1
    batches: int = 1
    denoising_strength: float = 0.75
    init_images: list[str] = Field(default_factory=list)
    mask: str | None = None
    mask_blur: int = 4
    inpainting_mask_invert: bool = False
    # webui img2img: 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale
    resize_mode: int = 0
    # the masked area starts as: 0 fill, 1 original, 2 latent noise, 3 latent nothing
    inpainting_fill: int = 1
    inpaint_full_res: bool = False  # "only masked": inpaint the mask's region at full size
    inpaint_full_res_padding: int = 32
    upscale_factor: float = 2.0
    upscale_width: int | None = None
    upscale_height: int | None = None
    upscaler: str = "Lanczos"
    upscale_crop: bool = True  # to a size: cover it, then centre-crop to it (the webui default)
    upscaler_2: str = "None"
    upscaler_2_visibility: float = 0.0  # 0..1: how much of upscaler_2's result is blended in
    vae: str | None = None
    # txt2img's hires fix: a second, img2img pass at hr_scale (or hr_resize_x/y) times the size
    hires: bool = False
    hr_scale: float = 2.0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0  # 0: the first pass's steps
    hr_sampler: str = ""  # "": the first pass's sampler
    hr_scheduler: str = ""  # "": the first pass's schedule type
    hr_prompt: str = ""  # "": the first pass's prompt
    hr_negative_prompt: str = ""  # "": the first pass's negative prompt

    @property
    def image_count(self) -> int:
        return 1 if self.kind is TaskKind.EXTRAS else self.batch_size * self.batches


class Task(BaseModel):
    task_id: str
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
    # the slots the running task holds, so the reaper can give them back if its worker dies
    lease: Lease | None = None
    # 0 normal, 1 high: control hands a slot to a normal task only while no high one waits
    priority: int = Field(0, ge=0, le=1)


class ModelType(StrEnum):
    CHECKPOINT = "checkpoint"
    VAE = "vae"
    LORA = "lora"
    EMBEDDING = "embedding"
    UPSCALER = "upscaler"
    CONTROLNET = "controlnet"


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


class Lease(BaseModel):
    """Slots held by one running task; they come back on release or when the lease expires."""

    task_id: str
    model: str
    slots: list[str]
    expires_at: float


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class User(BaseModel):
    name: str
    role: Role = Role.USER
    created_at: float
    disabled: bool = False
    # the webui's per-caller options (sd_model_checkpoint, sd_vae) set by POST /sdapi/v1/options
    options: dict[str, str] = Field(default_factory=dict)
    # signs this user's webhook deliveries (X-Signature-256); shown once, at creation
    webhook_secret: str = ""


class ApiKey(BaseModel):
    """An API key, stored by its SHA-256 only (keys are 256-bit random, so no salt is needed)."""

    key_hash: str
    user: str
    prefix: str  # the first characters, to tell keys apart in listings
    created_at: float
    revoked: bool = False
