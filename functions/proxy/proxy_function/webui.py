"""AUTOMATIC1111 webui-compatible routes (/sdapi/v1/*): existing webui API clients work
unchanged. Each call is a task like any other (caps, history, isolation), waited on
synchronously as the webui does; images go back as plain base64 and `info` as a JSON string."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from proxy_function.routes import submit
from sdcore.api.auth import principal
from sdcore.api.errors import json_response
from sdcore.api.schemas import ExtrasBody, Img2ImgBody, Txt2ImgBody, decode_image
from sdcore.composition import get_services
from sdcore.domain.models import Model, ModelFormat, ModelType, Task, TaskStatus, UserChanges
from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.usecases import models as model_cases
from sdcore.usecases import tasks as task_cases
from sdcore.usecases.auth import Principal
from sdcore.webui.infotext import parse_infotext
from sdcore.webui.png_info import read_parameters
from sdcore.webui.samplers import SAMPLER_ALIASES, SAMPLERS, SCHEDULES, UPSCALERS, sampler_options

router = APIGatewayRouter()
PREFIX = "/sdapi/v1"
_TITLE = re.compile(r"^(?P<name>.+?)(?:\.safetensors)?(?: \[[0-9a-f]{8,64}\])?$")


class _Override(BaseModel):
    model_config = ConfigDict(extra="ignore")
    override_settings: dict[str, Any] = Field(default_factory=dict)
    # PAI-EAS clients (seed 002) name the checkpoint and an input image link here
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)


class WebuiTxt2Img(Txt2ImgBody, _Override):
    pass


class WebuiImg2Img(Img2ImgBody, _Override):
    init_images: list[str] = Field(default_factory=list, max_length=8)

    @model_validator(mode="after")
    def _image_link(self) -> WebuiImg2Img:
        link = self.alwayson_scripts.get("image_link")
        if not self.init_images and isinstance(link, str) and link:
            self.init_images = [link]
        if not self.init_images:
            raise ValueError("init_images (or alwayson_scripts.image_link) is required")
        return self


class WebuiExtrasSingle(ExtrasBody):
    pass


class _ImageData(BaseModel):
    data: str
    name: str = ""


class WebuiExtrasBatch(ExtrasBody):
    image: str = ""  # unused here: the batch comes in imageList
    imageList: list[_ImageData] = Field(..., min_length=1, max_length=16)  # noqa: N815


class PngInfoBody(BaseModel):
    image: str = Field(..., min_length=1)


class OptionsBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    sd_model_checkpoint: str | None = None
    sd_vae: str | None = None


def model_name(title: str | None) -> str | None:
    """A webui checkpoint title ("name [hash]", "name.safetensors") -> our model name."""
    if not title:
        return None
    match = _TITLE.match(title.strip())
    return match.group("name") if match else title


def _defaults(who: Principal) -> dict[str, str]:
    try:
        return get_services().users.get(who.user).options
    except NotFoundError:  # auth off: the anonymous caller has no record
        return {}


def _run(body: Txt2ImgBody | Img2ImgBody | ExtrasBody, model: str | None) -> Task:
    svc = get_services()
    task = submit(body, principal(router), model)
    task = task_cases.wait_for_task(svc, task.task_id, svc.settings.webui_timeout_s)
    if not task.status.terminal:
        raise _Timeout(task.task_id)
    if task.status is TaskStatus.FAILED:
        raise _Failed(task.error or "generation failed")
    return task


class _Timeout(Exception):
    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id


class _Failed(Exception):
    pass


def _b64(keys: list[str]) -> list[str]:
    blobs = get_services().blobs
    return [base64.b64encode(blobs.get(k)).decode() for k in keys]


def _checkpoint(body: _Override, who: Principal) -> str | None:
    explicit = getattr(body, "stable_diffusion_model", None)
    override = body.override_settings.get("sd_model_checkpoint")
    eas = body.alwayson_scripts.get("sd_model_checkpoint")
    eas = eas if isinstance(eas, str) else None
    return model_name(explicit or override or eas or _defaults(who).get("sd_model_checkpoint"))


def _generate(body: WebuiTxt2Img | WebuiImg2Img) -> Response[dict[str, Any]]:
    who = principal(router)
    tag = (router.current_event.query_string_parameters or {}).get("task_id")
    if tag and not body.taskId:  # PAI-EAS's ?task_id= tag: our client-chosen task id
        body = body.model_copy(update={"taskId": tag})
    default_vae = _defaults(who).get("sd_vae")
    if body.sd_vae is None and default_vae not in (None, "", "Automatic", "None"):
        body = body.model_copy(update={"sd_vae": default_vae})
    try:
        task = _run(body, _checkpoint(body, who))
    except _Timeout as exc:
        return json_response(
            504, {"error": "timeout", "detail": "still running", "taskId": exc.task_id}
        )
    except _Failed as exc:
        return json_response(500, {"error": "generation_failed", "detail": str(exc)})
    info = dict(task.info)
    info.setdefault("infotexts", [])
    info["task_id"] = task.task_id
    return json_response(
        200,
        {
            "images": _b64(task.images),
            "parameters": body.model_dump(mode="json", exclude={"init_images", "mask"}),
            "info": json.dumps(info),
        },
    )


@router.post(f"{PREFIX}/txt2img")
def webui_txt2img(body: WebuiTxt2Img) -> Response[dict[str, Any]]:
    """webui txt2img."""
    return _generate(body)


@router.post(f"{PREFIX}/img2img")
def webui_img2img(body: WebuiImg2Img) -> Response[dict[str, Any]]:
    """webui img2img (inpainting with `mask`)."""
    return _generate(body)


@router.post(f"{PREFIX}/extra-single-image")
def webui_extra_single(body: WebuiExtrasSingle) -> Response[dict[str, Any]]:
    """webui extras on one image."""
    try:
        task = _run(body, None)
    except _Timeout as exc:
        return json_response(504, {"error": "timeout", "taskId": exc.task_id})
    except _Failed as exc:
        return json_response(500, {"error": "generation_failed", "detail": str(exc)})
    return json_response(200, {"html_info": "", "image": _b64(task.images)[0]})


@router.post(f"{PREFIX}/extra-batch-images")
def webui_extra_batch(body: WebuiExtrasBatch) -> Response[dict[str, Any]]:
    """webui extras on several images (one task each)."""
    images = []
    for item in body.imageList:
        single = WebuiExtrasSingle(**{**body.model_dump(exclude={"imageList"}), "image": item.data})
        try:
            task = _run(single, None)
        except _Timeout as exc:
            return json_response(504, {"error": "timeout", "taskId": exc.task_id})
        except _Failed as exc:
            return json_response(500, {"error": "generation_failed", "detail": str(exc)})
        images += _b64(task.images)
    return json_response(200, {"html_info": "", "images": images})


@router.post(f"{PREFIX}/png-info")
def webui_png_info(body: PngInfoBody) -> dict[str, Any]:
    """The generation parameters stored in a PNG."""
    data = decode_image("image", body.image).data
    if data is None:
        raise InvalidInputError("image", "give the image as base64 or a data URL")
    text = read_parameters(data) or ""
    return {
        "info": text,
        "items": {"parameters": text} if text else {},
        "parameters": parse_infotext(text) if text else {},
    }


def _current(who: Principal) -> Task | None:
    svc = get_services()
    for status in (TaskStatus.RUNNING, TaskStatus.QUEUED):
        tasks = svc.tasks.list_by_owner(who.user, status, limit=1)
        if tasks:
            return tasks[0]
    return None


@router.get(f"{PREFIX}/progress")
def webui_progress() -> dict[str, Any]:
    """Progress of the caller's current task."""
    task = _current(principal(router))
    state = {
        "skipped": bool(task and task.skip_requests),
        "interrupted": bool(task and task.cancel_requested),
        "job": task.task_id if task else "",
        "job_count": task.job_count if task else 0,
        "job_timestamp": "0",
        "job_no": task.job_no if task else 0,
        "sampling_step": task.sampling_step if task else 0,
        "sampling_steps": task.sampling_steps if task else 0,
    }
    return {
        "progress": task.progress if task else 0.0,
        "eta_relative": (task.eta_s or 0.0) if task else 0.0,
        "state": state,
        "current_image": task.current_image if task else None,
        "textinfo": None,
    }


