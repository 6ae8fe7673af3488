"""The diffusers implementation of the engine port: SD 1.x, 2.x and XL checkpoints, webui semantics.

Load once (`load`), run per task (`run`). Webui vocabulary comes in through `GenerationParams`;
diffusers names stay in this module. Not thread-safe: one `run` at a time per engine (each
inference worker serves one task at a time).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from diffusers import (
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging as diffusers_logging
from PIL import Image, ImageFilter, ImageOps
from safetensors import safe_open
from safetensors.torch import load_file
from transformers.utils import logging as transformers_logging

from sdcore import configs
from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.errors import InvalidInputError
from sdcore.guards.modelfiles import (
    ARCHITECTURE_CONFIGS,
    ModelFileError,
    architecture_mismatch,
    checkpoint_architecture,
)
from sdcore.inference.engine_conditioning import CLIP_SKIP, LAST, PromptEncoder, XLPromptEncoder
from sdcore.inference.engine_extras import upscale
from sdcore.inference.engine_hires import HiresPlan, plan_hires
from sdcore.inference.engine_img2img import (
    FILL,
    LATENT_NOISE,
    LATENT_NOTHING,
    LATENT_UPSCALE,
    RESIZE_AND_FILL,
    fill,
    latent_mask,
    resize_image,
)
from sdcore.inference.engine_networks import Networks, network_fields
from sdcore.inference.engine_noise import (
    SD1_LATENT_RGB,
    SDXL_LATENT_RGB,
    image_noise,
    latent_preview,
)
from sdcore.inference.engine_samplers import make_scheduler
from sdcore.inference.engine_upscalers import load_upscaler, run_upscaler
from sdcore.inference.port import (
    Engine,
    EngineInputs,
    EngineResult,
    StepAction,
    StepCallback,
    StepInfo,
)
from sdcore.webui.infotext import build_infotext, generation_infotext
from sdcore.webui.samplers import NO_UPSCALER, resolve

log = logging.getLogger(__name__)

MAX_SIDE = 2048  # generation; a 2048x2048 SD 1.x image already needs ~10 GB of activations
MAX_SEED = 2**32 - 1  # the webui's range; torch takes larger, clients expect this one


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A single file's tensors: safetensors, or a torch `.ckpt` through torch's weights_only
    unpickler (memory-mapped; its `state_dict` when it has one). Callers check a pickle is
    allowed before calling."""
    if path.suffix != ".ckpt":
        return load_file(str(path))
    loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path.name}: the pickle holds no state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def checkpoint_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape of a single file (a safetensors file's header only)."""
    if path.suffix == ".ckpt":
        return {k: list(v.shape) for k, v in load_checkpoint(path).items()}
    with safe_open(str(path), "pt") as f:
        names = f.keys()
        return {k: list(f.get_slice(k).get_shape()) for k in names}


def single_file_architecture(path: Path) -> str:
    """`sd1`, `sd2` or `sdxl` from a single file's key layout.

    Raises ValueError for other checkpoints (an SDXL refiner, SD3, ...)."""
    shapes = checkpoint_shapes(path)
    try:
        return checkpoint_architecture(shapes)
    except ModelFileError as exc:
        raise ValueError(f"{path.name}: {exc}") from exc


def pipeline_class(folder: Path) -> str:
    """The pipeline class a diffusers or config folder's model_index.json names."""
    return str(json.loads((folder / "model_index.json").read_text()).get("_class_name", ""))


@torch.no_grad()
def uses_v_prediction(unet: Any) -> bool:
    """The webui's test for an SD 2.x checkpoint (768-v or 512-base look the same on disk): at
    t=999 on a flat 0.5 input an epsilon model predicts about the input itself, a v model
    something well below it."""
    x = torch.full((1, 4, 8, 8), 0.5, device=unet.device, dtype=unet.dtype)
    context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, device=unet.device)
    t = torch.tensor([999], device=unet.device)
    out = unet(x, t, encoder_hidden_states=context.to(unet.dtype)).sample
    return float((out.float() - x.float()).mean()) < -1


