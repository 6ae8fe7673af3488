"""Extras (the webui's postprocessing upscale): by a factor, or to a size with or without the
centre crop, by one upscaler, optionally blended with a second one's result."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image

from sdcore.domain.models import GenerationParams
from sdcore.errors import InvalidInputError
from sdcore.webui.samplers import NO_UPSCALER, UPSCALERS

MAX_UPSCALE_SIDE = 8192  # extras is a plain resample: memory is the only limit
_RESAMPLE = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}


# a registered upscaler model: (image, scale) -> the image upscaled by scale
Upscaler = Callable[[Image.Image, float], Image.Image]


def _check(name: str, field: str, models: Mapping[str, Upscaler]) -> None:
    if name not in _RESAMPLE and name not in models:
        raise InvalidInputError(field, f"unknown upscaler {name!r}; valid: {', '.join(UPSCALERS)}")


def _scaled(
    image: Image.Image, scale: float, name: str, models: Mapping[str, Upscaler]
) -> Image.Image:
    size = (int(image.width * scale), int(image.height * scale))
    for field, value in zip(("upscaling_resize_w", "upscaling_resize_h"), size, strict=True):
        if not 1 <= value <= MAX_UPSCALE_SIDE:
            raise InvalidInputError(field, f"result must be 1..{MAX_UPSCALE_SIDE}, got {value}")
    if name in models:
        return models[name](image, scale)
    return image.resize(size, _RESAMPLE[name])


def upscale(
    source: Image.Image, params: GenerationParams, models: Mapping[str, Upscaler] | None = None
) -> tuple[Image.Image, list[Any]]:
    """The upscaled image and its infotext fields, as the webui's "Upscale" postprocessing.

    To a size (`upscale_width`/`upscale_height`): scaled by the larger of the two ratios, so the
    size is covered, then (`upscale_crop`, the webui's default) centre-cropped to it. A second
    upscaler with visibility v > 0 upscales the source the same way and is blended in at v.

    Raises
    ------
    InvalidInputError
        An unknown upscaler, a factor <= 0, or a result side out of 1..8192.
    """
    models = models or {}
    _check(params.upscaler, "upscaler_1", models)
    second = params.upscaler_2 != NO_UPSCALER and params.upscaler_2_visibility > 0
    if second:
        _check(params.upscaler_2, "upscaler_2", models)
    want_w, want_h = params.upscale_width or 0, params.upscale_height or 0
    crop = None
    if want_w or want_h:
        scale = max(want_w / source.width, want_h / source.height)
        fields: list[Any] = [("Postprocess upscale to", f"{want_w}x{want_h}")]
        if params.upscale_crop and want_w and want_h:
            crop = (want_w, want_h)
            fields.append(("Postprocess crop to", f"{want_w}x{want_h}"))
    else:
        scale = params.upscale_factor
        if scale <= 0:
            raise InvalidInputError("upscaling_resize", f"must be > 0, got {scale}")
        fields = [("Postprocess upscale by", f"{scale:g}")]
    image = _scaled(source, scale, params.upscaler, models)
    fields.append(("Postprocess upscaler", params.upscaler))
    if second:
        other = _scaled(source, scale, params.upscaler_2, models)
        image = Image.blend(image, other, params.upscaler_2_visibility)
        fields.append(("Postprocess upscaler 2", params.upscaler_2))
    if crop is not None:
        (w, h), cropped = crop, Image.new("RGB", crop)
        cropped.paste(image, box=(w // 2 - image.width // 2, h // 2 - image.height // 2))
        image = cropped
    return image, fields


# a registered face restorer, by the name or label the task gives it: image -> image restored
FaceRestorer = Callable[[str, Image.Image], Image.Image]


def restore_faces(
    image: Image.Image, params: GenerationParams, restorer: FaceRestorer
) -> tuple[Image.Image, list[Any]]:
    """`image` with each asked-for face restorer's result blended over it at its visibility
    (GFPGAN, then CodeFormer, as the webui's postprocessing orders them), and the infotext
    fields the webui writes for them."""
    fields: list[Any] = []
    for name, visibility in params.face_restorers:
        restored = restorer(name, image)
        image = restored if visibility >= 1 else Image.blend(image, restored, visibility)
        fields.append((f"{name} visibility", f"{visibility:g}"))
        if name == "CodeFormer":
            fields.append(("CodeFormer weight", f"{params.codeformer_weight:g}"))
    return image, fields
