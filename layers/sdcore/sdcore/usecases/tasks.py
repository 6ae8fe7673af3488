"""Submitting tasks and answering questions about them (the proxy's use cases)."""

from __future__ import annotations

import base64
import binascii
import io
import json
import re

from PIL import Image, UnidentifiedImageError

from sdcore.domain.models import (
    INPUT_PREFIXES,
    GenerationParams,
    ImageInput,
    Model,
    ModelType,
    Task,
    TaskChanges,
    TaskKind,
    TaskStatus,
)
from sdcore.errors import ConflictError, InvalidInputError, NotFoundError
from sdcore.guards.netguard import check_url, fetch_url
from sdcore.services import Services
from sdcore.usecases.notify import end_task
from sdcore.webui.prompt_syntax import extract_networks
from sdcore.webui.samplers import (
    HIRES_IMAGE_UPSCALERS,
    HIRES_LATENT_UPSCALERS,
    NO_UPSCALER,
    UPSCALERS,
)

MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGE_BYTES = 10 * 1024 * 1024
TASK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def _check_image(field: str, data: bytes) -> None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise InvalidInputError(field, f"image is {img.width}x{img.height}, too large")
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InvalidInputError(field, "not a readable image (PNG, JPEG or WebP)") from exc


def _own_key(owner: str, key: str, is_admin: bool) -> bool:
    if ".." in key or not key.startswith(INPUT_PREFIXES):
        return False
    return is_admin or key.split("/", 2)[1:2] == [owner]


def _store_inputs(
    svc: Services, owner: str, is_admin: bool, task_id: str, inputs: list[ImageInput]
) -> list[str]:
    keys: list[str] = []
    for n, item in enumerate(inputs):
        if item.key is not None:
            if not _own_key(owner, item.key, is_admin):
                raise InvalidInputError(
                    item.field, f"key must be one of your inputs/{owner}/ or outputs/{owner}/"
                )
            if not svc.blobs.exists(item.key):
                raise InvalidInputError(item.field, f"no object {item.key!r}")
            keys.append(item.key)
            continue
        data = item.data
        if item.url is not None:
            data = fetch_url(
                item.url,
                field=item.field,
                allow_private=svc.settings.allow_private_urls,
                max_bytes=MAX_IMAGE_BYTES,
                timeout_s=10.0,
            )
        assert data is not None
        _check_image(item.field, data)
        key = f"inputs/{owner}/{task_id}/{n}.png"
        svc.blobs.put(key, data, "image/png")
        keys.append(key)
    return keys


def resolve_model(
    svc: Services,
    name: str | None,
    kind: ModelType = ModelType.CHECKPOINT,
    field: str = "stable_diffusion_model",
) -> str:
    """The model of `kind` a task will use (default: the default checkpoint).

    Raises NotFoundError / ConflictError when unusable, InvalidInputError (naming `field`) when
    it is a model of another type.
    """
    model_name = name or svc.settings.default_model
    model = svc.models.get(model_name)
    if model.type is not kind:
        raise InvalidInputError(field, f"{model_name} is a {model.type.value}, not a {kind.value}")
    if not model.usable:
        reason = model.error or f"status is {model.status.value}"
        raise ConflictError(f"model {model_name} is not ready: {reason}")
    return model_name


def resolve_network(svc: Services, name: str, kind: ModelType, field: str) -> Model:
    """A usable LoRA, VAE or embedding called `name`.

    Raises
    ------
    InvalidInputError
        No model of that name, or one of another type (naming the request's `field`).
    ConflictError
        It is not ready (still uploading, failed verification).
    """
    try:
        model = svc.models.get(name)
    except NotFoundError:
        raise InvalidInputError(field, f"unknown {kind.value} {name!r}") from None
    if model.type is not kind:
        raise InvalidInputError(field, f"{name} is a {model.type.value}, not a {kind.value}")
    if not model.usable or model.format is None:
        reason = model.error or f"status is {model.status.value}"
        raise ConflictError(f"{kind.value} {name} is not ready: {reason}")
    return model


def _check_networks(svc: Services, params: GenerationParams) -> None:
    """The task's VAE and `<lora:...>` checked at submit, not after it waited for a worker."""
    if params.vae is not None:
        resolve_network(svc, params.vae, ModelType.VAE, "sd_vae")
    if params.kind is not TaskKind.EXTRAS:
        for name, _weight in extract_networks(params.prompt, "prompt")[1]:
            resolve_network(svc, name, ModelType.LORA, "prompt")
    for name, field in registered_upscalers(params):
        resolve_network(svc, name, ModelType.UPSCALER, field)