def inpainting_unet(path: Path, config: Path) -> Any:
    """The UNet of a single-file inpainting checkpoint (9 input channels: latents, mask, masked
    image latents), which the config's 4-channel UNet cannot take; None for other checkpoints."""
    key = "model.diffusion_model.input_blocks.0.0.weight"
    shape = checkpoint_shapes(path).get(key)
    if shape is None or shape[1] != 9:
        return None
    unet_config = {**UNet2DConditionModel.load_config(str(config), subfolder="unet")}
    unet = UNet2DConditionModel.from_config({**unet_config, "in_channels": 9})
    state = convert_ldm_unet_checkpoint(load_checkpoint(path), dict(unet.config))
    unet.load_state_dict(state, strict=True)
    return unet.eval()


def pick_device(preference: str = "auto") -> tuple[str, torch.dtype]:
    """cuda in fp16 when present, else Apple mps, else cpu; fp32 off cuda (fp16 is slow or
    unsupported there)."""
    if preference == "auto":
        if torch.cuda.is_available():
            preference = "cuda"
        elif torch.backends.mps.is_available():
            preference = "mps"
        else:
            preference = "cpu"
    return preference, torch.float16 if preference.startswith("cuda") else torch.float32


def peak_memory_mb(device: str) -> float:
    """Peak memory: CUDA's allocator peak since the last reset on a GPU, else the process's peak
    resident set size (Linux reports KiB, macOS bytes)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


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


def _use_noise(scheduler: SchedulerMixin, noise: torch.Tensor) -> None:
    """img2img and inpaint draw their noise inside the pipeline and add it to the image latents
    with `scheduler.add_noise`; this run's scheduler adds ours (seed, variation, resize) instead."""
    base = scheduler.add_noise  # type: ignore[attr-defined]

    def add_noise(original: torch.Tensor, _drawn: torch.Tensor, timesteps: Any) -> Any:
        return base(original, noise.to(original.device, original.dtype), timesteps)

    scheduler.add_noise = add_noise  # type: ignore[attr-defined]


@contextmanager
def _vae_precision(vae: Any) -> Iterator[torch.dtype]:
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


@dataclass
class _Job:
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


