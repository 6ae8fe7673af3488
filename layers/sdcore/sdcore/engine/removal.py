"""Removing a class of things (people, by default) from a photo, as the classic recipe does it:
segment the target, take the segmentation or its boxes, dilate, blur, inpaint, and paste the
original back outside the blurred mask, so every pixel the mask leaves alone is the input's.

The photo is first brought to the task's size as img2img does (`resize_mode`); the mask is drawn
on that picture, and it is the "input" the result equals outside the mask. The result is the
edited picture, then the mask that was used (white: repainted)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageFilter

from sdcore.domain.models import GenerationParams
from sdcore.domain.removal import MaskMode, RemoveSpec
from sdcore.engine.img2img import resize_image
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs, EngineResult
from sdcore.ports.segmenter import Segmenter

# runs the inpainting of the drawn mask (the engine's ordinary img2img path)
Inpaint = Callable[[GenerationParams, EngineInputs], EngineResult]


def boxes(mask: Image.Image) -> Image.Image:
    """The bounding box of each connected region (8-connected) of `mask`, filled."""
    found = np.asarray(mask.convert("L")) > 127
    count, _, stats, _ = cv2.connectedComponentsWithStats(found.astype(np.uint8), connectivity=8)
    out = np.zeros(found.shape, np.uint8)
    for x, y, w, h, _area in stats[1:count]:
        out[y : y + h, x : x + w] = 255
    return Image.fromarray(out, "L")


def dilate(mask: Image.Image, px: int) -> Image.Image:
    """`mask` grown by `px` all round (a disc of radius `px`)."""
    if px <= 0:
        return mask
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return Image.fromarray(cv2.dilate(np.asarray(mask.convert("L")), disc), "L")


def blur(mask: Image.Image, px: int) -> Image.Image:
    """`mask`'s edge softened by a Gaussian blur of radius `px` (the webui's mask_blur)."""
    return mask.filter(ImageFilter.GaussianBlur(px)) if px > 0 else mask


def final_mask(segmentation: Image.Image, spec: RemoveSpec) -> Image.Image:
    """The mask a removal inpaints with: the segmentation (or its boxes), dilated, blurred."""
    binary = segmentation.convert("L").point(lambda v: 255 if v > 127 else 0)
    if spec.mask_mode is MaskMode.BOX:
        binary = boxes(binary)
    return blur(dilate(binary, spec.dilate), spec.blur)


def coverage(mask: Image.Image) -> float:
    """The share of the picture the mask touches at all (0: nothing to remove)."""
    return round(float((np.asarray(mask.convert("L")) > 0).mean()), 4)


def composite(original: Image.Image, edited: Image.Image, mask: Image.Image) -> Image.Image:
    """`edited` where the mask is white, `original` where it is black, blended between: a pixel
    the mask leaves at 0 is the original's exactly."""
    return Image.composite(edited.convert("RGB"), original.convert("RGB"), mask.convert("L"))


def remove(
    params: GenerationParams,
    inputs: EngineInputs,
    segmenter: Segmenter,
    size: tuple[int, int],
    inpaint: Inpaint,
) -> EngineResult:
    """Run the removal `params.remove` asks for at `size` (the task's width and height).

    Raises
    ------
    InvalidInputError
        No photo, or a target the segmenter does not know (field `target`).
    """
    spec = params.remove
    if spec is None or not inputs.init_images:
        raise InvalidInputError("image", "a removal needs a photo")
    width, height = size
    photo = resize_image(params.resize_mode, inputs.init_images[0].convert("RGB"), width, height)
    started = time.perf_counter()
    try:
        segmentation = segmenter.segment(photo, spec.target, spec.threshold)
    except ValueError as exc:
        raise InvalidInputError("target", str(exc)) from exc
    mask = final_mask(segmentation, spec)
    segment_s = time.perf_counter() - started
    info: dict[str, Any] = {
        "segmenter": segmenter.name,
        "target": spec.target,
        "maskMode": spec.mask_mode.value,
        "dilate": spec.dilate,
        "blur": spec.blur,
        "maskCoverage": coverage(mask),
        "segment_s": round(segment_s, 3),
    }
    if info["maskCoverage"] == 0:  # nothing of the target: the photo as it is
        info.update(inpaint_s=0.0, width=width, height=height)
        return EngineResult(images=[photo, mask], infotexts=["", ""], info=info)
    # the mask is blurred already: the inpainting takes it as it is
    job = params.model_copy(
        update={"remove": None, "width": width, "height": height, "mask_blur": 0, "resize_mode": 0}
    )
    started = time.perf_counter()
    result = inpaint(job, replace(inputs, init_images=[photo], mask=mask))
    info["inpaint_s"] = round(time.perf_counter() - started, 3)
    info["inpaint"] = {
        "denoising_strength": params.denoising_strength,
        "inpainting_fill": params.inpainting_fill,
        "inpaint_full_res": params.inpaint_full_res,
        "inpaint_full_res_padding": params.inpaint_full_res_padding,
    }
    n = params.image_count  # the pictures; control maps asked for come after them
    images = [composite(photo, image, mask) for image in result.images[:n]]
    return replace(
        result,
        images=[*images, *result.images[n:], mask],
        infotexts=[*result.infotexts, ""],
        info={**result.info, **info},
    )
