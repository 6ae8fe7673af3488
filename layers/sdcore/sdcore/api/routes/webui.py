"""AUTOMATIC1111 webui-compatible routes (`/sdapi/v1/*`): existing webui API clients work
unchanged. Each generation is a task like any other (caps, history, isolation), waited on
synchronously as the webui does; images go back as plain base64 and `info` as a JSON string."""

from __future__ import annotations

import base64
import json

from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.front_door import front_door_waits
from sdcore.api.routes.common import WEBUI, documented, principal
from sdcore.api.schemas import decode_image
from sdcore.api.webui_responses import (
    ControlnetModels,
    Embedding,
    Embeddings,
    Empty,
    ExtrasImage,
    ExtrasImages,
    Images,
    Lora,
    Options,
    PngInfo,
    Progress,
    ProgressState,
    Sampler,
    Scheduler,
    Scripts,
    SdModel,
    SdVae,
    Upscaler,
)
from sdcore.api.webui_schemas import (
    OptionsBody,
    PngInfoBody,
    WebuiExtrasBatch,
    WebuiExtrasSingle,
    WebuiImg2Img,
    WebuiTxt2Img,
)
from sdcore.composition import get_services
from sdcore.domain.models import Model, ModelFormat, ModelType, TaskKind
from sdcore.usecases import webui as webui_cases
from sdcore.webui.samplers import SAMPLER_ALIASES, SAMPLERS, SCHEDULES, UPSCALERS, sampler_options
from sdcore.webui.scripts import script_names
from sdcore.webui.titles import checkpoint_title

router = APIGatewayRouter()
PREFIX = "/sdapi/v1"
WAITED = {
    500: {"description": "The generation failed: `detail` says why."},
    504: {"description": "Still running after SD_WEBUI_TIMEOUT: `taskId` names the task."},
}


def _b64(images: list[bytes]) -> list[str]:
    return [base64.b64encode(data).decode() for data in images]


def _generate(body: WebuiTxt2Img | WebuiImg2Img) -> Images:
    tag = (router.current_event.query_string_parameters or {}).get("task_id")
    if tag and not body.taskId:  # PAI-EAS's ?task_id= tag: our client-chosen task id
        body = body.model_copy(update={"taskId": tag})
    svc = get_services()
    request = body.to_submission(body.requested_checkpoint())
    asked = webui_cases.WebuiRequest(
        frozenset(body.model_fields_set),
        body.override_settings,
        body.styles,
        script=body.script_name or None,
        script_args=body.script_args,
        scheduler=body.scheduler,
    )
    with front_door_waits(router):
        done = webui_cases.generate(
            svc, principal(router), request, svc.settings.webui_timeout_s, asked
        )
    info = dict(done.task.info)
    info.setdefault("infotexts", [])
    info["task_id"] = done.task.public_id
    parameters = body.model_dump(mode="json", exclude={"init_images", "mask"})
    return Images(
        images=_b64(done.images),
        parameters={**parameters, "sd_vae": done.vae},
        info=json.dumps(info),
    )


@documented(router.post, f"{PREFIX}/txt2img", tags=[WEBUI], responses=WAITED)
def webui_txt2img(body: WebuiTxt2Img) -> Images:
    """webui txt2img.

    Waits for the images (504 with the taskId when they take longer than SD_WEBUI_TIMEOUT).
    """
    return _generate(body)


@documented(router.post, f"{PREFIX}/img2img", tags=[WEBUI], responses=WAITED)
def webui_img2img(body: WebuiImg2Img) -> Images:
    """webui img2img (inpainting with `mask`)."""
    return _generate(body)


@documented(router.post, f"{PREFIX}/extra-single-image", tags=[WEBUI], responses=WAITED)
def webui_extra_single(body: WebuiExtrasSingle) -> ExtrasImage:
    """webui extras on one image."""
    svc = get_services()
    with front_door_waits(router):
        done = webui_cases.generate(
            svc, principal(router), body.to_submission(), svc.settings.webui_timeout_s
        )
    return ExtrasImage(image=_b64(done.images)[0])


