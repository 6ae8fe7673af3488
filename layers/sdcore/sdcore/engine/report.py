"""What a run tells while it runs and when it is done: a StepInfo after every denoising step
(the port's callback decides whether to go on), and each image's infotext and the task's info."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.engine.hires import HiresPlan
from sdcore.engine.networks import network_fields
from sdcore.engine.noise import SD1_LATENT_RGB, SDXL_LATENT_RGB, latent_preview
from sdcore.ports import EngineInputs, StepAction, StepCallback, StepInfo
from sdcore.webui.controlnet import infotext_fields
from sdcore.webui.infotext import generation_infotext


class StepReporter:
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
        if self.report(pipe, i, kwargs.get("latents")):
            pipe._interrupt = True
        return kwargs

    def report(self, pipe: Any, i: int, latents: Any) -> bool:
        """Step `i` of `pipe`'s loop to the callback (`latents`: this task's images', for the
        preview); whether the task's pass ends here (a STOP, or the first SKIP of a job)."""
        now = time.perf_counter()
        if self._last is not None:
            self._durations.append(now - self._last)
        self._last = now
        # num_timesteps is what the loop really runs: img2img int(steps * strength), Heun
        # two entries per step; the requested `steps` would stall progress short of 100 %.
        info = StepInfo(
            step=i + 1,
            steps=int(pipe.num_timesteps),
            job_no=self.job_no,
            job_count=self.job_count,
            elapsed_s=now - self.started,
            step_s=sum(self._durations) / len(self._durations) if self._durations else None,
            preview=_preview(pipe, latents),
        )
        action = self.on_step(info)
        if action == StepAction.SKIP and not self.skipped:
            self.skipped = True
            self.skipped_jobs.append(self.job_no)
            return True
        if action == StepAction.STOP:
            self.stopped = True
            return True
        return False


def _preview(pipe: Any, latents: Any) -> Any:
    """A cheap preview of the first image's latents, rendered only when asked for; None when
    the latents have no known approximation."""
    if latents is None or latents.shape[1] != 4:
        return None
    factors = SDXL_LATENT_RGB if hasattr(pipe, "text_encoder_2") else SD1_LATENT_RGB

    def preview() -> Image.Image:
        return latent_preview(latents[0], factors)

    return preview


@dataclass(frozen=True)
class Seeds:
    """A task's seeds: one per image, consecutive from the first, as the webui draws them."""

    seed: int
    subseed: int
    total: int
    resize_from: tuple[int, int] | None  # (latent height, latent width) the noise is drawn at

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.total)]

    @property
    def subseeds(self) -> list[int]:
        return [self.subseed + i for i in range(self.total)]

    def images(self, part: slice) -> ImageSeeds:
        """The seeds of the images `part` (one job)."""
        return ImageSeeds(self.seeds[part], self.subseeds[part], self.resize_from)


@dataclass(frozen=True)
class ImageSeeds:
    """The seeds of the images of one pipeline call, in order: a job of one task, or the
    images of several tasks run as one call (`sdcore.engine.batch`)."""

    seeds: list[int]
    subseeds: list[int]
    resize_from: tuple[int, int] | None


@dataclass(frozen=True)
class RunFacts:
    """What the infotexts and the info record besides the params."""

    sampler: str
    schedule: str
    width: int
    height: int
    inpaint: bool
    hires: HiresPlan | None
    model_name: str
    model_hash: str
    device: str


def control_hashes(params: GenerationParams, inputs: EngineInputs) -> dict[str, str]:
    """Each ControlNet unit's model name -> its file's sha256."""
    pairs = zip(params.controlnet, inputs.controls, strict=True)
    return {unit.model: given.file.sha256 for unit, given in pairs}


def infotexts(
    params: GenerationParams, inputs: EngineInputs, seeds: Seeds, facts: RunFacts, count: int
) -> list[str]:
    """The webui "parameters" text of each of the first `count` images."""
    extra = [
        *(
            facts.hires.infotext_fields(params, facts.sampler, facts.schedule)
            if facts.hires is not None
            else ()
        ),
        *network_fields(inputs),
        *infotext_fields(params.controlnet, control_hashes(params, inputs)),
    ]
    return [
        generation_infotext(
            params,
            seed=seeds.seeds[i],
            subseed=seeds.subseeds[i],
            width=facts.width,
            height=facts.height,
            model_name=facts.model_name,
            model_hash=facts.model_hash,
            sampler=facts.sampler,
            schedule=facts.schedule,
            inpaint=facts.inpaint,
            extra=extra,
        )
        for i in range(count)
    ]


def generation_info(
    params: GenerationParams,
    seeds: Seeds,
    facts: RunFacts,
    texts: list[str],
    progress: StepReporter,
    started: float,
) -> dict[str, Any]:
    """The task's info, in the webui's names (JSON-serialisable)."""
    resize_from = seeds.resize_from
    return {
        "prompt": params.prompt,
        "negative_prompt": params.negative_prompt,
        "seed": seeds.seed,
        "all_seeds": seeds.seeds,
        "subseed": seeds.subseed,
        "all_subseeds": seeds.subseeds,
        "subseed_strength": params.subseed_strength,
        "seed_resize_from_w": params.seed_resize_from_w if resize_from else -1,
        "seed_resize_from_h": params.seed_resize_from_h if resize_from else -1,
        "steps": params.steps,
        "restore_faces": bool(params.face_restorers),
        "sampler_name": facts.sampler,
        "scheduler": facts.schedule,
        "cfg_scale": params.guidance,
        "clip_skip": params.clip_skip,
        "tiling": params.tiling,
        "width": facts.width,
        "height": facts.height,
        "batch_size": params.batch_size,
        "n_iter": params.batches,
        "denoising_strength": (
            params.denoising_strength if params.kind is TaskKind.IMG2IMG else None
        ),
        "mask_blur": params.mask_blur if facts.inpaint else None,
        "model": facts.model_name,
        "model_hash": facts.model_hash,
        "sd_model_name": facts.model_name,
        "sd_model_hash": facts.model_hash[:10] or None,
        "device": facts.device,
        "elapsed_s": round(time.perf_counter() - started, 4),
        "infotexts": texts,
        "interrupted": progress.stopped,
        "skipped_jobs": progress.skipped_jobs,
    }


def resample_info(
    image: Image.Image, upscaler: str, model_name: str, model_hash: str, started: float
) -> dict[str, Any]:
    """The info of an extras task (a resample: no accelerator involved)."""
    return {
        "width": image.width,
        "height": image.height,
        "upscaler": upscaler,
        "model": model_name,
        "model_hash": model_hash,
        "device": "cpu",
        "elapsed_s": round(time.perf_counter() - started, 4),
        "interrupted": False,
    }
