"""The diffusers implementation of the engine port: SD 1.x checkpoints, webui semantics.

Load once (`load`), run per task (`run`). Webui vocabulary comes in through `GenerationParams`;
diffusers names stay in this module. Not thread-safe: one `run` at a time per engine (each
inference worker serves one task at a time).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging as diffusers_logging
from PIL import Image, ImageFilter, ImageOps
from transformers.utils import logging as transformers_logging

from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.errors import InvalidInputError
from sdcore.inference.port import Engine, EngineInputs, EngineResult, StepCallback, StepInfo
from sdcore.samplers import NO_UPSCALER, SAMPLERS, UPSCALERS

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
MAX_SIDE = 2048  # generation; a 2048x2048 SD 1.x image already needs ~10 GB of activations
MAX_UPSCALE_SIDE = 8192  # extras is a plain resample: memory is the only limit
MAX_SEED = 2**32 - 1  # the webui's range; torch takes larger, clients expect this one

# webui sampler name -> (diffusers scheduler class, options on top of the checkpoint's config)
SCHEDULERS: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "LMS": (LMSDiscreteScheduler, {}),
    "Heun": (HeunDiscreteScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "DPM++ 2M Karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "DDIM": (DDIMScheduler, {}),
    "UniPC": (UniPCMultistepScheduler, {}),
}
_RESAMPLE = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}


def bundled_config_dir(name: str = "sd15") -> Path:
    """The shipped config folder for single-file checkpoints of architecture `name`."""
    path = CONFIGS_DIR / name
    if not (path / "model_index.json").is_file():
        known = sorted(p.name for p in CONFIGS_DIR.iterdir() if (p / "model_index.json").is_file())
        raise ValueError(f"no bundled config {name!r}; known: {', '.join(known)}")
    return path


def check_sampler(sampler: str) -> None:
    if sampler not in SCHEDULERS:
        raise InvalidInputError(
            "sampler_name", f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}"
        )


def make_scheduler(sampler: str, base_config: Any) -> SchedulerMixin:
    """A fresh scheduler for a webui sampler name, built on the checkpoint's scheduler config.

    Raises
    ------
    InvalidInputError
        On a name the engine does not know (field `sampler_name`).
    """
    check_sampler(sampler)
    cls, options = SCHEDULERS[sampler]
    scheduler: SchedulerMixin = cls.from_config(base_config, **options)
    return scheduler


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


def infotext(
    params: GenerationParams,
    *,
    seed: int,
    width: int,
    height: int,
    model_name: str,
    model_hash: str,
    inpaint: bool = False,
) -> str:
    """The webui's generation-parameters text for one image (stored in the PNG)."""
    lines = [params.prompt]
    if params.negative_prompt:
        lines.append(f"Negative prompt: {params.negative_prompt}")
    fields: list[tuple[str, Any]] = [
        ("Steps", params.steps),
        ("Sampler", params.sampler),
        ("CFG scale", float(params.guidance)),
        ("Seed", seed),
        ("Size", f"{width}x{height}"),
    ]
    if model_hash:
        fields.append(("Model hash", model_hash[:10]))
    fields.append(("Model", model_name))
    if params.kind is TaskKind.IMG2IMG:
        fields.append(("Denoising strength", float(params.denoising_strength)))
    if inpaint:
        fields.append(("Mask blur", params.mask_blur))
    lines.append(", ".join(f"{k}: {v}" for k, v in fields))
    return "\n".join(lines)


@dataclass
class _Job:
    """What one `run` needs besides the params: the pipeline and its per-kind arguments."""

    pipe: Any  # a StableDiffusion*Pipeline; diffusers registers their modules dynamically
    kwargs: dict[str, Any]
    width: int
    height: int
    inpaint: bool = False
    overlay: tuple[Image.Image, Image.Image] | None = None  # (mask, init image) pasted back