@documented(router.post, f"{PREFIX}/extra-batch-images", tags=[WEBUI], responses=WAITED)
def webui_extra_batch(body: WebuiExtrasBatch) -> ExtrasImages:
    """webui extras on several images (one task each)."""
    svc = get_services()
    requests = [single.to_submission() for single in body.singles()]
    images = webui_cases.generate_each(
        svc, principal(router), requests, svc.settings.webui_timeout_s
    )
    return ExtrasImages(images=_b64(images))


@documented(router.post, f"{PREFIX}/png-info", tags=[WEBUI])
def webui_png_info(body: PngInfoBody) -> PngInfo:
    """The generation parameters stored in a PNG."""
    text, fields = webui_cases.png_info(decode_image("image", body.image).data)
    return PngInfo(info=text, items={"parameters": text} if text else {}, parameters=fields)


@documented(router.get, f"{PREFIX}/progress", tags=[WEBUI])
def webui_progress() -> Progress:
    """Progress of the caller's current task."""
    task = webui_cases.current(get_services(), principal(router))
    if task is None:
        idle = ProgressState(skipped=False, interrupted=False, job="", job_count=0, job_no=0,
                             sampling_step=0, sampling_steps=0)  # fmt: skip
        return Progress(progress=0.0, eta_relative=0.0, state=idle, current_image=None)
    state = ProgressState(
        skipped=bool(task.skip_requests),
        interrupted=task.cancel_requested,
        job=task.task_id,
        job_count=task.job_count,
        job_no=task.job_no,
        sampling_step=task.sampling_step,
        sampling_steps=task.sampling_steps,
    )
    return Progress(progress=task.progress, eta_relative=task.eta_s or 0.0, state=state,
                    current_image=task.current_image)  # fmt: skip


@documented(router.post, f"{PREFIX}/interrupt", tags=[WEBUI])
def webui_interrupt() -> Empty:
    """Stop the caller's current task."""
    webui_cases.interrupt(get_services(), principal(router))
    return Empty()


@documented(router.post, f"{PREFIX}/skip", tags=[WEBUI])
def webui_skip() -> Empty:
    """End the current job (one n_iter batch) of the caller's running task; the next runs."""
    webui_cases.skip(get_services(), principal(router))
    return Empty()


@documented(router.get, f"{PREFIX}/options", tags=[WEBUI])
def webui_get_options() -> Options:
    """Every webui setting: the webui's defaults overlaid with what the caller set."""
    return Options(**webui_cases.options(get_services(), principal(router)))


@documented(router.post, f"{PREFIX}/options", tags=[WEBUI])
def webui_set_options(body: OptionsBody) -> Empty:
    """Change the caller's settings (any webui setting; 422 naming an unknown or bad one).

    Those that change generation apply to the caller's webui requests that leave them out:
    sd_model_checkpoint, sd_vae, CLIP_stop_at_last_layers, eta_noise_seed_delta, randn_source
    (GPU or CPU), eta_ancestral and s_noise.
    """
    webui_cases.set_options(get_services(), principal(router), body.model_dump(exclude_unset=True))
    return Empty()


def _usable(kind: ModelType) -> list[Model]:
    return webui_cases.usable(get_services(), kind)


def _filename(m: Model) -> str:
    suffix = ".safetensors" if m.format is ModelFormat.SAFETENSORS else ""
    return f"{m.name}{suffix}"


@documented(router.get, f"{PREFIX}/sd-models", tags=[WEBUI])
def webui_sd_models() -> list[SdModel]:
    """Registered checkpoints, from the model registry."""
    return [
        SdModel(
            title=checkpoint_title(m.name, m.sha256),
            model_name=m.name,
            hash=m.sha256[:10],
            sha256=m.sha256,
            filename=_filename(m),
            config=m.config if m.format is ModelFormat.SAFETENSORS else None,
        )
        for m in _usable(ModelType.CHECKPOINT)
    ]


