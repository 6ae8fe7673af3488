"""ControlNet units: checked when a task is submitted (their models registered, of the
checkpoint's architecture), fetched when it runs, and the preprocessors of
/controlnet/detect."""

from __future__ import annotations

import io
from collections.abc import Collection

from PIL import Image

from sdcore.domain.models import GenerationParams, Model, ModelType, TaskKind
from sdcore.errors import InvalidInputError
from sdcore.services import Services
from sdcore.usecases.networks import control_preprocessor, resolve_network
from sdcore.webui.control_maps import detect
from sdcore.webui.controlnet import DEPTH_MODULES, module_name, processor_res, thresholds


def check_controls(
    svc: Services,
    params: GenerationParams,
    checkpoint: Model,
    paths: list[str],
    images: Collection[tuple[int, str]],
    has_mask: bool,
) -> None:
    """Each unit's model is a usable controlnet of the checkpoint's architecture (where both
    records name one); each has an image (img2img: its init image at least), inpaint_only a
    mask, a depth module a registered `preprocessor`. `paths`: each unit's wire path;
    `images`: the (unit, "image" | "mask") given; `has_mask`: img2img's mask is given.

    Raises
    ------
    InvalidInputError
        Naming the unit's field (`<path>.model`, `<path>.mask`, `<path>.module`).
    ConflictError
        The ControlNet model is not ready.
    """
    for i, unit in enumerate(params.controlnet):
        where = paths[i] if i < len(paths) else f"controlnet[{i}]"
        found = resolve_network(svc, unit.model, ModelType.CONTROLNET, f"{where}.model")
        arch = found.details.get("architecture")
        want = checkpoint.details.get("architecture")
        if arch and want and arch != want:
            raise InvalidInputError(
                f"{where}.model",
                f"{unit.model} is an {arch} ControlNet; the checkpoint {checkpoint.name} is {want}",
            )
        control_preprocessor(svc, unit.module, f"{where}.module")
        if unit.module == "inpaint_only" and (i, "mask") not in images and not has_mask:
            raise InvalidInputError(f"{where}.mask", "inpaint_only needs a mask (or img2img's)")
        if (i, "image") not in images and params.kind is not TaskKind.IMG2IMG:
            raise InvalidInputError(f"{where}.image", "a control image is needed")


def detect_maps(
    module: str,
    images: list[bytes],
    masks: list[bytes],
    res: int,
    threshold_a: float,
    threshold_b: float,
) -> list[bytes]:
    """The extension's /controlnet/detect: each image's control map, as PNG bytes.

    Raises InvalidInputError naming `controlnet_module` (a module that does not run here, or a
    depth module: those run a model in the engine, their maps come back with a generation),
    `controlnet_input_images` (not an image) or `controlnet_masks` (inpaint_only without)."""
    name = module_name(module, "controlnet_module")
    if name in DEPTH_MODULES:
        raise InvalidInputError(
            "controlnet_module",
            f"{name!r} runs a depth model on the GPU workers: detect runs the model-free modules "
            "only; a generation's unit returns its depth map with save_detected_map (webui) or "
            "return_control_map",
        )
    a, b = thresholds(name, threshold_a, threshold_b)
    out = []
    for i, data in enumerate(images):
        image = _open(data, f"controlnet_input_images[{i}]")
        mask = _open(masks[i], f"controlnet_masks[{i}]") if i < len(masks) else None
        if name == "inpaint_only" and mask is None:
            raise InvalidInputError("controlnet_masks", "inpaint_only needs a mask per image")
        found = detect(name, image, processor_res(name, res), a, b, mask)
        picture = found.image
        if found.masked is not None:  # the masked pixels shown black
            picture = Image.composite(Image.new("RGB", picture.size), picture, found.masked)
        buf = io.BytesIO()
        picture.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _open(data: bytes, field: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > 4096 * 4096:
            raise InvalidInputError(field, "image too large")
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError):
        raise InvalidInputError(field, "not a readable image") from None
    return image
