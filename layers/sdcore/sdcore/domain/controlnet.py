"""A ControlNet unit, in domain words: a registered ControlNet model, the control image (an
object key) and how strongly, when and how its guidance applies. The webui's
sd-webui-controlnet vocabulary is mapped to these at the API edge (see sdcore.webui.controlnet)."""

from __future__ import annotations

from enum import IntEnum, StrEnum

from pydantic import BaseModel, Field


class ControlMode(StrEnum):
    """How a unit's guidance weighs against the prompt's (the extension's control modes)."""

    BALANCED = "balanced"  # every residual at `weight`, both halves of classifier-free guidance
    PROMPT = "prompt"  # "My prompt is more important": soft weights, deeper residuals weaker
    CONTROLNET = "controlnet"  # "ControlNet is more important": soft weights, conditional half


class ControlResize(IntEnum):
    """How the control map is fitted to the picture's size (the extension's resize modes)."""

    JUST_RESIZE = 0  # stretched to the size
    CROP_AND_RESIZE = 1  # scaled to cover the size, the centre kept
    RESIZE_AND_FILL = 2  # scaled to fit inside, the rest black


class ControlUnit(BaseModel):
    """One enabled ControlNet unit of a task."""

    model: str  # a registered `controlnet` model
    module: str = "none"  # the preprocessor run on `image` (see sdcore.webui.controlnet)
    # the control image's object key; None: img2img's init image (and its mask), as the
    # extension uses the img2img input when a unit has no image of its own
    image: str | None = None
    mask: str | None = None  # white = masked (inpaint_only), an object key
    weight: float = 1.0
    resize_mode: ControlResize = ControlResize.CROP_AND_RESIZE
    processor_res: int = 512  # the preprocessor's resolution (shorter side), px
    threshold_a: float = -1.0  # the module's first slider (-1: its default)
    threshold_b: float = -1.0
    guidance_start: float = Field(0.0, ge=0, le=1)  # fraction of the steps it starts at
    guidance_end: float = Field(1.0, ge=0, le=1)  # and ends after
    control_mode: ControlMode = ControlMode.BALANCED
    pixel_perfect: bool = False  # processor_res from the picture's size, as the extension
    low_vram: bool = False  # keep the ControlNet on the CPU between its calls
    return_map: bool = False  # the control map used comes back as an extra picture
