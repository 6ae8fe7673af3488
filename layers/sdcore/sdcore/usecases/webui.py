"""The webui API's own use cases (`/sdapi/v1`): a generation is a task like any other (caps,
history, isolation), waited on synchronously as the webui does, with the caller's options (the
webui settings that `POST /sdapi/v1/options` sets: default checkpoint and VAE, clip skip, ENSD,
noise source, sampler noise) and prompt styles applied; the caller's current task,
which progress, interrupt and skip act on; the parameters a PNG carries."""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from sdcore.domain.models import GenerationParams, Model, ModelType, Task, TaskStatus, UserChanges
from sdcore.errors import InvalidInputError, NotFoundError, TaskFailedError, TaskTimeoutError
from sdcore.services import Services
from sdcore.usecases.auth import Principal
from sdcore.usecases.networks import resolve_model, resolve_network
from sdcore.usecases.prompts import check_prompts
from sdcore.usecases.styles import apply_styles
from sdcore.usecases.submit import Submission, submit
from sdcore.usecases.tasks import (
    current_task,
    image_bytes,
    request_cancel,
    request_skip,
    wait_for_task,
)
from sdcore.webui.infotext import parse_infotext
from sdcore.webui.options import (
    APPLIED,
    check_option,
    check_options,
    check_stored,
    effective,
    read_stored,
)
from sdcore.webui.png_info import read_parameters
from sdcore.webui.prompt_syntax import mentions
from sdcore.webui.scripts import plan_script, with_tiles
from sdcore.webui.titles import checkpoint_title, model_name

NO_VAE = (None, "", "Automatic", "None")  # the webui's words for "the checkpoint's own VAE"


@dataclass(frozen=True)
class Generation:
    """A webui generation's task, its PNGs, and the VAE it used (None: the checkpoint's)."""

    task: Task
    images: list[bytes]
    vae: str | None


@dataclass(frozen=True)
class WebuiRequest:
    """What a webui generation request says besides its parameters: the request fields it set
    (the rest may come from the caller's options), its `override_settings`, its `styles`."""

    fields: frozenset[str] = frozenset()
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    styles: list[str] = dataclasses.field(default_factory=list)
    script: str | None = None  # a webui script's name, run with `script_args`
    script_args: list[Any] = dataclasses.field(default_factory=list)
    scheduler: str | None = None  # the request's own schedule type (a script's samplers use it)


def user_options(svc: Services, who: Principal) -> dict[str, Any]:
    """The options the caller set (none when auth is off: the anonymous caller has no record)."""
    try:
        return svc.users.get(who.user).options
    except NotFoundError:
        return {}


def _applied(
    request: Submission, saved: dict[str, Any], asked: WebuiRequest
) -> tuple[str | None, dict[str, Any]]:
    """The checkpoint and the parameter updates the caller's options and the request's
    override settings give a request that leaves those fields out (the webui's order: the
    request's field, then its override_settings, then the saved setting)."""
    overrides = {
        key: check_option(key, value)
        for key, value in asked.overrides.items()
        if key in APPLIED and value is not None
    }
    options = {**effective(saved), **overrides}
    vae = request.params.vae
    if vae is None and options["sd_vae"] not in NO_VAE:
        vae = options["sd_vae"]
    update: dict[str, Any] = {
        "vae": vae,
        "eta_noise_seed_delta": options["eta_noise_seed_delta"],
        "eta_ancestral": options["eta_ancestral"],
        "s_noise": options["s_noise"],
    }
    if "clip_skip" not in asked.fields:
        update["clip_skip"] = options["CLIP_stop_at_last_layers"]
    if "tiling" not in asked.fields:
        update["tiling"] = bool(options["tiling"])
    restore = request.params.face_restorers if "restore_faces" in asked.fields else None
    if restore or (restore is None and options["face_restoration"]):
        update["face_restorers"] = [(str(options["face_restoration_model"]), 1.0)]
        update["codeformer_weight"] = options["code_former_weight"]
    chosen = {**read_stored(saved), **overrides}
    if "randn_source" in chosen:  # else the CPU, as before, and unrecorded
        update["randn_source"] = options["randn_source"]
    return request.model or options["sd_model_checkpoint"], update


