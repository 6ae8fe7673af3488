"""The webui's read-only listings and reports (`/sdapi/v1`), answered truthfully for this
service: what it runs (its scripts with their arguments), what it does not (hypernetworks,
extensions: empty lists), and the memory of the process that answers; and interrogation."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.front_door import front_door_waits
from sdcore.api.routes.common import WEBUI, documented, principal
from sdcore.api.schemas import decode_image
from sdcore.api.webui_responses import (
    Extension,
    FaceRestorer,
    Hypernetwork,
    Interrogation,
    LatentUpscaleMode,
    Memory,
    PromptStyle,
    Realesrgan,
    ScriptInfo,
    SdModule,
)
from sdcore.api.webui_schemas import InterrogateBody
from sdcore.composition import get_services
from sdcore.domain.models import Model, ModelFormat, ModelType
from sdcore.usecases import interrogate as interrogate_cases
from sdcore.usecases import styles as style_cases
from sdcore.usecases import webui as webui_cases
from sdcore.usecases import webui_info as info_cases
from sdcore.webui.flags import FLAGS
from sdcore.webui.samplers import HIRES_LATENT_UPSCALERS

router = APIGatewayRouter()
PREFIX = "/sdapi/v1"


def _filename(m: Model) -> str:
    return f"{m.name}.safetensors" if m.format is ModelFormat.SAFETENSORS else m.name


@documented(router.get, f"{PREFIX}/cmd-flags", tags=[WEBUI])
def webui_cmd_flags() -> dict[str, Any]:
    """The webui's command-line flags, with the values that describe this service.

    The API only (`api`, `nowebui`); no model directories (models come from the registry); no
    credentials are ever reported.
    """
    return dict(FLAGS)


@documented(router.get, f"{PREFIX}/hypernetworks", tags=[WEBUI])
def webui_hypernetworks() -> list[Hypernetwork]:
    """Hypernetworks are not supported here: always an empty list."""
    return []


@documented(router.get, f"{PREFIX}/face-restorers", tags=[WEBUI])
def webui_face_restorers() -> list[FaceRestorer]:
    """Registered face restorer models (GFPGAN, CodeFormer), by the names the
    `face_restoration_model` option takes."""
    usable = webui_cases.usable(get_services(), ModelType.FACE_RESTORER)
    return [FaceRestorer(name=m.name, cmd_dir=None) for m in usable]


@documented(router.get, f"{PREFIX}/realesrgan-models", tags=[WEBUI])
def webui_realesrgan_models() -> list[Realesrgan]:
    """Registered upscaler models (all of the ESRGAN / Real-ESRGAN family the engine loads)."""
    return [
        Realesrgan(name=m.name, path=_filename(m), scale=int(m.details.get("scale", 4)))
        for m in webui_cases.usable(get_services(), ModelType.UPSCALER)
    ]


@documented(router.get, f"{PREFIX}/prompt-styles", tags=[WEBUI])
def webui_prompt_styles() -> list[PromptStyle]:
    """The caller's prompt styles (managed under /styles)."""
    return [
        PromptStyle(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt)
        for s in style_cases.list_styles(get_services(), principal(router))
    ]


@documented(router.get, f"{PREFIX}/memory", tags=[WEBUI])
def webui_memory() -> Memory:
    """The memory of the process that answers: RAM, and the GPU's when NVML is available.

    Generation runs in other processes (the inference functions); their memory is not here.
    """
    return Memory(**info_cases.memory())


@documented(router.get, f"{PREFIX}/extensions", tags=[WEBUI])
def webui_extensions() -> list[Extension]:
    """No webui extensions are installed; ControlNet is built in (see /controlnet/model_list)."""
    return []


@documented(router.get, f"{PREFIX}/script-info", tags=[WEBUI])
def webui_script_info() -> list[ScriptInfo]:
    """The webui scripts run here, with their arguments in `script_args` order."""
    return [ScriptInfo.model_validate(script) for script in info_cases.scripts()]


@documented(router.get, f"{PREFIX}/latent-upscale-modes", tags=[WEBUI])
def webui_latent_upscale_modes() -> list[LatentUpscaleMode]:
    """The hires fix's latent upscale modes (`hr_upscaler`)."""
    return [LatentUpscaleMode(name=name) for name in HIRES_LATENT_UPSCALERS]


@documented(router.get, f"{PREFIX}/sd-modules", tags=[WEBUI])
def webui_sd_modules() -> list[SdModule]:
    """Registered VAEs: the modules a request's `sd_vae` names."""
    return [
        SdModule(model_name=m.name, filename=_filename(m))
        for m in webui_cases.usable(get_services(), ModelType.VAE)
    ]


@documented(
    router.post,
    f"{PREFIX}/interrogate",
    tags=[WEBUI],
    responses={
        422: {"description": "`model` is not clip/deepdanbooru or none of its type is registered."},
        504: {"description": "Still running after SD_WEBUI_TIMEOUT: `taskId` names the task."},
    },
)
def webui_interrogate(body: InterrogateBody) -> Interrogation:
    """A caption of the image (`clip`: a registered captioner) or its tags (`deepdanbooru`: a
    registered tagger), written as the webui writes them; waits like txt2img."""
    svc = get_services()
    with front_door_waits(router):
        caption = interrogate_cases.interrogate(
            svc,
            principal(router),
            decode_image("image", body.image),
            body.model,
            svc.settings.webui_timeout_s,
        )
    return Interrogation(caption=caption)