def _stop_current() -> dict[str, Any]:
    who = principal(router)
    task = _current(who)
    if task is not None:
        task_cases.request_cancel(get_services(), task.task_id, who.user)
    return {}


@router.post(f"{PREFIX}/interrupt")
def webui_interrupt() -> dict[str, Any]:
    """Stop the caller's current task."""
    return _stop_current()


@router.post(f"{PREFIX}/skip")
def webui_skip() -> dict[str, Any]:
    """End the current job (one n_iter batch) of the caller's running task; the next runs."""
    task = _current(principal(router))
    if task is not None:
        task_cases.request_skip(get_services(), task.task_id, principal(router).user)
    return {}


def _title(name: str, sha256: str) -> str:
    return f"{name} [{sha256[:10]}]"


@router.get(f"{PREFIX}/options")
def webui_get_options() -> dict[str, Any]:
    """The caller's options."""
    who = principal(router)
    svc = get_services()
    options = _defaults(who)
    name = model_name(options.get("sd_model_checkpoint")) or svc.settings.default_model
    try:
        current = _title(name, svc.models.get(name).sha256)
    except NotFoundError:
        current = name
    return {
        "sd_model_checkpoint": current,
        "sd_vae": options.get("sd_vae", "Automatic"),
        "samples_format": "png",
        "sd_checkpoint_hash": current.rsplit("[", 1)[-1].rstrip("]") if "[" in current else "",
    }