def registered_upscalers(params: GenerationParams) -> list[tuple[str, str]]:
    """(name, field) of the upscaler models a task names (not the built-in ones): extras'
    `upscaler_1`/`upscaler_2`, txt2img's hires `hr_upscaler`."""
    if params.kind is TaskKind.TXT2IMG and params.hires:
        builtin = (*HIRES_LATENT_UPSCALERS, *HIRES_IMAGE_UPSCALERS)
        return [] if params.hr_upscaler in builtin else [(params.hr_upscaler, "hr_upscaler")]
    if params.kind is not TaskKind.EXTRAS:
        return []
    named = [(params.upscaler, "upscaler_1")]
    if params.upscaler_2_visibility > 0:
        named.append((params.upscaler_2, "upscaler_2"))
    return [(n, f) for n, f in named if n not in (*UPSCALERS, NO_UPSCALER)]


def submit_task(
    svc: Services,
    params: GenerationParams,
    model_name: str | None,
    images: list[ImageInput],
    mask: ImageInput | None = None,
    keep: bool = True,
    owner: str = "anonymous",
    is_admin: bool = False,
    webhook: str | None = None,
    task_id: str | None = None,
    priority: int = 0,
) -> Task:
    """Record a task and queue it for control. `priority` 1 (high) runs before 0 (normal).

    A client-chosen `task_id` makes the submit idempotent: repeating it returns the task it
    created, never a second one.

    Raises
    ------
    InvalidInputError
        An input image is unreadable or names a missing object; a bad task id or webhook URL.
    NotFoundError, ConflictError
        The checkpoint does not exist or is not ready; the task id belongs to someone else.
    """
    if task_id is not None:
        if not TASK_ID_RE.match(task_id):
            raise InvalidInputError("taskId", "8-64 letters, digits, '_' or '-'")
        try:
            existing = svc.tasks.get(task_id)
        except NotFoundError:
            existing = None
        if existing is not None:
            if existing.owner != owner:
                raise ConflictError(f"task id {task_id} is taken")
            return existing
    if webhook is not None:
        check_url(webhook, field="webhook", allow_private=svc.settings.allow_private_urls)
    model = resolve_model(svc, model_name)
    _check_networks(svc, params)
    task_id = task_id or svc.ids.new_id()
    keys = _store_inputs(svc, owner, is_admin, task_id, images + ([mask] if mask else []))
    if mask is not None:
        params = params.model_copy(update={"init_images": keys[:-1], "mask": keys[-1]})
    else:
        params = params.model_copy(update={"init_images": keys})
    if params.kind is not TaskKind.TXT2IMG and not params.init_images:
        field = "image" if params.kind is TaskKind.EXTRAS else "init_images"
        raise InvalidInputError(field, "an input image is required")
    now = svc.clock.now()
    task = Task(
        task_id=task_id,
        kind=params.kind,
        model=model,
        owner=owner,
        webhook=webhook,
        params=params,
        created_at=now,
        keep=keep,
        job_count=params.image_count,
        expires_at=int(now + svc.settings.task_ttl_days * 86400),
        priority=priority,
    )
    try:
        svc.tasks.create(task)
    except ConflictError:  # the same client task id submitted twice at once
        return svc.tasks.get(task_id)
    svc.queue.send({"taskId": task_id}, priority=priority)
    return task


def get_task(svc: Services, task_id: str, owner: str | None = None) -> Task:
    """The task, if `owner` may see it (None: anyone). Raises NotFoundError, also for a task
    of someone else: whether it exists is not theirs to know."""
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


def wait_for_task(svc: Services, task_id: str, timeout_s: float) -> Task:
    """Poll the task's state (not a connection to a worker) until it ends or time runs out."""
    deadline = svc.clock.now() + timeout_s
    delay = 0.02
    while True:
        task = svc.tasks.get(task_id)
        remaining = deadline - svc.clock.now()
        if task.status.terminal or remaining <= 0:
            return task
        svc.clock.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.1)  # a read every 0.1 s at most: cheap, and answers promptly


def request_cancel(svc: Services, task_id: str, owner: str | None = None) -> Task:
    """Cancel a task: a queued one never runs, a running one stops at its next step.

    Idempotent: cancelling a finished task returns it unchanged. Raises NotFoundError.
    """
    get_task(svc, task_id, owner)
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
        svc.tasks.update_running(task_id, TaskChanges(skip_requests=task.skip_requests + 1))
        task = svc.tasks.get(task_id)
    return task


def result_urls(svc: Services, task: Task) -> list[str]:
    return [svc.blobs.url(key, svc.settings.url_expires_s) for key in task.images]
