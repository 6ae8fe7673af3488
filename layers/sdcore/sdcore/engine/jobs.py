"""What one task gives the pipeline, by kind: txt2img (with its hires plan), img2img (the
webui's resize modes, latent upscale) and inpainting (the webui's mask handling, "only masked",
masked content). Checked here, before any denoising, with the webui name of a bad field."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from PIL import Image, ImageFilter, ImageOps

from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.engine.hires import HiresPlan, plan_hires
from sdcore.engine.img2img import (
    FILL,
    LATENT_NOISE,
    LATENT_NOTHING,
    LATENT_UPSCALE,
    RESIZE_AND_FILL,
    fill,
    latent_mask,
    resize_image,
)
from sdcore.engine.model import LoadedModel
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs
from sdcore.webui.generation_rules import check_counts, check_img2img, task_size


@dataclass
class Job:
    """What one `run` needs besides the params: the pipeline and its per-kind arguments."""

    pipe: Any  # a StableDiffusion*Pipeline; diffusers registers their modules dynamically
    kwargs: dict[str, Any]
    width: int
    height: int
    inpaint: bool = False
    overlay: tuple[Image.Image, Image.Image] | None = None  # (mask, init image) pasted back
    hires: HiresPlan | None = None  # txt2img's hires fix
    crop: tuple[int, int, int, int] | None = None  # inpaint_full_res: the region inpainted
    # inpainting_fill 2/3: (image latents, repaint mask at latent size, with noise or zeros)
    latent_fill: tuple[torch.Tensor, torch.Tensor, bool] | None = None


def prepare_job(
    model: LoadedModel, params: GenerationParams, inputs: EngineInputs, upscalers: Collection[str]
) -> Job:
    """The pipeline and arguments of a txt2img or img2img task. `upscalers`: the registered
    upscaler models the task has (usable as the hires fix's upscaler).

    Raises
    ------
    InvalidInputError
        A size, count, strength or mode out of range; a sampler not known; no init image.
    """
    width, height = size(model, params)
    check_counts(params)
    if params.kind is TaskKind.TXT2IMG:
        return _txt2img_job(model, params, width, height, upscalers)
    return _img2img_job(model, params, inputs, width, height)


def size(model: LoadedModel, params: GenerationParams) -> tuple[int, int]:
    """The task's (width, height): as asked, else the checkpoint's native size."""
    return task_size(params, model.native_size)


def _txt2img_job(
    model: LoadedModel,
    params: GenerationParams,
    width: int,
    height: int,
    upscalers: Collection[str],
) -> Job:
    size = {"width": width, "height": height}
    if not model.inpainting:
        hires = plan_hires(params, width, height, upscalers)
        return Job(model.txt2img, size, width, height, hires=hires)
    # the webui's conditioning for an inpainting model: everything masked, a grey image
    if params.hires:
        raise InvalidInputError("enable_hr", "not available on an inpainting checkpoint")
    grey, everything = (
        Image.new("RGB", (width, height), (128,) * 3),
        Image.new("L", (width, height), 255),
    )
    kwargs = {"image": grey, "mask_image": everything, "strength": 1.0, **size}
    return Job(model.inpaint, kwargs, width, height)


def _img2img_job(
    model: LoadedModel, params: GenerationParams, inputs: EngineInputs, width: int, height: int
) -> Job:
    if not inputs.init_images:
        raise InvalidInputError("init_images", "img2img needs one init image")
    check_img2img(params)
    strength = params.denoising_strength
    source = inputs.init_images[0].convert("RGB")
    if inputs.mask is None and model.inpainting:  # the webui: the whole image is masked
        everything = Image.new("L", source.size, 255)
        return _inpaint_job(model, params, source, everything, width, height)
    if inputs.mask is not None:
        return _inpaint_job(model, params, source, inputs.mask, width, height)
    image: Any = resize_image(params.resize_mode, source, width, height)
    if params.resize_mode == LATENT_UPSCALE:  # encoded at its own size, then resized
        image = F.interpolate(model.encode(source), size=(height // 8, width // 8), mode="bilinear")
    return Job(model.img2img, {"image": image, "strength": strength}, width, height)


def _inpaint_job(
    model: LoadedModel,
    params: GenerationParams,
    source: Image.Image,
    mask: Image.Image,
    width: int,
    height: int,
) -> Job:
    """The webui's inpainting inputs: the mask inverted and blurred, the image (or, with
    `inpaint_full_res`, the masked region plus padding) at the target size, the masked area
    filled as `inpainting_fill` says; the original pasted back outside the blurred mask."""
    init, mask = _init_and_mask(params, source, mask.convert("L"), width, height)
    crop = None
    image, work_mask = init, mask
    if params.inpaint_full_res:
        if mask.getbbox() is None:
            raise InvalidInputError("mask", "the mask is empty: nothing to inpaint")
        crop = model.inpaint.mask_processor.get_crop_region(
            mask, width, height, pad=params.inpaint_full_res_padding
        )
        image = resize_image(RESIZE_AND_FILL, init.crop(crop), width, height)
        work_mask = resize_image(RESIZE_AND_FILL, mask.crop(crop), width, height)
    if params.inpainting_fill == FILL:
        image = fill(image, work_mask)
    kwargs: dict[str, Any] = {
        "image": image,
        "mask_image": work_mask,
        "strength": params.denoising_strength,
        "width": width,
        "height": height,
    }
    latent_fill = None
    if params.inpainting_fill in (LATENT_NOISE, LATENT_NOTHING):
        latents = model.encode(image)
        repaint = latent_mask(work_mask, width // 8, height // 8).to(latents)
        latent_fill = (latents, repaint, params.inpainting_fill == LATENT_NOISE)
    # like the webui, paste the original back outside the (blurred) mask
    return Job(
        model.inpaint,
        kwargs,
        width,
        height,
        inpaint=True,
        overlay=(mask, init),
        crop=crop,
        latent_fill=latent_fill,
    )


def _init_and_mask(
    params: GenerationParams, source: Image.Image, mask: Image.Image, width: int, height: int
) -> tuple[Image.Image, Image.Image]:
    """The picture and the mask (white = repaint, as in the webui) at the size they are
    inpainted at, the mask inverted and blurred as asked."""
    if params.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    if params.inpaint_full_res:  # the picture keeps its size; only the crop is resized
        init = source
        mask = mask.resize(init.size, Image.Resampling.LANCZOS)
    else:
        init = resize_image(params.resize_mode, source, width, height)
        mask = resize_image(params.resize_mode, mask, width, height)
    if params.mask_blur > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(params.mask_blur))
    return init, mask
