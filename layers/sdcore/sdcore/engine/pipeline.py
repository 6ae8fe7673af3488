"""One generation, as the webui runs it, in named steps: pick the seeds, then per job (one
`n_iter` batch) draw each image's noise, denoise, run the hires fix's second pass, and paste
the original back outside an inpainting mask; then write the infotexts and the info."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image

from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.engine import philox
from sdcore.engine.controlnet import controlled
from sdcore.engine.extras import Upscaler
from sdcore.engine.hires import HiresPlan
from sdcore.engine.jobs import Job, prepare_job
from sdcore.engine.k_samplers import bound
from sdcore.engine.model import LoadedModel, placement
from sdcore.engine.noise import image_noise
from sdcore.engine.report import (
    ImageSeeds,
    RunFacts,
    Seeds,
    StepReporter,
    generation_info,
    infotexts,
)
from sdcore.engine.schedulers import make_scheduler
from sdcore.engine.scripts import run_script
from sdcore.engine.tiling import tiled
from sdcore.ports import EngineInputs, EngineResult, StepCallback
from sdcore.webui.generation_rules import MAX_SEED, check_seed, seed_resize
from sdcore.webui.samplers import resolve

# the task's registered upscaler models, loaded when asked for (the hires fix may use one)
UpscalerModels = Callable[[], Mapping[str, Upscaler]]


@tiled  # the webui's tiling: circular padding for the whole task, restored however it ends
def generate(
    model: LoadedModel,
    params: GenerationParams,
    inputs: EngineInputs,
    on_step: StepCallback,
    upscalers: UpscalerModels,
    identity: tuple[str, str, str],
) -> EngineResult:
    """Generate `batch_size x batches` images; `identity`: (model name, hash, device) as the
    infotext and info report them.

    Raises
    ------
    InvalidInputError
        A parameter the model cannot honour; `field` is the webui name of the culprit.
    """
    if params.script is not None:  # a webui script: its jobs, each a generation, then grids
        return run_script(params, inputs, on_step, lambda p, i, step: generate(
            model, p, i, step, upscalers, identity), upscalers)  # fmt: skip
    started = time.perf_counter()
    job = prepare_job(model, params, inputs, inputs.upscalers)
    sampler, schedule = resolve(params.sampler, params.scheduler)
    seeds = pick_seeds(params)
    embeds = model.encoder.encode_pair(
        params.prompt, params.negative_prompt, params.clip_skip
    ).kwargs(*placement(job.pipe))
    progress = StepReporter(on_step, params.batches, started)
    images: list[Image.Image] = []
    for job_no in range(params.batches):
        part = slice(job_no * params.batch_size, (job_no + 1) * params.batch_size)
        progress.start_job(job_no)
        images_seeds = seeds.images(part)
        batch = denoise(model, job, params, images_seeds, (sampler, schedule), embeds, progress)
        if job.hires is not None and (progress.stopped or progress.skipped):
            batch = first_pictures(model, job.hires, batch)  # no second pass
        elif job.hires is not None:
            hires = hires_embeds(model, job.hires, params, embeds)
            batch = second_pass(model, job.hires, batch, params, images_seeds, hires, progress,
                                upscalers)  # fmt: skip
        images.extend(paste_back(job, batch))
        if progress.stopped:
            break
    name, model_hash, device = identity
    facts = RunFacts(sampler, schedule, job.width, job.height, job.inpaint, job.hires, name,
                     model_hash, device)  # fmt: skip
    texts = infotexts(params, inputs, seeds, facts, len(images))
    info = generation_info(params, seeds, facts, texts, progress, started)
    return EngineResult(images=images, infotexts=texts, info=info, interrupted=progress.stopped)


def pick_seeds(params: GenerationParams) -> Seeds:
    """The first seed and subseed (drawn when negative, as the webui does) and the size the
    noise is drawn at."""
    total = params.batch_size * params.batches
    return Seeds(
        seed=_first_seed(params.seed, total, "seed"),
        subseed=_first_seed(params.subseed, total, "subseed"),
        total=total,
        resize_from=seed_resize(params),
    )


def _first_seed(seed: int, total: int, field: str) -> int:
    """The first of `total` consecutive seeds; a negative one (-1, as the webui) is drawn."""
    if seed < 0:
        return random.randrange(MAX_SEED - total + 1)
    check_seed(seed, total, field)
    return seed


def draw_noise(
    pipe: Any, shape: tuple[int, int, int], params: GenerationParams, seeds: ImageSeeds
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Each image's starting noise from its own seed (and variation seed): one generator per
    image, so image i is the same whatever the batch size; on the CPU (so whatever the device
    too) unless the webui's `randn_source` asks for the pipeline's device ("GPU") or for an
    NVIDIA GPU's numbers ("NV", drawn on the CPU; the sampler's later noise too)."""
    on, dtype = placement(pipe)
    device = on if params.randn_source == "GPU" else "cpu"
    nv = params.randn_source == "NV"
    if nv:
        philox.install()
    drawn = [
        image_noise(
            shape,
            s,
            v,
            params.subseed_strength,
            seeds.resize_from,
            params.eta_noise_seed_delta,
            device,
            nv,
        )  # fmt: skip
        for s, v in zip(seeds.seeds, seeds.subseeds, strict=True)
    ]
    noise = torch.stack([n for n, _ in drawn]).to(on, dtype)
    return noise, [g for _, g in drawn]