@documented(router.get, f"{PREFIX}/sd-vae", tags=[WEBUI])
def webui_sd_vae() -> list[SdVae]:
    """Registered VAEs."""
    return [SdVae(model_name=m.name, filename=_filename(m)) for m in _usable(ModelType.VAE)]


@documented(router.get, f"{PREFIX}/loras", tags=[WEBUI])
def webui_loras() -> list[Lora]:
    """Registered LoRAs (use one with <lora:name:weight> in the prompt)."""
    return [
        Lora(
            name=m.name,
            alias=m.name,
            path=_filename(m),
            metadata={"sha256": m.sha256, **m.details},
        )
        for m in _usable(ModelType.LORA)
    ]


@documented(router.get, f"{PREFIX}/embeddings", tags=[WEBUI])
def webui_embeddings() -> Embeddings:
    """Registered textual-inversion embeddings (used by their name in the prompt)."""
    loaded = {
        m.name: Embedding(shape=m.details.get("shape"), vectors=m.details.get("vectors"))
        for m in _usable(ModelType.EMBEDDING)
    }
    return Embeddings(loaded=loaded)


@documented(router.get, f"{PREFIX}/upscalers", tags=[WEBUI])
def webui_upscalers() -> list[Upscaler]:
    """Upscalers for extras: the built-in resamplers, then registered upscaler models."""
    builtin = [
        Upscaler(name=name, model_name=None, model_path=None, scale=4)
        for name in ("None", *UPSCALERS)
    ]
    registered = [
        Upscaler(
            name=m.name,
            model_name=m.name,
            model_path=_filename(m),
            scale=m.details.get("scale", 4),
        )
        for m in _usable(ModelType.UPSCALER)
    ]
    return builtin + registered


@documented(router.get, f"{PREFIX}/controlnet/model_list", tags=[WEBUI])
def webui_controlnet_models() -> ControlnetModels:
    """Registered ControlNet models (the sd-webui-controlnet extension's listing)."""
    return ControlnetModels(model_list=[m.name for m in _usable(ModelType.CONTROLNET)])


@documented(router.get, f"{PREFIX}/samplers", tags=[WEBUI])
def webui_samplers() -> list[Sampler]:
    """Samplers this service runs."""
    return [
        Sampler(name=name, aliases=list(SAMPLER_ALIASES[name]), options=sampler_options(name))
        for name in SAMPLERS
    ]


@documented(router.get, f"{PREFIX}/schedulers", tags=[WEBUI])
def webui_schedulers() -> list[Scheduler]:
    """Schedule types this service runs (the `scheduler` field)."""
    return [
        Scheduler(
            name=s.name,
            label=s.label,
            aliases=list(s.aliases) or None,
            default_rho=s.default_rho,
            need_inner_model=s.need_inner_model,
        )
        for s in SCHEDULES
    ]


@documented(router.get, f"{PREFIX}/scripts", tags=[WEBUI])
def webui_scripts() -> Scripts:
    """The webui scripts a txt2img or img2img request may name in `script_name`."""
    return Scripts(
        txt2img=list(script_names(TaskKind.TXT2IMG)), img2img=list(script_names(TaskKind.IMG2IMG))
    )


@documented(router.post, f"{PREFIX}/refresh-checkpoints", tags=[WEBUI])
def webui_refresh_checkpoints() -> Empty:
    """Listings read the model registry live: nothing to rescan."""
    return Empty()


@documented(router.post, f"{PREFIX}/refresh-vae", tags=[WEBUI])
def webui_refresh_vae() -> Empty:
    """Listings read the model registry live: nothing to rescan."""
    return Empty()


@documented(router.post, f"{PREFIX}/refresh-loras", tags=[WEBUI])
def webui_refresh_loras() -> Empty:
    """Listings read the model registry live: nothing to rescan."""
    return Empty()


@documented(router.post, f"{PREFIX}/refresh-embeddings", tags=[WEBUI])
def webui_refresh_embeddings() -> Empty:
    """Listings read the model registry live: nothing to rescan."""
    return Empty()
