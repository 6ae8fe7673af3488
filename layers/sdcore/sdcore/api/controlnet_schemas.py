"""ControlNet units on the wire: the sd-webui-controlnet extension's unit fields (also the
native `controlnet` list), mapped once to domain units and their input images; and the body
of its /controlnet/detect route."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdcore.domain.controlnet import ControlUnit
from sdcore.domain.models import ImageInput, TaskKind
from sdcore.errors import InvalidInputError
from sdcore.webui.controlnet import (
    CONTROL_MODES,
    MAX_UNITS,
    RESIZE_MODES,
    module_name,
    processor_res,
    thresholds,
)

_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{6,64}\]$")  # the extension's "name [hash]" titles


class ControlUnitBody(BaseModel):
    """One ControlNet unit, in the extension's field names."""

    model_config = ConfigDict(extra="ignore")

    enabled: bool = True
    image: str | dict[str, Any] | None = Field(
        None,
        description="the control image: base64, a data URL, an object key or an http(s) URL "
        "(img2img: none = the init image); the extension's {image, mask} object too",
    )
    input_image: str | None = Field(None, description="the extension's older name of `image`")
    mask: str | None = Field(None, description="white = masked (inpaint_only)")
    module: str = Field("none", description="preprocessor: GET /sdapi/v1/controlnet/module_list")
    model: str | None = Field(None, description="a registered controlnet model")
    weight: float = Field(1.0, ge=0, le=2)
    resize_mode: int | str = Field(
        "Crop and Resize", description="0 Just Resize, 1 Crop and Resize, 2 Resize and Fill"
    )
    processor_res: int = Field(-1, ge=-1, le=2048, description="-1: the module's default")
    threshold_a: float = Field(-1, description="the module's first slider (-1: its default)")
    threshold_b: float = Field(-1, description="the module's second slider (-1: its default)")
    guidance_start: float = Field(0.0, ge=0, le=1)
    guidance_end: float = Field(1.0, ge=0, le=1)
    control_mode: int | str = Field(
        "balanced",
        description="balanced, prompt or controlnet (0/1/2, or the extension's labels "
        "'Balanced', 'My prompt is more important', 'ControlNet is more important')",
    )
    pixel_perfect: bool = False
    low_vram: bool = False
    save_detected_map: bool | None = Field(
        None, description="webui routes: return the control map (default: yes, as the extension)"
    )
    return_control_map: bool = Field(False, description="native routes: return the control map")


@dataclass
class ParsedControls:
    """The enabled units, their images to store ((unit index, "image" | "mask") -> input) and
    each unit's wire path (for messages naming its fields)."""

    units: list[ControlUnit] = field(default_factory=list)
    images: dict[tuple[int, str], ImageInput] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)


def parse_units(
    raw: Any, path: str, kind: TaskKind, webui: bool, decode: Callable[[str, str], ImageInput]
) -> ParsedControls:
    """The units of `raw` (a list of unit objects) at wire path `path`; `decode` (field, value)
    reads an image as the request's other images are read.

    Raises InvalidInputError naming the unit's field (`<path>[i].<field>`)."""
    if raw is None:
        return ParsedControls()
    if not isinstance(raw, list):
        raise InvalidInputError(path, "a list of ControlNet units")
    parsed = ParsedControls()
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        try:
            body = (
                item if isinstance(item, ControlUnitBody) else ControlUnitBody.model_validate(item)
            )
        except ValidationError as exc:
            error = exc.errors()[0]
            loc = ".".join(str(p) for p in error["loc"][:1])
            raise InvalidInputError(f"{where}.{loc}" if loc else where, error["msg"]) from None
        if not body.enabled:
            continue
        unit = _unit(body, where, kind, webui)
        n = len(parsed.units)
        image: Any = body.image if body.image is not None else body.input_image
        mask: Any = body.mask
        if isinstance(image, dict):  # the extension's {"image": ..., "mask": ...}
            mask = mask or image.get("mask")
            image = image.get("image")
        if not isinstance(image, str | None) or not isinstance(mask, str | None):
            raise InvalidInputError(f"{where}.image", "an image as base64, a URL or a key")
        if image:
            parsed.images[(n, "image")] = decode(f"{where}.image", image)
        elif kind is not TaskKind.IMG2IMG:
            raise InvalidInputError(f"{where}.image", "txt2img needs a control image per unit")
        if mask:
            parsed.images[(n, "mask")] = decode(f"{where}.mask", mask)
        parsed.units.append(unit)
        parsed.paths.append(where)
    if len(parsed.units) > MAX_UNITS:
        raise InvalidInputError(path, f"at most {MAX_UNITS} enabled units")
    return parsed


def _unit(body: ControlUnitBody, where: str, kind: TaskKind, webui: bool) -> ControlUnit:
    module = module_name(body.module, f"{where}.module")
    model = _HASH_SUFFIX.sub("", (body.model or "").strip())
    if model in ("", "None", "none"):
        raise InvalidInputError(f"{where}.model", "a registered controlnet model is needed")
    mode = CONTROL_MODES.get(str(body.control_mode))
    if mode is None:
        raise InvalidInputError(f"{where}.control_mode", "balanced, prompt or controlnet (0-2)")
    resize = RESIZE_MODES.get(str(body.resize_mode))
    if resize is None:
        raise InvalidInputError(
            f"{where}.resize_mode", "Just Resize, Crop and Resize or Resize and Fill (0-2)"
        )
    if body.guidance_start > body.guidance_end:
        raise InvalidInputError(f"{where}.guidance_end", "must not be below guidance_start")
    a, b = thresholds(module, body.threshold_a, body.threshold_b)
    if module == "tile_resample" and not 1 <= a <= 8:
        raise InvalidInputError(f"{where}.threshold_a", "the down sampling rate: 1 to 8")
    if module in ("canny", "threshold", "scribble") and not 0 <= a <= 255:
        raise InvalidInputError(f"{where}.threshold_a", "0 to 255")
    if module == "canny" and not 0 <= b <= 255:
        raise InvalidInputError(f"{where}.threshold_b", "0 to 255")
    res = processor_res(module, body.processor_res)
    if res < 64:
        raise InvalidInputError(f"{where}.processor_res", "64 to 2048 (-1: the default)")
    wants_map = body.return_control_map or (webui and body.save_detected_map is not False)
    return ControlUnit(
        model=model,
        module=module,
        weight=body.weight,
        resize_mode=resize,
        processor_res=res,
        threshold_a=a,
        threshold_b=b,
        guidance_start=body.guidance_start,
        guidance_end=body.guidance_end,
        control_mode=mode,
        pixel_perfect=body.pixel_perfect,
        low_vram=body.low_vram,
        return_map=wants_map,
    )


class DetectBody(BaseModel):
    """POST /sdapi/v1/controlnet/detect, as the extension takes it."""

    model_config = ConfigDict(extra="ignore")

    controlnet_module: str = Field("none", description="GET /sdapi/v1/controlnet/module_list")
    controlnet_input_images: list[str] = Field(..., min_length=1, max_length=8)
    controlnet_masks: list[str] = Field(default_factory=list, max_length=8)
    controlnet_processor_res: int = Field(512, ge=-1, le=2048)
    controlnet_threshold_a: float = -1
    controlnet_threshold_b: float = -1
    low_vram: bool = False


class DetectResult(BaseModel):
    images: list[str]
    info: str = "Success"


class ModuleList(BaseModel):
    module_list: list[str]
    module_detail: dict[str, Any]


class ControlnetVersion(BaseModel):
    version: int


class ControlnetSettings(BaseModel):
    control_net_unit_count: int