class _Progress:
    """`callback_on_step_end` adapter: a StepInfo to the port's callback after every step. A
    STOP (or True) answer sets the pipeline's interrupt flag and ends the run; SKIP sets it for
    the current job only (remaining steps are skipped, the partial latents are still decoded)."""

    def __init__(self, on_step: StepCallback, job_count: int, started: float) -> None:
        self.on_step = on_step
        self.job_count = job_count
        self.started = started
        self.job_no = 0
        self.stopped = False
        self.skipped = False
        self.skipped_jobs: list[int] = []
        self._last: float | None = None  # time of this job's previous step
        self._durations: list[float] = []  # step times measured so far, all jobs

    def start_job(self, job_no: int) -> None:
        self.job_no = job_no
        self.skipped = False
        self._last = None  # the gap to the first step holds setup and decoding, not a step

    def __call__(self, pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        now = time.perf_counter()
        if self._last is not None:
            self._durations.append(now - self._last)
        self._last = now
        latents = kwargs.get("latents")
        preview = None
        if latents is not None and latents.shape[1] == 4:
            factors = SDXL_LATENT_RGB if hasattr(pipe, "text_encoder_2") else SD1_LATENT_RGB

            def preview() -> Image.Image:
                return latent_preview(latents[0], factors)

        # num_timesteps is what the loop really runs: img2img int(steps * strength), Heun
        # two entries per step; the requested `steps` would stall progress short of 100 %.
        info = StepInfo(
            step=i + 1,
            steps=int(pipe.num_timesteps),
            job_no=self.job_no,
            job_count=self.job_count,
            elapsed_s=now - self.started,
            step_s=sum(self._durations) / len(self._durations) if self._durations else None,
            preview=preview,
        )
        action = self.on_step(info)
        if action == StepAction.SKIP and not self.skipped:
            pipe._interrupt = True
            self.skipped = True
            self.skipped_jobs.append(self.job_no)
        elif action == StepAction.STOP:
            pipe._interrupt = True
            self.stopped = True
        return kwargs


class DiffusersEngine(Engine):
    """One SD 1.x, 2.x or XL checkpoint: a diffusers folder or a single LDM-layout
    `.safetensors` file.

    Parameters
    ----------
    model_path
        A diffusers folder (with `model_index.json`) or a `.safetensors` single-file checkpoint.
    model_name, model_hash
        What the infotext and info report (`Model`, `Model hash` = first 10 hex digits).
    config_dir
        For single files: the local diffusers-style config folder (JSON configs + tokenizer);
        default (None): the bundled one of the file's architecture (`sd15`, `sd2`, `sdxl`),
        told from its keys; for SD 2.x the webui's test picks v-prediction at 768 px or
        epsilon at 512 px. Never fetched from the network.
    device
        "auto" (cuda fp16, else mps, else cpu fp32) or an explicit torch device string.
    allow_pickle
        Load a torch `.ckpt` single file (through torch's weights_only unpickler); refused
        otherwise.
    """

    def __init__(
        self,
        model_path: Path,
        model_name: str,
        model_hash: str,
        config_dir: Path | None = None,
        device: str = "auto",
        allow_pickle: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        self.model_name = model_name
        self.model_hash = model_hash
        self.config_dir = Path(config_dir) if config_dir is not None else None
        self.device_preference = device
        self.allow_pickle = allow_pickle
        self.device = "unloaded"
        self.dtype: torch.dtype = torch.float32
        self.load_s: float | None = None
        self.architecture = "unloaded"  # sd1, sd2 or sdxl once loaded
        self._native_side: int | None = None  # an SD 2.x base model found by the v test
        # diffusers pipelines register their modules dynamically: typed as Any for mypy
        self._txt2img: Any = None
        self._img2img: Any = None
        self._inpaint: Any = None
        self._encoder: PromptEncoder | XLPromptEncoder | None = None
        self._networks: Networks | None = None
        self._upscalers: dict[str, Any] = {}  # file sha256 -> upscaler model, oldest first
        self._scheduler_config: dict[str, Any] = {}

    # --- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load the weights (local files only) and build the three pipelines on shared weights.

        Raises
        ------
        FileNotFoundError
            `model_path` does not exist.
        ValueError
            `model_path` is neither a diffusers folder nor a `.safetensors` file (nor an
            allowed `.ckpt`), or not an SD 1.x, 2.x or XL checkpoint.
        """
        started = time.perf_counter()
        self.device, self.dtype = pick_device(self.device_preference)
        path = self.model_path
        common: dict[str, Any] = {
            "local_files_only": True,
            "safety_checker": None,
            "feature_extractor": None,
            "requires_safety_checker": False,
        }
        if self.dtype != torch.float32:  # weights load as float32; asking for it only warns
            common["dtype"] = self.dtype
        # a worker's log is no terminal: no "Loading ..." bars from either library
        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        if not path.exists():
            raise FileNotFoundError(f"model not found: {path}")
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ValueError(f"{path} is a folder without model_index.json (not diffusers)")
            xl = pipeline_class(path) == "StableDiffusionXLPipeline"
            pipe = self._from(xl, "from_pretrained", str(path), common)
            self.architecture = "sdxl" if xl else "sd1"
            if not xl and int(pipe.text_encoder.config.hidden_size) == 1024:
                self.architecture = "sd2"
        elif path.suffix == ".ckpt" and not self.allow_pickle:
            raise ValueError(f"{path.name}: pickle checkpoints are not allowed (SD_ALLOW_PICKLE)")
        elif path.suffix in (".safetensors", ".ckpt"):
            self.architecture = single_file_architecture(path)
            shipped = ARCHITECTURE_CONFIGS[self.architecture]
            config = self.config_dir or configs.pipeline_config(shipped)
            why = architecture_mismatch(self.architecture, config)
            if why is not None:
                raise ValueError(f"{path.name}: {why}")
            xl = pipeline_class(config) == "StableDiffusionXLPipeline"
            unet = inpainting_unet(path, config)  # the config's UNet takes 4 channels
            if unet is not None:
                common["unet"] = unet
            pipe = self._from(xl, "from_single_file", str(path), {**common, "config": str(config)})
        else:
            raise ValueError(f"{path}: expected a diffusers folder or a .safetensors file")
        if self.device != "cpu":  # already there; `to` would only warn about dtypes
            pipe = pipe.to(self.device)
        # samplers are built from the checkpoint's own scheduler config, never from the last
        # sampler's (whose options, e.g. Karras sigmas, would leak into the next run)
        self._scheduler_config = dict(pipe.scheduler.config)
        auto_sd2 = path.is_file() and self.architecture == "sd2" and self.config_dir is None
        # the webui's choice between its v2-inference-v (768) and v2-inference (512) configs
        if auto_sd2 and (
            int(pipe.unet.config.in_channels) == 9 or not uses_v_prediction(pipe.unet)
        ):
            self._scheduler_config["prediction_type"] = "epsilon"
            self._native_side = 512
        components = dict(pipe.components)
        if xl:
            classes: tuple[type[Any], ...] = (_XLTxt2Img, _XLImg2Img, _XLInpaint)
            components["add_watermarker"] = False  # the webui adds none
            self._encoder = XLPromptEncoder(pipe)
        else:
            classes = (_Txt2Img, _Img2Img, _Inpaint)
            components["requires_safety_checker"] = False
            layer = LAST if self.architecture == "sd2" else CLIP_SKIP
            self._encoder = PromptEncoder(pipe.tokenizer, pipe.text_encoder, layer)
        # the same modules in all three: no second copy of the weights
        self._txt2img, self._img2img, self._inpaint = (cls(**components) for cls in classes)
        for p in (self._txt2img, self._img2img, self._inpaint):
            p.set_progress_bar_config(disable=True)
        self._networks = Networks(self._txt2img, self._encoder)
        self.load_s = time.perf_counter() - started
        log.info("loaded %s on %s in %.2fs", self.model_name, self.device, self.load_s)

    @staticmethod
    def _from(xl: bool, how: str, source: str, common: dict[str, Any]) -> Any:
        """`StableDiffusion(XL)Pipeline.<how>(source)`; the SD 1.x/2.x pipeline takes a safety
        checker (none here), the XL one a watermarker (none either)."""
        if xl:
            kwargs = {k: v for k, v in common.items() if "safety" not in k and "feature" not in k}
            return getattr(StableDiffusionXLPipeline, how)(source, add_watermarker=False, **kwargs)
        return getattr(StableDiffusionPipeline, how)(source, **common)

    @property
    def _sdxl(self) -> bool:
        return self.architecture == "sdxl"

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) the checkpoint was trained at: UNet sample size x VAE scale."""
        pipe = self._require()
        side = self._native_side or int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        return side, side

    def _require(self) -> Any:
        if self._txt2img is None:
            raise RuntimeError("DiffusersEngine.run before load()")
        return self._txt2img

    # --- running ---------------------------------------------------------------------------

    def run(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback
    ) -> EngineResult:
        """Generate `batch_size x batches` images (or one resampled image for extras), with the
        peak memory in `info["peak_memory_mb"]`: the task's peak on CUDA, the worker process's
        peak resident size so far on CPU and MPS.

        Raises
        ------
        InvalidInputError
            A parameter the model cannot honour; `field` is the webui name of the culprit.
        """
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        result = self._run(params, inputs, on_step)
        result.info["peak_memory_mb"] = round(peak_memory_mb(self.device), 1)
        return result

    def _run(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback
    ) -> EngineResult:
        """Generate `batch_size x batches` images (or one resampled image for extras).

        Raises
        ------
        InvalidInputError
            A parameter the model cannot honour; `field` is the webui name of the culprit.
        """
        started = time.perf_counter()
        self._require()
        if params.kind is TaskKind.EXTRAS:
            return self._extras(params, inputs, started)
        assert self._networks is not None
        pipes = [self._txt2img, self._img2img, self._inpaint]
        with self._networks.applied(params.prompt, inputs, pipes):
            return self._generate(params, inputs, on_step, started)

    def _generate(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback, started: float
    ) -> EngineResult:
        job = self._prepare(params, inputs)
        sampler, schedule = resolve(params.sampler, params.scheduler)
        total = params.batch_size * params.batches
        base_seed = self._seed(params.seed, total, "seed")
        base_subseed = self._seed(params.subseed, total, "subseed")
        seeds = [base_seed + i for i in range(total)]
        subseeds = [base_subseed + i for i in range(total)]
        resize_from = self._resize_from(params)
        assert self._encoder is not None
        pipe = job.pipe
        embeds = self._encoder.encode_pair(
            params.prompt, params.negative_prompt, params.clip_skip
        ).kwargs(pipe.device, pipe.unet.dtype)
        latent_shape = (
            int(pipe.vae.config.latent_channels),
            job.height // int(pipe.vae_scale_factor),
            job.width // int(pipe.vae_scale_factor),
        )
        images: list[Image.Image] = []
        progress = _Progress(on_step, params.batches, started)

        for job_no in range(params.batches):
            part = slice(job_no * params.batch_size, (job_no + 1) * params.batch_size)
            # one CPU generator per image: image i is the same whatever the batch size or device
            drawn = [
                image_noise(latent_shape, s, v, params.subseed_strength, resize_from)
                for s, v in zip(seeds[part], subseeds[part], strict=True)
            ]
            noise = torch.stack([n for n, _ in drawn]).to(pipe.device, pipe.unet.dtype)
            generators = [g for _, g in drawn]
            scheduler = make_scheduler(
                sampler, schedule, self._scheduler_config, seeds[part], self._sdxl
            )
            kwargs = dict(job.kwargs)
            if params.kind is TaskKind.TXT2IMG or (job.inpaint and job.kwargs["strength"] >= 1):
                kwargs["latents"] = noise
            else:
                _use_noise(scheduler, noise)
            if job.latent_fill is not None:  # webui: latent noise / latent nothing in the mask
                latents, repaint, with_noise = job.latent_fill
                filled = latents * (1 - repaint) + (noise * repaint if with_noise else 0)
                kwargs["image"] = kwargs["masked_image_latents"] = filled
            pipe.scheduler = scheduler
            progress.start_job(job_no)
            out = pipe(
                **embeds,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance,
                num_images_per_prompt=len(generators),
                generator=generators,
                callback_on_step_end=progress,
                output_type="latent" if job.hires is not None and job.hires.latent else "pil",
                **kwargs,
            )
            batch = list(out.images)
            if job.hires is not None:
                first = out.images
                if progress.stopped or progress.skipped:  # no second pass: the first's pictures
                    batch = self._decoded(first) if job.hires.latent else batch
                else:
                    args = (params, inputs, embeds, seeds[part], subseeds[part], resize_from)
                    batch = self._hires_pass(job.hires, first, *args, progress)
            if job.overlay is not None:
                mask, init = job.overlay
                batch = [
                    pipe.image_processor.apply_overlay(mask, init, im, job.crop) for im in batch
                ]
            images.extend(batch)
            if progress.stopped:
                break

        interrupted = progress.stopped
        texts = [
            generation_infotext(
                params,
                seed=seeds[i],
                subseed=subseeds[i],
                width=job.width,
                height=job.height,
                model_name=self.model_name,
                model_hash=self.model_hash,
                sampler=sampler,
                schedule=schedule,
                inpaint=job.inpaint,
                extra=[
                    *(
                        job.hires.infotext_fields(params, sampler, schedule)
                        if job.hires is not None
                        else ()
                    ),
                    *network_fields(inputs),
                ],
            )
            for i in range(len(images))
        ]
        info = {
            "prompt": params.prompt,
            "negative_prompt": params.negative_prompt,
            "seed": base_seed,
            "all_seeds": seeds,
            "subseed": base_subseed,
            "all_subseeds": subseeds,
            "subseed_strength": params.subseed_strength,
            "seed_resize_from_w": params.seed_resize_from_w if resize_from else -1,
            "seed_resize_from_h": params.seed_resize_from_h if resize_from else -1,
            "steps": params.steps,
            "sampler_name": sampler,
            "scheduler": schedule,
            "cfg_scale": params.guidance,
            "clip_skip": params.clip_skip,
            "width": job.width,
            "height": job.height,
            "batch_size": params.batch_size,
            "n_iter": params.batches,
            "denoising_strength": (
                params.denoising_strength if params.kind is TaskKind.IMG2IMG else None
            ),
            "mask_blur": params.mask_blur if job.inpaint else None,
            "model": self.model_name,
            "model_hash": self.model_hash,
            "sd_model_name": self.model_name,
            "sd_model_hash": self.model_hash[:10] or None,
            "device": self.device,
            "elapsed_s": round(time.perf_counter() - started, 4),
            "infotexts": texts,
            "interrupted": interrupted,
            "skipped_jobs": progress.skipped_jobs,
        }
        return EngineResult(images=images, infotexts=texts, info=info, interrupted=interrupted)

    def _prepare(self, params: GenerationParams, inputs: EngineInputs) -> _Job:
        width, height = self._size(params)
        resolve(params.sampler, params.scheduler)  # a 422 before any work
        for field, value in (("steps", params.steps), ("batch_size", params.batch_size)):
            if value < 1:
                raise InvalidInputError(field, f"must be at least 1, got {value}")
        if params.batches < 1:
            raise InvalidInputError("n_iter", f"must be at least 1, got {params.batches}")
        size = {"width": width, "height": height}
        inpainting_model = int(self._require().unet.config.in_channels) == 9
        if params.kind is TaskKind.TXT2IMG and inpainting_model:
            # the webui's conditioning for an inpainting model: everything masked, a grey image
            if params.hires:
                raise InvalidInputError("enable_hr", "not available on an inpainting checkpoint")
            grey, everything = (
                Image.new("RGB", (width, height), (128,) * 3),
                Image.new("L", (width, height), 255),
            )
            kwargs = {"image": grey, "mask_image": everything, "strength": 1.0, **size}
            return _Job(self._inpaint, kwargs, width, height)
        if params.kind is TaskKind.TXT2IMG:
            assert self._txt2img is not None
            hires = plan_hires(params, width, height, inputs.upscalers)
            return _Job(self._txt2img, size, width, height, hires=hires)

        if not inputs.init_images:
            raise InvalidInputError("init_images", "img2img needs one init image")
        strength = params.denoising_strength
        if not 0 < strength <= 1:
            raise InvalidInputError("denoising_strength", f"must be in (0, 1], got {strength}")
        if int(params.steps * strength) < 1:
            raise InvalidInputError(
                "denoising_strength",
                f"steps x denoising_strength must be at least 1 ({params.steps} x {strength})",
            )
        for field, value in (
            ("resize_mode", params.resize_mode),
            ("inpainting_fill", params.inpainting_fill),
        ):
            if not 0 <= value <= 3:
                raise InvalidInputError(field, f"must be 0..3, got {value}")
        source = inputs.init_images[0].convert("RGB")
        if inputs.mask is None and inpainting_model:  # the webui: the whole image is masked
            return self._inpaint_job(
                params, source, Image.new("L", source.size, 255), width, height
            )
        if inputs.mask is None:
            image: Any = resize_image(params.resize_mode, source, width, height)
            if params.resize_mode == LATENT_UPSCALE:  # encoded at its own size, then resized
                image = F.interpolate(
                    self._encode(source), size=(height // 8, width // 8), mode="bilinear"
                )
            return _Job(self._img2img, {"image": image, "strength": strength}, width, height)
        return self._inpaint_job(params, source, inputs.mask, width, height)

    def _inpaint_job(
        self,
        params: GenerationParams,
        source: Image.Image,
        mask: Image.Image,
        width: int,
        height: int,
    ) -> _Job:
        """The webui's inpainting inputs: the mask inverted and blurred, the image (or, with
        `inpaint_full_res`, the masked region plus padding) at the target size, the masked area
        filled as `inpainting_fill` says; the original pasted back outside the blurred mask."""
        if params.mask_blur < 0:
            raise InvalidInputError("mask_blur", f"must be >= 0, got {params.mask_blur}")
        if params.inpaint_full_res_padding < 0:
            raise InvalidInputError("inpaint_full_res_padding", "must be >= 0")
        mask = mask.convert("L")  # white = repaint, as in the webui
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
        crop = None
        image, work_mask = init, mask
        if params.inpaint_full_res:
            if mask.getbbox() is None:
                raise InvalidInputError("mask", "the mask is empty: nothing to inpaint")
            assert self._inpaint is not None
            crop = self._inpaint.mask_processor.get_crop_region(
                mask, width, height, pad=params.inpaint_full_res_padding
            )
            image = resize_image(RESIZE_AND_FILL, init.crop(crop), width, height)
            work_mask = resize_image(RESIZE_AND_FILL, mask.crop(crop), width, height)
        if params.inpainting_fill == FILL:
            image = fill(image, work_mask)
        assert self._inpaint is not None
        kwargs: dict[str, Any] = {
            "image": image,
            "mask_image": work_mask,
            "strength": params.denoising_strength,
            "width": width,
            "height": height,
        }
        latent_fill = None
        if params.inpainting_fill in (LATENT_NOISE, LATENT_NOTHING):
            latents = self._encode(image)
            repaint = latent_mask(work_mask, width // 8, height // 8).to(latents)
            latent_fill = (latents, repaint, params.inpainting_fill == LATENT_NOISE)
        # like the webui, paste the original back outside the (blurred) mask
        return _Job(
            self._inpaint,
            kwargs,
            width,
            height,
            inpaint=True,
            overlay=(mask, init),
            crop=crop,
            latent_fill=latent_fill,
        )

    def _encode(self, image: Image.Image) -> torch.Tensor:
        """The VAE's latents of `image` (its mean, so the same image always gives the same),
        at its size rounded down to a multiple of 8."""
        pipe = self._require()
        w, h = max(8, image.width // 8 * 8), max(8, image.height // 8 * 8)
        pixels = pipe.image_processor.preprocess(image, height=h, width=w)
        with torch.no_grad(), _vae_precision(pipe.vae) as dtype:
            dist = pipe.vae.encode(pixels.to(pipe.device, dtype)).latent_dist
        latents: torch.Tensor = dist.mode().to(pipe.unet.dtype) * pipe.vae.config.scaling_factor
        return latents

    def _decoded(self, latents: torch.Tensor) -> list[Image.Image]:
        pipe = self._require()
        with torch.no_grad(), _vae_precision(pipe.vae) as dtype:
            pixels = pipe.vae.decode(latents.to(dtype) / pipe.vae.config.scaling_factor).sample
        return list(pipe.image_processor.postprocess(pixels, output_type="pil"))

    def _hires_pass(
        self,
        plan: HiresPlan,
        first: Any,
        params: GenerationParams,
        inputs: EngineInputs,
        embeds: dict[str, torch.Tensor],
        seeds: list[int],
        subseeds: list[int],
        resize_from: tuple[int, int] | None,
        progress: _Progress,
    ) -> list[Image.Image]:
        """The hires fix's second pass: the first pass's latents (or pictures) upscaled, then
        img2img at the larger size with fresh noise from the same seeds, as the webui does, with
        the plan's sampler and, when they differ, the hires prompts (their `<lora:...>` tags are
        not applied: the first pass's LoRAs stay on)."""
        pipe = self._img2img
        scale = int(pipe.vae_scale_factor)
        if plan.latent:
            image: Any = plan.upscale_latents(first, scale)
        else:
            model = self._upscaler_models(params, inputs)[plan.upscaler] if plan.model else None
            image = [plan.upscale_image(im, model) for im in first]
        prompts = plan.prompts(params)
        if prompts is not None:
            assert self._encoder is not None
            embeds = self._encoder.encode_pair(*prompts, params.clip_skip).kwargs(
                pipe.device, pipe.unet.dtype
            )
        shape = (int(pipe.vae.config.latent_channels), plan.height // scale, plan.width // scale)
        drawn = [
            image_noise(shape, s, v, params.subseed_strength, resize_from)
            for s, v in zip(seeds, subseeds, strict=True)
        ]
        scheduler = make_scheduler(
            plan.sampler, plan.schedule, self._scheduler_config, seeds, self._sdxl
        )
        _use_noise(scheduler, torch.stack([n for n, _ in drawn]).to(pipe.device, pipe.unet.dtype))
        pipe.scheduler = scheduler
        out = pipe(
            **embeds,
            image=image,
            strength=plan.strength,
            num_inference_steps=plan.steps,
            guidance_scale=params.guidance,
            num_images_per_prompt=len(seeds),
            generator=[g for _, g in drawn],
            callback_on_step_end=progress,
            output_type="pil",
        )
        return list(out.images)

    def _size(self, params: GenerationParams) -> tuple[int, int]:
        native_w, native_h = self.native_size
        width = native_w if params.width is None else params.width
        height = native_h if params.height is None else params.height
        for field, value in (("width", width), ("height", height)):
            if value % 8 or not 8 <= value <= MAX_SIDE:
                raise InvalidInputError(
                    field, f"must be a multiple of 8 between 8 and {MAX_SIDE}, got {value}"
                )
        return width, height

    @staticmethod
    def _seed(seed: int, total: int, field: str) -> int:
        """The first of `total` consecutive seeds; a negative one (-1, as the webui) is drawn."""
        if seed < 0:
            return random.randrange(MAX_SEED - total + 1)
        if seed + total - 1 > MAX_SEED:
            raise InvalidInputError(field, f"must be at most {MAX_SEED - total + 1}")
        return seed

    def _resize_from(self, params: GenerationParams) -> tuple[int, int] | None:
        """(latent height, latent width) to draw the seed's noise at, or None (off)."""
        w, h = params.seed_resize_from_w, params.seed_resize_from_h
        if w <= 0 or h <= 0:
            return None
        scale = int(self._require().vae_scale_factor)
        for field, value in (("seed_resize_from_w", w), ("seed_resize_from_h", h)):
            if not scale <= value <= MAX_SIDE:
                raise InvalidInputError(field, f"must be {scale}..{MAX_SIDE} (or <= 0: off)")
        return h // scale, w // scale

    # --- extras ----------------------------------------------------------------------------

    def _unchanged(
        self, params: GenerationParams, inputs: EngineInputs, started: float
    ) -> EngineResult:
        """The webui's upscaler "None": the image comes back as it was."""
        if not inputs.init_images:
            raise InvalidInputError("image", "extras needs an image")
        image = inputs.init_images[0].convert("RGB")
        text = f"Postprocess upscaler: {NO_UPSCALER}"
        info = {
            "width": image.width,
            "height": image.height,
            "upscaler": NO_UPSCALER,
            "model": self.model_name,
            "model_hash": self.model_hash,
            "device": "cpu",
            "elapsed_s": round(time.perf_counter() - started, 4),
            "infotexts": [text],
            "interrupted": False,
        }
        return EngineResult(images=[image], infotexts=[text], info=info)

    def _upscaler_models(self, params: GenerationParams, inputs: EngineInputs) -> dict[str, Any]:
        """The task's registered upscaler models, loaded once per file (the last 2 kept)."""
        models: dict[str, Any] = {}
        for name, file in inputs.upscalers.items():
            model = self._upscalers.pop(file.sha256, None)
            if model is None:
                try:
                    model = load_upscaler(file.path).to(self.device)
                except ValueError as exc:
                    field = "upscaler_1" if name == params.upscaler else "upscaler_2"
                    if params.kind is TaskKind.TXT2IMG:
                        field = "hr_upscaler"
                    raise InvalidInputError(field, f"upscaler {name!r}: {exc}") from exc
            self._upscalers[file.sha256] = model
            while len(self._upscalers) > 2:
                self._upscalers.pop(next(iter(self._upscalers)))
            models[name] = partial(run_upscaler, model)
        return models

    def _extras(
        self, params: GenerationParams, inputs: EngineInputs, started: float
    ) -> EngineResult:
        if not inputs.init_images:
            raise InvalidInputError("image", "extras needs an image")
        if params.upscaler == NO_UPSCALER:
            return self._unchanged(params, inputs, started)
        source = inputs.init_images[0].convert("RGB")
        src_w, src_h = source.size
        image, fields = upscale(source, params, self._upscaler_models(params, inputs))
        width, height = image.size
        text = build_infotext("", "", fields)
        info = {
            "width": width,
            "height": height,
            "source_width": src_w,
            "source_height": src_h,
            "upscaler": params.upscaler,
            "model": self.model_name,
            "model_hash": self.model_hash,
            "device": "cpu",  # a PIL resample: no accelerator involved
            "elapsed_s": round(time.perf_counter() - started, 4),
            "infotexts": [text],
            "interrupted": False,
        }
        return EngineResult(images=[image], infotexts=[text], info=info)