@router.post(f"{PREFIX}/options")
def webui_set_options(body: OptionsBody) -> dict[str, Any]:
    """Change the caller's default checkpoint (sd_model_checkpoint) and VAE (sd_vae)."""
    who = principal(router)
    svc = get_services()
    updates = {}
    if body.sd_model_checkpoint is not None:
        name = model_name(body.sd_model_checkpoint) or ""
        task_cases.resolve_model(svc, name)  # 404/409 if it can't be used
        updates["sd_model_checkpoint"] = name
    if body.sd_vae is not None:
        updates["sd_vae"] = body.sd_vae
    if updates:
        try:
            user = svc.users.get(who.user)
        except NotFoundError:
            raise InvalidInputError("sd_model_checkpoint", "options need a user key") from None
        svc.users.update(who.user, UserChanges(options={**user.options, **updates}))
    return {}


def _usable(kind: ModelType) -> list[Model]:
    return [m for m in model_cases.list_models(get_services(), kind) if m.usable]


def _filename(m: Model) -> str:
    suffix = ".safetensors" if m.format is ModelFormat.SAFETENSORS else ""
    return f"{m.name}{suffix}"


@router.get(f"{PREFIX}/sd-models")
def webui_sd_models() -> list[dict[str, Any]]:
    """Registered checkpoints, from the model registry."""
    return [
        {
            "title": _title(m.name, m.sha256),
            "model_name": m.name,
            "hash": m.sha256[:10],
            "sha256": m.sha256,
            "filename": _filename(m),
            "config": m.config if m.format is ModelFormat.SAFETENSORS else None,
        }
        for m in _usable(ModelType.CHECKPOINT)
    ]


@router.get(f"{PREFIX}/sd-vae")
def webui_sd_vae() -> list[dict[str, Any]]:
    """Registered VAEs."""
    return [{"model_name": m.name, "filename": _filename(m)} for m in _usable(ModelType.VAE)]


@router.get(f"{PREFIX}/loras")
def webui_loras() -> list[dict[str, Any]]:
    """Registered LoRAs (use one with <lora:name:weight> in the prompt)."""
    return [
        {
            "name": m.name,
            "alias": m.name,
            "path": _filename(m),
            "metadata": {"sha256": m.sha256, **m.details},
        }
        for m in _usable(ModelType.LORA)
    ]


@router.get(f"{PREFIX}/embeddings")
def webui_embeddings() -> dict[str, Any]:
    """Registered textual-inversion embeddings (used by their name in the prompt)."""
    return {
        "loaded": {
            m.name: {
                "step": None,
                "sd_checkpoint": None,
                "sd_checkpoint_name": None,
                "shape": m.details.get("shape"),
                "vectors": m.details.get("vectors"),
            }
            for m in _usable(ModelType.EMBEDDING)
        },
        "skipped": {},
    }


@router.get(f"{PREFIX}/upscalers")
def webui_upscalers() -> list[dict[str, Any]]:
    """Upscalers for extras: the built-in resamplers, then registered upscaler models."""
    builtin = [
        {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
        for name in ("None", *UPSCALERS)
    ]
    registered = [
        {
            "name": m.name,
            "model_name": m.name,
            "model_path": _filename(m),
            "model_url": None,
            "scale": m.details.get("scale", 4),
        }
        for m in _usable(ModelType.UPSCALER)
    ]
    return builtin + registered


@router.get(f"{PREFIX}/controlnet/model_list")
def webui_controlnet_models() -> dict[str, list[str]]:
    """Registered ControlNet models (the sd-webui-controlnet extension's listing)."""
    return {"model_list": [m.name for m in _usable(ModelType.CONTROLNET)]}


@router.get(f"{PREFIX}/samplers")
def webui_samplers() -> list[dict[str, Any]]:
    """Samplers this service runs."""
    return [
        {"name": name, "aliases": list(SAMPLER_ALIASES[name]), "options": sampler_options(name)}
        for name in SAMPLERS
    ]


@router.get(f"{PREFIX}/schedulers")
def webui_schedulers() -> list[dict[str, Any]]:
    """Schedule types this service runs (the `scheduler` field)."""
    return [
        {
            "name": s.name,
            "label": s.label,
            "aliases": list(s.aliases) or None,
            "default_rho": s.default_rho,
            "need_inner_model": s.need_inner_model,
        }
        for s in SCHEDULES
    ]


@router.get(f"{PREFIX}/scripts")
def webui_scripts() -> dict[str, list[str]]:
    """No webui scripts run here."""
    return {"txt2img": [], "img2img": []}


@router.post(f"{PREFIX}/refresh-checkpoints")
def webui_refresh_checkpoints() -> dict[str, Any]:
    """Listings read the model registry live: nothing to rescan."""
    return {}


@router.post(f"{PREFIX}/refresh-vae")
def webui_refresh_vae() -> dict[str, Any]:
    """Listings read the model registry live: nothing to rescan."""
    return {}


@router.post(f"{PREFIX}/refresh-loras")
def webui_refresh_loras() -> dict[str, Any]:
    """Listings read the model registry live: nothing to rescan."""
    return {}


@router.post(f"{PREFIX}/refresh-embeddings")
def webui_refresh_embeddings() -> dict[str, Any]:
    """Listings read the model registry live: nothing to rescan."""
    return {}
