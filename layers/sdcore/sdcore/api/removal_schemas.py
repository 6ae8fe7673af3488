"""The body of `POST /edits/remove`: a photo, the class to take out of it and the mask recipe,
plus the img2img fields that make sense for the inpainting (mapped to an img2img task whose
mask the worker draws, see `domain.removal`)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from sdcore.api.schemas import _GenerationBody, decode_image
from sdcore.domain.models import GenerationParams, ImageInput, TaskKind
from sdcore.domain.removal import (
    DEFAULT_BLUR,
    DEFAULT_DILATE,
    MAX_BLUR,
    MAX_DILATE,
    MaskMode,
    RemoveSpec,
)


class RemoveBody(_GenerationBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image": "inputs/user/TASK_ID/0.png",
                    "target": "person",
                    "prompt": "mountain landscape, trail",
                    "maskMode": "mask",
                    "dilate": 32,
                    "blur": 16,
                }
            ]
        }
    )

    image: str = Field(..., description="the photo: base64, a data URL, an object key or a URL")
    target: str = Field(
        "person", min_length=1, max_length=128,
        description="the class to remove: a label of the segmenter (built-in: person)",
    )  # fmt: skip
    segmenter: str | None = Field(
        None, max_length=128, description="a registered segmenter model (none: the built-in one)"
    )
    maskMode: Literal["mask", "box"] = Field(  # noqa: N815 (wire name)
        "mask", description="mask: the segmentation; box: the bounding box of each region of it"
    )
    dilate: int = Field(DEFAULT_DILATE, ge=0, le=MAX_DILATE, description="px the mask grows by")
    blur: int = Field(DEFAULT_BLUR, ge=0, le=MAX_BLUR, description="px of blur on its edge")
    threshold: float = Field(0.5, gt=0, lt=1, description="the confidence a pixel needs")
    # the masked area repainted from scratch by default (its colours filled in from around it)
    denoising_strength: float = Field(1.0, ge=0, le=1)
    resize_mode: int = Field(
        0, ge=0, le=2, description="to width x height: 0 just resize, 1 crop and resize, 2 fill"
    )
    inpainting_fill: int = Field(
        0, ge=0, le=3, description="masked content: 0 fill, 1 original, 2 latent noise, 3 nothing"
    )
    inpaint_full_res: bool = Field(False, description="inpaint only the masked region, larger")
    inpaint_full_res_padding: int = Field(32, ge=0, le=256, description="px around the region")

    def to_domain(self) -> tuple[GenerationParams, list[ImageInput], ImageInput | None]:
        spec = RemoveSpec(
            target=self.target,
            segmenter=self.segmenter or None,
            mask_mode=MaskMode(self.maskMode),
            dilate=self.dilate,
            blur=self.blur,
            threshold=self.threshold,
        )
        params = GenerationParams(
            **self._common(TaskKind.IMG2IMG),
            denoising_strength=self.denoising_strength,
            resize_mode=self.resize_mode,
            inpainting_fill=self.inpainting_fill,
            inpaint_full_res=self.inpaint_full_res,
            inpaint_full_res_padding=self.inpaint_full_res_padding,
            remove=spec,
        )
        return params, [decode_image("image", self.image)], None
