"""What a removal asks of the worker, in domain words: segment the `target` class in the
picture, turn the segmentation into a mask (the segmentation itself or its boxes, dilated and
blurred), inpaint the masked area and paste the original back outside it."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

# the segmenter that runs without a registered model: MediaPipe's selfie segmentation
BUILTIN_SEGMENTER = "mediapipe-selfie-segmentation"
BUILTIN_LABELS = ("person",)
# the recipe's defaults: a margin round the person (shadows, stray hair) and a soft edge
DEFAULT_DILATE, DEFAULT_BLUR = 16, 8
MAX_DILATE, MAX_BLUR = 256, 64


class MaskMode(StrEnum):
    MASK = "mask"  # the segmentation as it is
    BOX = "box"  # the bounding box of each connected region of it


class RemoveSpec(BaseModel):
    """A removal's segmentation and mask recipe."""

    target: str = "person"  # a class label the segmenter knows
    segmenter: str | None = None  # a registered `segmenter` model; None: the built-in one
    mask_mode: MaskMode = MaskMode.MASK
    dilate: int = Field(0, ge=0)  # px the mask grows by, all round
    blur: int = Field(0, ge=0)  # px of Gaussian blur on its edge (the webui's mask_blur)
    threshold: float = Field(0.5, gt=0, lt=1)  # the segmenter's confidence a pixel needs

    @property
    def segmenter_name(self) -> str:
        return self.segmenter or BUILTIN_SEGMENTER