def generate(
    svc: Services,
    who: Principal,
    request: Submission,
    wait_s: float,
    asked: WebuiRequest | None = None,
) -> Generation:
    """Submit `request` and wait for its end. With `asked` (a generation, not extras): the
    fields the request leaves out come from its override settings and the caller's options (a
    checkpoint as a webui title, the VAE, clip skip, ENSD, noise source, eta, sigma noise), its
    styles are applied to its prompts, and its script (if any) becomes its plan of jobs.

    Raises
    ------
    TaskTimeoutError
        The task did not end within `wait_s` (it goes on; poll it by id).
    TaskFailedError
        The task failed (with its reason).
    InvalidInputError
        An override setting of the wrong type or range; an unknown style (`styles`); an
        unknown script (`script_name`) or arguments it cannot run (`script_args`); else as
        `submit`.
    NotFoundError, ConflictError, OverCapError
        As `submit`.
    """
    checkpoint = request.model
    if asked is not None:
        checkpoint, update = _applied(request, user_options(svc, who), asked)
        request = apply_styles(svc, who, request, asked.styles)
        request = dataclasses.replace(request, params=request.params.model_copy(update=update))
        if asked.script:
            request = dataclasses.replace(request, params=scripted(svc, who, request, asked))
    request = dataclasses.replace(request, model=model_name(checkpoint))
    task = submit(svc, who, request)
    task = wait_for_task(svc, task.task_id, wait_s)
    if not task.status.terminal:
        raise TaskTimeoutError(task.public_id)
    if task.status is TaskStatus.FAILED:
        raise TaskFailedError(task.error or "generation failed")
    return Generation(task, image_bytes(svc, task), request.params.vae)


def scripted(
    svc: Services, who: Principal, request: Submission, asked: WebuiRequest
) -> GenerationParams:
    """The request's params with the plan of its script; each job's prompts pass the prompt
    filter as a task's do, and name no embedding the task's own prompts do not (the task
    fetches those once).

    Raises InvalidInputError naming `script_name`, `script_args` or the blocked prompt."""
    assert asked.script is not None
    params = plan_script(asked.script, asked.script_args, request.params, asked.scheduler)
    embeddings = [m.name for m in usable(svc, ModelType.EMBEDDING)]
    base = (params.prompt, params.negative_prompt)
    for job in params.script_jobs():
        check_prompts(svc, job)
        for name in embeddings:
            if mentions(name, job.prompt, job.negative_prompt) and not mentions(name, *base):
                raise InvalidInputError("script_args", f"a job names embedding {name!r}, which "
                                        "the request's prompts do not")  # fmt: skip
    script = params.script
    if script is not None and script.tile_upscale is not None:
        params = with_tiles(params, _source_size(svc, who, request))
    return params


def _source_size(svc: Services, who: Principal, request: Submission) -> tuple[int, int]:
    """The size of the request's first image (SD upscale tiles it: its work depends on it);
    a key only of the caller's own objects, as submit takes them."""
    given = request.images[0] if request.images else None
    data = given.data if given is not None else None
    if given is not None and given.key is not None:
        key = given.key
        mine = who.is_admin or key.split("/", 2)[1:2] == [who.user]
        if ".." in key or not mine or not svc.blobs.exists(key):
            raise InvalidInputError(given.field, f"no object {key!r} of yours")
        data = svc.blobs.get(key)
    if data is None:
        raise InvalidInputError("init_images", "SD upscale takes the image as base64 or a key")
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError):
        raise InvalidInputError("init_images", "not an image") from None


def generate_each(
    svc: Services, who: Principal, requests: list[Submission], wait_s: float
) -> list[bytes]:
    """Several requests one after the other (the webui's extras batch), each a task; the PNGs
    of all. Raises as `generate`, at the first that does not succeed."""
    images: list[bytes] = []
    for request in requests:
        images += generate(svc, who, request, wait_s).images
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


def options(svc: Services, who: Principal) -> dict[str, Any]:
    """Every webui setting, as the webui reports them: its defaults, this service's, then the
    caller's; the checkpoint as a webui title, with its hash."""
    values = effective(user_options(svc, who))
    name = model_name(values["sd_model_checkpoint"]) or svc.settings.default_model
    try:
        sha256 = svc.models.get(name).sha256
        title = checkpoint_title(name, sha256)
    except NotFoundError:
        sha256, title = "", name
    return {**values, "sd_model_checkpoint": title, "sd_checkpoint_hash": sha256}


def set_options(svc: Services, who: Principal, values: dict[str, Any]) -> None:
    """Change the caller's settings (any of the webui's; see `sdcore.webui.options`).

    Raises
    ------
    NotFoundError, ConflictError
        The checkpoint does not exist or is not usable (or the VAE is not ready).
    InvalidInputError
        An unknown key, a value of the wrong type or out of range (naming the key); more
        than the bound; options need a user (auth is off); no VAE of that name.
    """
    updates = check_options({k: v for k, v in values.items() if v is not None})
    if "sd_model_checkpoint" in updates:
        name = model_name(updates["sd_model_checkpoint"]) or ""
        resolve_model(svc, name)  # 404/409 if it can't be used
        updates["sd_model_checkpoint"] = name
    vae = updates.get("sd_vae")
    if vae is not None and vae not in NO_VAE:  # a VAE a task could use now, as sd_vae is
        resolve_network(svc, vae, ModelType.VAE, "sd_vae")
    updates.pop("sd_checkpoint_hash", None)  # derived from the checkpoint, never stored
    if not updates:
        return
    try:
        user = svc.users.get(who.user)
    except NotFoundError:
        raise InvalidInputError(next(iter(updates)), "options need a user key") from None
    merged = {**user.options, **updates}
    check_stored(merged)
    svc.users.update(who.user, UserChanges(options=merged))


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
