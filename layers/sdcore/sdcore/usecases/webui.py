"""The webui API's own use cases (`/sdapi/v1`): a generation is a task like any other (caps,
history, isolation), waited on synchronously as the webui does, with the caller's options (the
default checkpoint and VAE that `POST /sdapi/v1/options` sets); the caller's current task,
which progress, interrupt and skip act on; the parameters a PNG carries."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sdcore.domain.models import Model, ModelType, Task, TaskStatus, UserChanges
from sdcore.errors import InvalidInputError, NotFoundError, TaskFailedError, TaskTimeoutError
from sdcore.services import Services
from sdcore.usecases.auth import Principal
from sdcore.usecases.networks import resolve_model, resolve_network
from sdcore.usecases.submit import Submission, submit
from sdcore.usecases.tasks import (
    current_task,
    image_bytes,
    request_cancel,
    request_skip,
    wait_for_task,
)
from sdcore.webui.infotext import parse_infotext
from sdcore.webui.png_info import read_parameters
from sdcore.webui.titles import checkpoint_title, model_name

NO_VAE = (None, "", "Automatic", "None")  # the webui's words for "the checkpoint's own VAE"


@dataclass(frozen=True)
class Generation:
    """A webui generation's task, its PNGs, and the VAE it used (None: the checkpoint's)."""

    task: Task
    images: list[bytes]
    vae: str | None


@dataclass(frozen=True)
class Options:
    """The caller's webui options, as the webui reports them."""

    checkpoint_title: str
    vae: str


def user_options(svc: Services, who: Principal) -> dict[str, str]:
    """The options the caller set (none when auth is off: the anonymous caller has no record)."""
    try:
        return svc.users.get(who.user).options
    except NotFoundError:
        return {}


def generate(
    svc: Services, who: Principal, request: Submission, wait_s: float, defaults: bool = True
) -> Generation:
    """Submit `request` and wait for its end. With `defaults`, a checkpoint (a webui title) and
    a VAE the request leaves out come from the caller's options.

    Raises
    ------
    TaskTimeoutError
        The task did not end within `wait_s` (it goes on; poll it by id).
    TaskFailedError
        The task failed (with its reason).
    InvalidInputError, NotFoundError, ConflictError, OverCapError
        As `submit`.
    """
    options = user_options(svc, who) if defaults else {}
    checkpoint = model_name(request.model or options.get("sd_model_checkpoint"))
    vae = request.params.vae
    if vae is None and options.get("sd_vae") not in NO_VAE:
        vae = options["sd_vae"]
    params = request.params.model_copy(update={"vae": vae})
    task = submit(svc, who, dataclasses.replace(request, params=params, model=checkpoint))
    task = wait_for_task(svc, task.task_id, wait_s)
    if not task.status.terminal:
        raise TaskTimeoutError(task.public_id)
    if task.status is TaskStatus.FAILED:
        raise TaskFailedError(task.error or "generation failed")
    return Generation(task, image_bytes(svc, task), vae)


def generate_each(
    svc: Services, who: Principal, requests: list[Submission], wait_s: float
) -> list[bytes]:
    """Several requests one after the other (the webui's extras batch), each a task; the PNGs
    of all. Raises as `generate`, at the first that does not succeed."""
    images: list[bytes] = []
    for request in requests:
        images += generate(svc, who, request, wait_s, defaults=False).images
    return images


def current(svc: Services, who: Principal) -> Task | None:
    """The caller's task running now, else the one queued most recently."""
    return current_task(svc, who.user)


def interrupt(svc: Services, who: Principal) -> None:
    """Cancel the caller's current task, if any."""
    task = current_task(svc, who.user)
    if task is not None:
        request_cancel(svc, task.task_id, who.user)


def skip(svc: Services, who: Principal) -> None:
    """End the current job (one n_iter batch) of the caller's running task; the next runs."""
    task = current_task(svc, who.user)
    if task is not None:
        request_skip(svc, task.task_id, who.user)


def options(svc: Services, who: Principal) -> Options:
    """The caller's default checkpoint (as a webui title) and VAE."""
    saved = user_options(svc, who)
    name = model_name(saved.get("sd_model_checkpoint")) or svc.settings.default_model
    try:
        title = checkpoint_title(name, svc.models.get(name).sha256)
    except NotFoundError:
        title = name
    return Options(title, saved.get("sd_vae", "Automatic"))


def set_options(svc: Services, who: Principal, checkpoint: str | None, vae: str | None) -> None:
    """Change the caller's default checkpoint (a webui title) and VAE.

    Raises
    ------
    NotFoundError, ConflictError
        The checkpoint does not exist or is not usable (or the VAE is not ready).
    InvalidInputError
        Options need a user (auth is off); no VAE of that name.
    """
    updates = {}
    if checkpoint is not None:
        name = model_name(checkpoint) or ""
        resolve_model(svc, name)  # 404/409 if it can't be used
        updates["sd_model_checkpoint"] = name
    if vae is not None:
        if vae not in NO_VAE:  # a VAE a task could use now, as a request's sd_vae is checked
            resolve_network(svc, vae, ModelType.VAE, "sd_vae")
        updates["sd_vae"] = vae
    if not updates:
        return
    try:
        user = svc.users.get(who.user)
    except NotFoundError:
        raise InvalidInputError("sd_model_checkpoint", "options need a user key") from None
    svc.users.update(who.user, UserChanges(options={**user.options, **updates}))


def usable(svc: Services, kind: ModelType) -> list[Model]:
    """The models of `kind` a task can use now, by name (what the webui's listings show)."""
    return [m for m in svc.models.list() if m.type is kind and m.usable]


def png_info(data: bytes | None) -> tuple[str, dict[str, Any]]:
    """The `parameters` text of a PNG ("" when it has none) and its fields.

    Raises InvalidInputError when the image was not given as bytes (base64 or a data URL)."""
    if data is None:
        raise InvalidInputError("image", "give the image as base64 or a data URL")
    text = read_parameters(data) or ""
    return text, (parse_infotext(text) if text else {})