class _Progress:
    """`callback_on_step_end` adapter: a StepInfo to the port's callback after every step;
    its True sets the pipeline's interrupt flag (remaining steps are skipped, the partial
    latents are still decoded)."""

    def __init__(self, on_step: StepCallback, job_count: int, started: float) -> None:
        self.on_step = on_step
        self.job_count = job_count
        self.started = started
        self.job_no = 0
        self.stopped = False

    def __call__(self, pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        # num_timesteps is what the loop really runs: img2img int(steps * strength), Heun
        # two entries per step; the requested `steps` would stall progress short of 100 %.
        info = StepInfo(
            step=i + 1,
            steps=int(pipe.num_timesteps),
            job_no=self.job_no,
            job_count=self.job_count,
            elapsed_s=time.perf_counter() - self.started,
        )
        if self.on_step(info):
            pipe._interrupt = True
            self.stopped = True
        return kwargs


class DiffusersEngine(Engine):
    """One SD 1.x checkpoint: a diffusers folder or a single LDM-layout `.safetensors` file.

    Parameters
    ----------
    model_path
        A diffusers folder (with `model_index.json`) or a `.safetensors` single-file checkpoint.
    model_name, model_hash
        What the infotext and info report (`Model`, `Model hash` = first 10 hex digits).
    config_dir
        For single files: the local diffusers-style config folder (JSON configs + tokenizer);
        default: the bundled `configs/sd15`. Never fetched from the network.
    device
        "auto" (cuda fp16, else mps, else cpu fp32) or an explicit torch device string.
    """

    def __init__(
        self,
        model_path: Path,
        model_name: str,
        model_hash: str,
        config_dir: Path | None = None,
        device: str = "auto",
    ) -> None:
        self.model_path = Path(model_path)
        self.model_name = model_name
        self.model_hash = model_hash
        self.config_dir = Path(config_dir) if config_dir is not None else None
        self.device_preference = device
        self.device = "unloaded"
        self.dtype: torch.dtype = torch.float32
        self.load_s: float | None = None
        # diffusers pipelines register their modules dynamically: typed as Any for mypy
        self._txt2img: Any = None
        self._img2img: Any = None
        self._inpaint: Any = None
        self._scheduler_config: dict[str, Any] = {}

    # --- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load the weights (local files only) and build the three pipelines on shared weights.

        Raises
        ------
        FileNotFoundError
            `model_path` does not exist.
        ValueError
            `model_path` is neither a diffusers folder nor a `.safetensors` file.
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
            pipe = StableDiffusionPipeline.from_pretrained(str(path), **common)
        elif path.suffix == ".safetensors":
            config = self.config_dir or bundled_config_dir("sd15")
            pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(config), **common)
        else:
            raise ValueError(f"{path}: expected a diffusers folder or a .safetensors file")
        if self.device != "cpu":  # already there; `to` would only warn about dtypes
            pipe = pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        # samplers are built from the checkpoint's own scheduler config, never from the last
        # sampler's (whose options, e.g. Karras sigmas, would leak into the next run)
        self._scheduler_config = dict(pipe.scheduler.config)
        for sampler in SCHEDULERS:  # fail at load, not mid-task (LMS needs scipy, for one)
            make_scheduler(sampler, self._scheduler_config)
        components = pipe.components  # the same modules: no second copy of the weights
        self._txt2img = pipe
        self._img2img = StableDiffusionImg2ImgPipeline(**components, requires_safety_checker=False)
        self._inpaint = StableDiffusionInpaintPipeline(**components, requires_safety_checker=False)
        for p in (self._img2img, self._inpaint):
            p.set_progress_bar_config(disable=True)
        self.load_s = time.perf_counter() - started
        log.info("loaded %s on %s in %.2fs", self.model_name, self.device, self.load_s)

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) the checkpoint was trained at: UNet sample size x VAE scale."""
        pipe = self._require()
        side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        return side, side

    def _require(self) -> Any:
        if self._txt2img is None:
            raise RuntimeError("DiffusersEngine.run before load()")
        return self._txt2img

    # --- running ---------------------------------------------------------------------------

    def run(
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

        job = self._prepare(params, inputs)
        base_seed = self._seed(params)
        total = params.batch_size * params.batches
        seeds = [base_seed + i for i in range(total)]
        images: list[Image.Image] = []
        interrupted = False
        progress = _Progress(on_step, params.batches, started)

        for job_no in range(params.batches):
            batch_seeds = seeds[job_no * params.batch_size : (job_no + 1) * params.batch_size]
            # one CPU generator per image: image i is the same whatever the batch size or device
            generators = [torch.Generator("cpu").manual_seed(s) for s in batch_seeds]
            job.pipe.scheduler = make_scheduler(params.sampler, self._scheduler_config)
            progress.job_no = job_no
            out = job.pipe(
                prompt=params.prompt,
                negative_prompt=params.negative_prompt,
                num_inference_steps=params.steps,
                guidance_scale=params.guidance,
                num_images_per_prompt=len(batch_seeds),
                generator=generators,
                callback_on_step_end=progress,
                output_type="pil",
                **job.kwargs,
            )
            batch = list(out.images)
            if job.overlay is not None:
                mask, init = job.overlay
                batch = [job.pipe.image_processor.apply_overlay(mask, init, im) for im in batch]
            images.extend(batch)
            if progress.stopped:
                interrupted = True
                break

        texts = [
            infotext(
                params,
                seed=seeds[i],
                width=job.width,
                height=job.height,
                model_name=self.model_name,
                model_hash=self.model_hash,
                inpaint=job.inpaint,
            )
            for i in range(len(images))
        ]
        info = {
            "prompt": params.prompt,
            "negative_prompt": params.negative_prompt,
            "seed": base_seed,
            "all_seeds": seeds,
            "steps": params.steps,
            "sampler_name": params.sampler,
            "cfg_scale": params.guidance,
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
        }
        return EngineResult(images=images, infotexts=texts, info=info, interrupted=interrupted)

    def _prepare(self, params: GenerationParams, inputs: EngineInputs) -> _Job:
        width, height = self._size(params)
        check_sampler(params.sampler)
        for field, value in (("steps", params.steps), ("batch_size", params.batch_size)):
            if value < 1:
                raise InvalidInputError(field, f"must be at least 1, got {value}")
        if params.batches < 1:
            raise InvalidInputError("n_iter", f"must be at least 1, got {params.batches}")
        size = {"width": width, "height": height}
        if params.kind is TaskKind.TXT2IMG:
            assert self._txt2img is not None
            return _Job(self._txt2img, size, width, height)

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
        # webui resize mode 0 ("just resize"): the init image is stretched to the target size
        init = inputs.init_images[0].convert("RGB")
        if init.size != (width, height):
            init = init.resize((width, height), Image.Resampling.LANCZOS)
        if inputs.mask is None:
            assert self._img2img is not None
            return _Job(self._img2img, {"image": init, "strength": strength}, width, height)

        if params.mask_blur < 0:
            raise InvalidInputError("mask_blur", f"must be >= 0, got {params.mask_blur}")
        mask = inputs.mask.convert("L")  # white = repaint, as in the webui
        if params.inpainting_mask_invert:
            mask = ImageOps.invert(mask)
        if params.mask_blur > 0:
            mask = mask.filter(ImageFilter.GaussianBlur(params.mask_blur))
        if mask.size != (width, height):
            mask = mask.resize((width, height), Image.Resampling.LANCZOS)
        assert self._inpaint is not None
        kwargs = {"image": init, "mask_image": mask, "strength": strength, **size}
        # like the webui, paste the original back outside the (blurred) mask
        return _Job(self._inpaint, kwargs, width, height, inpaint=True, overlay=(mask, init))

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
    def _seed(params: GenerationParams) -> int:
        total = params.batch_size * params.batches
        if params.seed < 0:  # -1 (any negative, as the webui) draws one
            return random.randrange(MAX_SEED - total + 1)
        if params.seed + total - 1 > MAX_SEED:
            raise InvalidInputError("seed", f"must be at most {MAX_SEED - total + 1}")
        return params.seed

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

    def _extras(
        self, params: GenerationParams, inputs: EngineInputs, started: float
    ) -> EngineResult:
        if not inputs.init_images:
            raise InvalidInputError("image", "extras needs an image")
        if params.upscaler == NO_UPSCALER:
            return self._unchanged(params, inputs, started)
        if params.upscaler not in _RESAMPLE:
            raise InvalidInputError(
                "upscaler_1", f"unknown upscaler {params.upscaler!r}; valid: {', '.join(UPSCALERS)}"
            )
        source = inputs.init_images[0].convert("RGB")
        src_w, src_h = source.size
        want_w, want_h = params.upscale_width, params.upscale_height
        if want_w or want_h:
            # one side given: keep the aspect ratio
            width = want_w or round(src_w * (want_h or 0) / src_h)
            height = want_h or round(src_h * (want_w or 0) / src_w)
            detail = f"Postprocess upscale to: {width}x{height}"
        else:
            factor = params.upscale_factor
            if factor <= 0:
                raise InvalidInputError("upscaling_resize", f"must be > 0, got {factor}")
            width, height = max(1, round(src_w * factor)), max(1, round(src_h * factor))
            detail = f"Postprocess upscale by: {factor:g}"
        for field, value in (("upscaling_resize_w", width), ("upscaling_resize_h", height)):
            if not 1 <= value <= MAX_UPSCALE_SIDE:
                raise InvalidInputError(field, f"result must be 1..{MAX_UPSCALE_SIDE}, got {value}")
        image = source.resize((width, height), _RESAMPLE[params.upscaler])
        text = f"{detail}, Postprocess upscaler: {params.upscaler}"
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
