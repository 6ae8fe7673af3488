"""A loaded checkpoint: txt2img, img2img and inpainting pipelines on one set of weights, the
prompt encoder, the networks (LoRA, VAE, embeddings) and the checkpoint's own scheduler config;
and the VAE's way in and out of latent space."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image

from sdcore.engine.checkpoints import Opened, open_pipeline, uses_v_prediction
from sdcore.engine.conditioning import CLIP_SKIP, LAST, PromptEncoder, XLPromptEncoder
from sdcore.engine.networks import Networks


class _WebuiGuidance:
    """The webui applies classifier-free guidance at any scale but 1; diffusers only above 1,
    which would make a scale below 1 mean "no guidance" instead of weak (or inverted) guidance."""

    _guidance_scale: float
    unet: Any

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale != 1 and self.unet.config.time_cond_proj_dim is None


class _Txt2Img(_WebuiGuidance, StableDiffusionPipeline):
    pass


class _Img2Img(_WebuiGuidance, StableDiffusionImg2ImgPipeline):
    pass


class _Inpaint(_WebuiGuidance, StableDiffusionInpaintPipeline):
    pass


class _XLTxt2Img(_WebuiGuidance, StableDiffusionXLPipeline):
    pass


class _XLImg2Img(_WebuiGuidance, StableDiffusionXLImg2ImgPipeline):
    pass


class _XLInpaint(_WebuiGuidance, StableDiffusionXLInpaintPipeline):
    pass


@dataclass
class LoadedModel:
    """What a run needs of the checkpoint. The three pipelines share their modules."""

    # diffusers pipelines register their modules dynamically: typed as Any
    txt2img: Any
    img2img: Any
    inpaint: Any
    encoder: PromptEncoder | XLPromptEncoder
    networks: Networks
    architecture: str  # sd1, sd2 or sdxl
    # samplers are built from the checkpoint's own scheduler config, never from the last
    # sampler's (whose options, e.g. Karras sigmas, would leak into the next run)
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    native_side: int | None = None  # an SD 2.x base model found by the v test

    @property
    def sdxl(self) -> bool:
        return self.architecture == "sdxl"

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) the checkpoint was trained at: UNet sample size x VAE scale."""
        pipe = self.txt2img
        side = self.native_side or int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        return side, side

    @property
    def inpainting(self) -> bool:
        """An inpainting checkpoint (its UNet takes the mask and masked image too)."""
        return int(self.txt2img.unet.config.in_channels) == 9

    def encode(self, image: Image.Image) -> torch.Tensor:
        """The VAE's latents of `image` (its mean, so the same image always gives the same),
        at its size rounded down to a multiple of 8."""
        pipe = self.txt2img
        w, h = max(8, image.width // 8 * 8), max(8, image.height // 8 * 8)
        pixels = pipe.image_processor.preprocess(image, height=h, width=w)
        device, unet_dtype = placement(pipe)
        with torch.no_grad(), vae_precision(pipe.vae) as dtype:
            dist = pipe.vae.encode(pixels.to(device, dtype)).latent_dist
        latents: torch.Tensor = dist.mode().to(unet_dtype) * pipe.vae.config.scaling_factor
        return latents

    def decode(self, latents: torch.Tensor) -> list[Image.Image]:
        pipe = self.txt2img
        with torch.no_grad(), vae_precision(pipe.vae) as dtype:
            pixels = pipe.vae.decode(latents.to(dtype) / pipe.vae.config.scaling_factor).sample
        return list(pipe.image_processor.postprocess(pixels, output_type="pil"))


def placement(pipe: Any) -> tuple[torch.device, torch.dtype]:
    """Where `pipe` runs and in what dtype: its UNet's first parameter's (the pipelines are
    never offloaded, so each module sits where the UNet does). Diffusers' `pipe.device` and
    `unet.dtype` walk every module on each call: about 1 ms each, a few per run."""
    param = next(pipe.unet.parameters())
    return param.device, param.dtype


@contextmanager
def vae_precision(vae: Any) -> Iterator[torch.dtype]:
    """The dtype to run `vae` in: SDXL's VAE overflows in fp16 (its config says
    `force_upcast`), so it runs in fp32 for the block, as diffusers' pipelines do."""
    if vae.dtype != torch.float16 or not vae.config.get("force_upcast", False):
        yield vae.dtype
        return
    vae.to(torch.float32)
    try:
        yield torch.float32
    finally:
        vae.to(torch.float16)


def load_model(
    path: Path, config_dir: Path | None, device: str, dtype: torch.dtype, allow_pickle: bool
) -> LoadedModel:
    """Open the checkpoint (local files only), move it to `device` and build its pipelines.

    Raises FileNotFoundError or ValueError, as `open_pipeline`.
    """
    opened = open_pipeline(path, config_dir, dtype, allow_pickle)
    if device != "cpu":  # already there; `to` would only warn about dtypes
        opened.pipe = opened.pipe.to(device)
    scheduler_config, native_side = _prediction(opened, path, config_dir)
    model = _pipelines(opened)
    model.scheduler_config, model.native_side = scheduler_config, native_side
    return model


def _prediction(
    opened: Opened, path: Path, config_dir: Path | None
) -> tuple[dict[str, Any], int | None]:
    """The checkpoint's scheduler config and native side. A single SD 2.x file without a named
    config gets the webui's choice between its v2-inference-v (768) and v2-inference (512)
    configs: epsilon at 512 px unless the UNet predicts v."""
    scheduler_config = dict(opened.pipe.scheduler.config)
    unet = opened.pipe.unet
    auto_sd2 = path.is_file() and opened.architecture == "sd2" and config_dir is None
    if auto_sd2 and (int(unet.config.in_channels) == 9 or not uses_v_prediction(unet)):
        scheduler_config["prediction_type"] = "epsilon"
        return scheduler_config, 512
    return scheduler_config, None


def _pipelines(opened: Opened) -> LoadedModel:
    """The three pipelines on the same modules (no second copy of the weights), the prompt
    encoder of the architecture and the networks that patch them."""
    pipe = opened.pipe
    components = dict(pipe.components)
    encoder: PromptEncoder | XLPromptEncoder
    if opened.xl:
        classes: tuple[type[Any], ...] = (_XLTxt2Img, _XLImg2Img, _XLInpaint)
        components["add_watermarker"] = False  # the webui adds none
        encoder = XLPromptEncoder(pipe)
    else:
        classes = (_Txt2Img, _Img2Img, _Inpaint)
        components["requires_safety_checker"] = False
        layer = LAST if opened.architecture == "sd2" else CLIP_SKIP
        encoder = PromptEncoder(pipe.tokenizer, pipe.text_encoder, layer)
    txt2img, img2img, inpaint = (cls(**components) for cls in classes)
    for p in (txt2img, img2img, inpaint):
        p.set_progress_bar_config(disable=True)
    networks = Networks(txt2img, encoder)
    return LoadedModel(txt2img, img2img, inpaint, encoder, networks, opened.architecture)
