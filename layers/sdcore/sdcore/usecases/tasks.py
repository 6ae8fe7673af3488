"""Submitting tasks and answering questions about them (the proxy's use cases)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from sdcore.domain.models import GenerationParams, Task, TaskKind, TaskStatus
from sdcore.errors import ConflictError, InvalidInputError, StaleWriteError
from sdcore.services import Services

# Objects a request may name as an input image: uploads and earlier results, never models.
INPUT_PREFIXES = ("inputs/", "outputs/")
MAX_IMAGE_PIXELS = 4096 * 4096


@dataclass
class ImageInput:
    """An input image as the caller gave it: decoded bytes, or the key of a stored object."""

    field: str
    data: bytes | None = None
    key: str | None = None


def _check_image(field: str, data: bytes) -> None:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise InvalidInputError(field, f"image is {img.width}x{img.height}, too large")
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InvalidInputError(field, "not a readable image (PNG, JPEG or WebP)") from exc


def _store_inputs(svc: Services, task_id: str, inputs: list[ImageInput]) -> list[str]:
    keys: list[str] = []
    for n, item in enumerate(inputs):
        if item.key is not None:
            if not item.key.startswith(INPUT_PREFIXES) or ".." in item.key:
                raise InvalidInputError(item.field, f"key must start with one of {INPUT_PREFIXES}")
            if not svc.blobs.exists(item.key):
                raise InvalidInputError(item.field, f"no object {item.key!r}")
            keys.append(item.key)
        else:
            assert item.data is not None
            _check_image(item.field, item.data)
            key = f"inputs/{task_id}/{n}.png"
            svc.blobs.put(key, item.data, "image/png")
            keys.append(key)
    return keys


def resolve_model(svc: Services, name: str | None) -> str:
    """The checkpoint a task will use. Raises NotFoundError / ConflictError when unusable."""
    model_name = name or svc.settings.default_model
    model = svc.models.get(model_name)
    if not model.usable:
        reason = model.error or f"status is {model.status.value}"
        raise ConflictError(f"model {model_name} is not ready: {reason}")
    return model_name


def submit_task(
    svc: Services,
    params: GenerationParams,
    model_name: str | None,
    images: list[ImageInput],
    mask: ImageInput | None = None,
    keep: bool = True,
) -> Task:
    """Record a task and queue it for control.

    Raises
    ------
    InvalidInputError
        An input image is unreadable or names a missing object.
    NotFoundError, ConflictError
        The checkpoint does not exist or is not ready.
    """
    model = resolve_model(svc, model_name)
    if params.vae is not None:
        resolve_model(svc, params.vae)
    task_id = svc.ids.new_id()
    keys = _store_inputs(svc, task_id, images + ([mask] if mask else []))
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
        params=params,
        created_at=now,
        keep=keep,
        job_count=params.image_count,
        expires_at=int(now + svc.settings.task_ttl_days * 86400),
    )
    svc.tasks.create(task)
    svc.queue.send({"taskId": task_id})
    return task


def get_task(svc: Services, task_id: str) -> Task:
    """Raises NotFoundError."""
    return svc.tasks.get(task_id)


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


def request_cancel(svc: Services, task_id: str) -> Task:
    """Cancel a task: a queued one never runs, a running one stops at its next step.

    Idempotent: cancelling a finished task returns it unchanged. Raises NotFoundError.
    """
    task = svc.tasks.request_cancel(task_id)
    if task.status is TaskStatus.QUEUED:
        try:
            task = svc.tasks.transition(
                task_id,
                {TaskStatus.QUEUED},
                TaskStatus.CANCELLED,
                finished_at=svc.clock.now(),
                error="cancelled by request",
            )
        except StaleWriteError:  # it started meanwhile: the worker sees the flag at its next step
            task = svc.tasks.get(task_id)
    return task


def result_urls(svc: Services, task: Task) -> list[str]:
    return [svc.blobs.url(key, svc.settings.url_expires_s) for key in task.images]
