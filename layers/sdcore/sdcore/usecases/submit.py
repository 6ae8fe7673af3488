"""Taking a generation request in: the prompt filter, the caller's quota, the models and
networks it names, its input images stored, the task recorded and queued for control; once per
client task id or Idempotency-Key. The sync API then waits for the task's end."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from sdcore.domain.models import (
    INPUT_PREFIXES,
    GenerationParams,
    ImageInput,
    Model,
    Task,
    TaskKind,
)
from sdcore.errors import ConflictError, InvalidInputError, NotFoundError, OverCapError
from sdcore.guards.netguard import check_url, fetch_url
from sdcore.metric_names import TASKS_SUBMITTED, THROTTLED
from sdcore.services import Services
from sdcore.usecases.auth import Principal, check_queue_quota
from sdcore.usecases.controlnet import check_controls
from sdcore.usecases.idempotency import submit_once
from sdcore.usecases.networks import check_networks, registered_upscalers, resolve_model
from sdcore.usecases.prompts import check_prompts
from sdcore.usecases.removal import check_removal
from sdcore.usecases.tasks import (
    TASK_ID_RE,
    TaskOutcome,
    get_task,
    outcome,
    resumed_task,
    scoped_task_id,
    wait_for_task,
)
from sdcore.usecases.translation import translate_prompts
from sdcore.webui.generation_rules import check_generation
from sdcore.webui.work import native_side, task_work

MAX_IMAGE_PIXELS = 4096 * 4096
MAX_IMAGE_BYTES = 10 * 1024 * 1024


def _check_image(field: str, data: bytes) -> None:
    """The size the image declares is checked before its pixels are decoded: a 100-byte PNG
    may declare 30000x30000 (Pillow refuses those as decompression bombs when opening)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise InvalidInputError(field, f"image is {img.width}x{img.height}, too large")
            img.verify()
    except Image.DecompressionBombError as exc:
        raise InvalidInputError(field, f"image is too large: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
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


def check_work(
    svc: Services, params: GenerationParams, model: Model, is_admin: bool = False
) -> None:
    """Refuse a task over the work budget of its model's fleet (SD_MAX_TASK_WORK on a CPU
    function; 0: none), so that no task can outlive its function. The fleet is asked only for a
    task over the CPU budget (a GPU endpoint's is larger): one read fewer per submit.

    Raises InvalidInputError naming the fields whose product is over it."""
    work = task_work(params, model)
    budget = svc.settings.max_task_work
    if budget and work > budget:
        fleet_budget = svc.fleet.max_task_work(model.name)
        budget = budget if fleet_budget is None else fleet_budget
    if is_admin and svc.settings.admin_task_work_factor != 1:  # an admin's tasks may be larger
        budget = int(budget * svc.settings.admin_task_work_factor)
    if budget and work > budget:
        fields: tuple[str, ...] = ("width", "height", "steps", "batch_size", "n_iter")
        if params.hires:
            fields += ("hr_scale", "hr_second_pass_steps")
        raise InvalidInputError(
            "steps",
            f"the task would run {work:,} pixel-steps (width x height x steps x images"
            f"{', hires pass included' if params.hires else ''}); the limit is {budget:,}: "
            "ask for fewer or smaller images, or fewer steps",
            also=tuple(f for f in fields if f != "steps"),
        )


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
    active_limit: int | None = None,
    control_images: dict[tuple[int, str], ImageInput] | None = None,
    control_paths: list[str] | None = None,
) -> Task:
    """Record a task and queue it for control. `priority` 1 (high) runs before 0 (normal).

    A client-chosen `task_id` makes the submit idempotent: repeating it returns the task it
    created, never a second one. Each owner's ids are their own (`scoped_task_id`).
    `active_limit`: the task is recorded only while its owner has fewer queued or running
    (checked and recorded atomically).

    Raises
    ------
    InvalidInputError
        An input image is unreadable or names a missing object; a bad task id or webhook URL.
    NotFoundError, ConflictError
        The checkpoint does not exist or is not ready.
    OverCapError
        The owner has `active_limit` tasks queued or running.
    """
    client_id = task_id
    if client_id is not None:
        if not TASK_ID_RE.match(client_id):
            raise InvalidInputError("taskId", "8-64 letters, digits, '_' or '-'")
        task_id = scoped_task_id(owner, client_id)
        try:
            return svc.tasks.get(task_id)
        except NotFoundError:
            pass
    if webhook is not None:
        check_url(webhook, field="webhook", allow_private=svc.settings.allow_private_urls)
    model = resolve_model(svc, model_name)
    check_networks(svc, params)
    check_removal(svc, params, mask is not None)
    side = native_side(model)
    check_generation(params, (side, side), [name for name, _ in registered_upscalers(params)])
    check_work(svc, params, model, is_admin)
    control_images = control_images or {}
    check_controls(svc, params, model, control_paths or [], set(control_images), mask is not None)
    task_id = task_id or svc.ids.new_id()
    svc.tracing.about(task_id, model.name)
    keys = _store_inputs(svc, owner, is_admin, task_id, images + ([mask] if mask else []))
    if control_images:  # stored under the task's inputs too, each in its unit
        stored = _store_inputs(svc, owner, is_admin, f"{task_id}/controlnet",
                               list(control_images.values()))  # fmt: skip
        params = _control_units(params, dict(zip(control_images, stored, strict=True)))
    if mask is not None:
        params = params.model_copy(update={"init_images": keys[:-1], "mask": keys[-1]})
    else:
        params = params.model_copy(update={"init_images": keys})
    if params.kind is not TaskKind.TXT2IMG and not params.init_images:
        field = "init_images" if params.kind is TaskKind.IMG2IMG else "image"
        raise InvalidInputError(field, "an input image is required")
    now = svc.clock.now()
    task = Task(
        task_id=task_id,
        client_id=client_id,
        kind=params.kind,
        model=model.name,
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
        svc.tasks.create(task, active_limit if owner else None)
    except ConflictError:  # the same client task id submitted twice at once
        return svc.tasks.get(task_id)
    except OverCapError:
        svc.blobs.delete_prefix(f"inputs/{owner}/{task_id}/")  # nothing half-written
        svc.metrics.count(THROTTLED, limit="queue", user=owner)
        raise
    svc.queue.send({"taskId": task_id}, priority=priority)
    svc.metrics.count(TASKS_SUBMITTED, model=model.name, kind=params.kind.value)
    return task


def _control_units(params: GenerationParams, keys: dict[tuple[int, str], str]) -> GenerationParams:
    """The ControlNet units with their stored images' keys."""
    units = [u.model_copy() for u in params.controlnet]
    for (n, role), key in keys.items():
        setattr(units[n], role, key)
    return params.model_copy(update={"controlnet": units})


@dataclass(frozen=True)
class Submission:
    """A generation request in domain words, as the API edge parsed it."""

    params: GenerationParams
    images: list[ImageInput] = dataclasses.field(default_factory=list)
    mask: ImageInput | None = None
    model: str | None = None  # the checkpoint (None: the default one)
    webhook: str | None = None
    task_id: str | None = None  # client-chosen: a repeated submit returns the same task
    priority: int = 0
    # ControlNet units' images ((unit, "image" | "mask") -> input) and each unit's wire path
    control_images: dict[tuple[int, str], ImageInput] = dataclasses.field(default_factory=dict)
    control_paths: list[str] = dataclasses.field(default_factory=list)
    # put the prompts' Chinese into English before encoding (None: as SD_TRANSLATE says)
    translate: bool | None = None


@dataclass(frozen=True)
class Idempotency:
    """An `Idempotency-Key` and the request body it was sent with (a reuse of the key with
    another body is refused)."""

    key: str
    body: dict[str, Any]


def submit(
    svc: Services, who: Principal, request: Submission, idempotency: Idempotency | None = None
) -> Task:
    """Check the prompts, apply the caller's quota and record the task once: a client task id
    or an Idempotency-Key make repeats return the first task.

    Raises
    ------
    InvalidInputError
        A blocked prompt (as written or translated), `translate` with no translator, a bad
        Idempotency-Key, and what `submit_task` refuses.
    OverCapError
        The caller has too many tasks queued or running.
    NotFoundError, ConflictError
        As `submit_task`; the Idempotency-Key was used with another body.
    """
    resumed = resumed_task()
    if resumed is not None:  # replayed after the front door waited: the task exists
        return get_task(svc, resumed, None if who.is_admin else who.user)
    check_prompts(svc, request.params)
    params = translate_prompts(svc, request.params, request.translate)
    if params is not request.params:  # the filter judges the translation too
        check_prompts(svc, params)
        request = dataclasses.replace(request, params=params)

    def run() -> str:
        check_queue_quota(svc, who)
        task = submit_task(
            svc,
            request.params,
            request.model,
            request.images,
            request.mask,
            owner=who.user,
            is_admin=who.is_admin,
            webhook=request.webhook,
            task_id=request.task_id,
            priority=request.priority,
            active_limit=svc.settings.max_queued_per_user,
            control_images=request.control_images,
            control_paths=request.control_paths,
        )
        return task.task_id

    if idempotency is None:
        return get_task(svc, run())
    if not 1 <= len(idempotency.key) <= 255:
        raise InvalidInputError("Idempotency-Key", "1 to 255 characters")
    return get_task(svc, submit_once(svc, who.user, idempotency.key, idempotency.body, run))


def submit_and_wait(
    svc: Services,
    who: Principal,
    request: Submission,
    idempotency: Idempotency | None,
    wait_s: float,
) -> TaskOutcome:
    """`submit`, then wait up to `wait_s` for the task to end (0: answer at once). The
    outcome's task may still be queued or running. Raises as `submit`."""
    task = submit(svc, who, request, idempotency)
    if wait_s > 0:
        task = wait_for_task(svc, task.task_id, wait_s)
    return outcome(svc, task)