def use_noise(scheduler: SchedulerMixin, noise: torch.Tensor) -> None:
    """img2img and inpaint draw their noise inside the pipeline and add it to the image latents
    with `scheduler.add_noise`; this run's scheduler adds ours (seed, variation, resize) instead."""
    base = scheduler.add_noise  # type: ignore[attr-defined]

    def add_noise(original: torch.Tensor, _drawn: torch.Tensor, timesteps: Any) -> Any:
        return base(original, noise.to(original.device, original.dtype), timesteps)

    scheduler.add_noise = add_noise  # type: ignore[attr-defined]


def _latent_shape(pipe: Any, width: int, height: int) -> tuple[int, int, int]:
    scale = int(pipe.vae_scale_factor)
    return int(pipe.vae.config.latent_channels), height // scale, width // scale


def denoise(
    model: LoadedModel,
    job: Job,
    params: GenerationParams,
    seeds: ImageSeeds,
    sampler: tuple[str, str],
    embeds: dict[str, torch.Tensor],
    progress: Callable[..., Any],
) -> Any:
    """One job's pipeline call: latents when the hires fix upscales in latent space, else
    pictures. `embeds` hold one prompt (repeated for every image) or one row per image;
    `progress` is the `callback_on_step_end`."""
    pipe = job.pipe
    noise, generators = draw_noise(pipe, _latent_shape(pipe, job.width, job.height), params,
                                   seeds)  # fmt: skip
    scheduler = make_scheduler(*sampler, model.scheduler_config, seeds.seeds, model.sdxl,
                               eta=params.eta_ancestral, s_noise=params.s_noise)  # fmt: skip
    kwargs = dict(job.kwargs)
    if params.kind is TaskKind.TXT2IMG or (job.inpaint and job.kwargs["strength"] >= 1):
        kwargs["latents"] = noise
    else:
        use_noise(scheduler, noise)
    if job.latent_fill is not None:  # webui: latent noise / latent nothing in the mask
        latents, repaint, with_noise = job.latent_fill
        filled = latents * (1 - repaint) + (noise * repaint if with_noise else 0)
        kwargs["image"] = kwargs["masked_image_latents"] = filled
    pipe.scheduler = scheduler
    out = bound(pipe, scheduler)(  # a sampler may need more of the call than its step
        **embeds,
        num_inference_steps=params.steps,
        guidance_scale=params.guidance,
        num_images_per_prompt=_per_prompt(generators, embeds),
        generator=generators,
        callback_on_step_end=controlled(pipe, progress),
        output_type="latent" if job.hires is not None and job.hires.latent else "pil",
        **kwargs,
    )
    return out.images


def second_pass(
    model: LoadedModel,
    plan: HiresPlan,
    first: Any,
    params: GenerationParams,
    seeds: ImageSeeds,
    embeds: dict[str, torch.Tensor],
    progress: Callable[..., Any],
    upscalers: UpscalerModels,
) -> list[Image.Image]:
    """The hires fix's second pass: the first pass's latents (or pictures) upscaled, then
    img2img at the larger size with fresh noise from the same seeds, as the webui does, with
    the plan's sampler and `embeds` (`hires_embeds`). A stopped or skipped job has none: its
    pictures are the first pass's (`first_pictures`)."""
    pipe = model.img2img
    if plan.latent:
        image: Any = plan.upscale_latents(first, int(pipe.vae_scale_factor))
    else:
        upscaler = upscalers()[plan.upscaler] if plan.model else None
        image = [plan.upscale_image(im, upscaler) for im in first]
    if plan.steps == 0:  # denoising strength 0: the upscaled first pass, as the webui keeps it
        return model.decode(image) if plan.latent else image
    noise, generators = draw_noise(pipe, _latent_shape(pipe, plan.width, plan.height), params,
                                   seeds)  # fmt: skip
    scheduler = make_scheduler(plan.sampler, plan.schedule, model.scheduler_config,
                               seeds.seeds, model.sdxl, eta=params.eta_ancestral,
                               s_noise=params.s_noise)  # fmt: skip
    use_noise(scheduler, noise)
    pipe.scheduler = scheduler
    out = bound(pipe, scheduler)(
        **embeds,
        image=image,
        strength=plan.strength,
        num_inference_steps=plan.steps,
        guidance_scale=params.guidance,
        num_images_per_prompt=_per_prompt(generators, embeds),
        generator=generators,
        callback_on_step_end=controlled(pipe, progress, hires=True),
        output_type="pil",
    )
    return list(out.images)


def hires_embeds(
    model: LoadedModel, plan: HiresPlan, params: GenerationParams, embeds: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The second pass's prompt embeddings: the first pass's, or the hires prompts' when they
    differ (their `<lora:...>` tags are not applied: the first pass's LoRAs stay on)."""
    prompts = plan.prompts(params)
    if prompts is None:
        return embeds
    pipe = model.img2img
    return model.encoder.encode_pair(*prompts, params.clip_skip).kwargs(*placement(pipe))


def first_pictures(model: LoadedModel, plan: HiresPlan, first: Any) -> list[Image.Image]:
    """The first pass's pictures, for a job that ends before the hires fix's second pass."""
    return model.decode(first) if plan.latent else list(first)


def _per_prompt(generators: list[torch.Generator], embeds: dict[str, torch.Tensor]) -> int:
    """`num_images_per_prompt`: 1 where `embeds` have a row per image (a batched call)."""
    return len(generators) // int(embeds["prompt_embeds"].shape[0])


def paste_back(job: Job, batch: Any) -> list[Image.Image]:
    """Inpainting: the original outside the (blurred) mask, as the webui does."""
    if job.overlay is None:
        return list(batch)
    mask, init = job.overlay
    return [job.pipe.image_processor.apply_overlay(mask, init, im, job.crop) for im in batch]
