"""The registered models a task names: its checkpoint, and the networks (VAE, LoRAs, upscaler
models) checked when it is submitted and fetched again when it runs."""

from __future__ import annotations

from sdcore.domain.interrogate import InterrogateMethod
from sdcore.domain.models import GenerationParams, Model, ModelType, TaskKind
from sdcore.errors import ConflictError, InvalidInputError, NotFoundError
from sdcore.services import Services
from sdcore.webui.controlnet import DEPTH_MODULES
from sdcore.webui.prompt_syntax import extract_networks
from sdcore.webui.samplers import (
    HIRES_IMAGE_UPSCALERS,
    HIRES_LATENT_UPSCALERS,
    NO_UPSCALER,
    UPSCALERS,
)
from sdcore.webui.scripts import SD_UPSCALE_RESAMPLERS

# the model type each interrogate method runs on
INTERROGATOR_TYPES = {
    InterrogateMethod.CLIP: ModelType.CAPTIONER,
    InterrogateMethod.DEEPDANBOORU: ModelType.TAGGER,
}


def resolve_model(
    svc: Services,
    name: str | None,
    kind: ModelType = ModelType.CHECKPOINT,
    field: str = "stable_diffusion_model",
) -> Model:
    """The model of `kind` a task will use (default: the default checkpoint).

    Raises NotFoundError / ConflictError when unusable, InvalidInputError (naming `field`) when
    it is a model of another type or one the fleet cannot serve.
    """
    model_name = name or svc.settings.default_model
    model = svc.models.get(model_name)
    if model.type is not kind:
        raise InvalidInputError(field, f"{model_name} is a {model.type.value}, not a {kind.value}")
    if not model.usable:
        reason = model.error or f"status is {model.status.value}"
        raise ConflictError(f"model {model_name} is not ready: {reason}")
    refused = svc.fleet.refuses(model)
    if refused is not None:
        raise InvalidInputError(field, f"{model_name}: {refused}")
    return model


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


def control_preprocessor(svc: Services, module: str, field: str) -> Model | None:
    """The `preprocessor` model a ControlNet module runs: None for a model-free module; for a
    depth module, the first usable registered preprocessor by name.

    Raises
    ------
    InvalidInputError
        A depth module with no usable preprocessor registered (naming `field`).
    """
    if module not in DEPTH_MODULES:
        return None
    found = sorted(
        (m for m in svc.models.list() if m.type is ModelType.PREPROCESSOR and m.usable),
        key=lambda m: m.name,
    )
    if not found:
        raise InvalidInputError(
            field,
            f"{module!r} runs a depth estimation model and no usable `preprocessor` model is "
            "registered: register one (a DPT or Depth Anything folder) to use the depth modules",
        )
    return found[0]


def check_networks(svc: Services, params: GenerationParams) -> None:
    """The task's VAE and `<lora:...>` checked at submit, not after it waited for a worker."""
    if params.vae is not None:
        resolve_network(svc, params.vae, ModelType.VAE, "sd_vae")
    if params.kind is not TaskKind.EXTRAS:
        for name, _weight in extract_networks(params.prompt, "prompt")[1]:
            resolve_network(svc, name, ModelType.LORA, "prompt")
    for name, field in registered_upscalers(params):
        resolve_network(svc, name, ModelType.UPSCALER, field)
    for name, field in face_restorer_names(params):
        resolve_face_restorer(svc, name, field)
    if params.interrogate is not None:
        spec = params.interrogate
        resolve_network(svc, spec.model, INTERROGATOR_TYPES[spec.method], "model")


def face_restorer_names(params: GenerationParams) -> list[tuple[str, str]]:
    """(name or architecture label, field) of the face restorers a task asks for: extras'
    `gfpgan_visibility` / `codeformer_visibility`, a generation's `restore_faces`."""
    if params.kind is not TaskKind.EXTRAS:
        return [(name, "restore_faces") for name, _ in params.face_restorers]
    fields = {"GFPGAN": "gfpgan_visibility", "CodeFormer": "codeformer_visibility"}
    return [(name, fields.get(name, "restore_faces")) for name, _ in params.face_restorers]


def resolve_face_restorer(svc: Services, name: str, field: str) -> Model:
    """The usable face restorer `name` names: the registered model of that name, else the one
    whose architecture is `name` (the webui's "CodeFormer" / "GFPGAN"), the newest first.

    Raises
    ------
    InvalidInputError
        None is registered (naming the request's `field`), or `name` is a model of another type.
    ConflictError
        The model of that name is not ready.
    """
    try:
        return resolve_network(svc, name, ModelType.FACE_RESTORER, field)
    except InvalidInputError:
        if any(m.name == name for m in svc.models.list()):
            raise
    found = [
        m
        for m in svc.models.list()
        if m.type is ModelType.FACE_RESTORER
        and m.usable
        and m.format is not None
        and str(m.details.get("architecture", "")).lower() == name.lower()
    ]
    if not found:
        raise InvalidInputError(
            field, f"no {name} face restorer is registered: register a face_restorer model"
        )
    return max(found, key=lambda m: m.modified_at)


def registered_upscalers(params: GenerationParams) -> list[tuple[str, str]]:
    """(name, field) of the upscaler models a task names (not the built-in ones): extras'
    `upscaler_1`/`upscaler_2`, txt2img's hires `hr_upscaler`, SD upscale's (`script_args`)."""
    if params.kind is TaskKind.TXT2IMG and params.hires:
        builtin = (*HIRES_LATENT_UPSCALERS, *HIRES_IMAGE_UPSCALERS)
        return [] if params.hr_upscaler in builtin else [(params.hr_upscaler, "hr_upscaler")]
    tiled = params.script.tile_upscale if params.script is not None else None
    if tiled is not None:  # img2img's SD upscale
        builtin = SD_UPSCALE_RESAMPLERS
        return [] if tiled.upscaler in builtin else [(tiled.upscaler, "script_args")]
    if params.kind is not TaskKind.EXTRAS:
        return []
    named = [(params.upscaler, "upscaler_1")]
    if params.upscaler_2_visibility > 0:
        named.append((params.upscaler_2, "upscaler_2"))
    return [(n, f) for n, f in named if n not in (*UPSCALERS, NO_UPSCALER)]
