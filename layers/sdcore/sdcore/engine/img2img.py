"""img2img and inpainting inputs as the webui prepares them: `resize_mode`, the masked area's
`inpainting_fill`, and the crop of `inpaint_full_res` ("only masked")."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL, LATENT_UPSCALE = 0, 1, 2, 3
FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = 0, 1, 2, 3


def resize_image(mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """The webui's `images.resize_image` (its LANCZOS resampling): 0 stretch to the size, 1 scale
    to cover it and centre-crop, 2 scale to fit it and fill the bands by stretching the image's
    edge rows or columns. Mode 3 resizes in latent space, elsewhere; here it stretches (0)."""
    if mode not in (CROP_AND_RESIZE, RESIZE_AND_FILL) or image.size == (width, height):
        return image.resize((width, height), Image.Resampling.LANCZOS)
    ratio, src_ratio = width / height, image.width / image.height
    cover = (ratio > src_ratio) if mode == CROP_AND_RESIZE else (ratio < src_ratio)
    src_w = width if cover else image.width * height // image.height
    src_h = image.height * width // image.width if cover else height
    resized = image.resize((src_w, src_h), Image.Resampling.LANCZOS)
    out = Image.new(image.mode, (width, height))
    out.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if mode == RESIZE_AND_FILL:
        rw, rh = resized.size
        if ratio < src_ratio:  # bands above and below: the first and last rows stretched
            band = height // 2 - src_h // 2
            if band > 0:
                out.paste(resized.resize((width, band), box=(0, 0, width, 0)), box=(0, 0))
                bottom = resized.resize((width, band), box=(0, rh, width, rh))
                out.paste(bottom, box=(0, band + src_h))
        elif ratio > src_ratio:  # bands left and right: the first and last columns
            band = width // 2 - src_w // 2
            if band > 0:
                out.paste(resized.resize((band, height), box=(0, 0, 0, height)), box=(0, 0))
                right = resized.resize((band, height), box=(rw, 0, rw, height))
                out.paste(right, box=(band + src_w, 0))
    return out


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The webui's "fill": the masked area painted with ever less blurred colours of the rest."""
    out = Image.new("RGBA", image.size)
    masked = Image.new("RGBa", image.size)
    masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = masked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            out.alpha_composite(blurred)
    return out.convert("RGB")


def latent_mask(mask: Image.Image, width: int, height: int) -> torch.Tensor:
    """(1, 1, height, width) of 0/1: where the latents are repainted, rounded as the webui."""
    small = mask.convert("L").resize((width, height), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.around(np.asarray(small, dtype=np.float32) / 255))[None, None]
