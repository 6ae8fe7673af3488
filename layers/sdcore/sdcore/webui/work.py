"""What a generation task costs, in pixel-steps, as the webui would run it: the work a task
may take (SD_MAX_TASK_WORK) and a batch of tasks may share."""

from __future__ import annotations

from sdcore.domain.models import GenerationParams, Model, TaskKind

# the side a checkpoint of each architecture draws at when a request gives no size
NATIVE_SIDE = {"sd1": 512, "sd2": 768, "sdxl": 1024}


def native_side(model: Model) -> int:
    """The side the checkpoint draws at when a request gives no size."""
    return NATIVE_SIDE.get(str(model.details.get("architecture")), 512)


def task_work(params: GenerationParams, model: Model) -> int:
    """What a task costs, in pixel-steps: width x height x the steps that really run, for
    every image, plus the hires fix's second pass, and half as much again per ControlNet unit;
    a script's, all its jobs'. Extras (a resample) cost none."""
    if params.kind in (TaskKind.EXTRAS, TaskKind.INTERROGATE):
        return 0
    if params.script is not None:  # a webui script: every job counts (SD upscale: every tile)
        upscale = params.script.tile_upscale
        per = upscale.tiles if upscale is not None else 1
        return per * sum(task_work(job, model) for job in params.script_jobs())
    side = native_side(model)
    width, height = params.width or side, params.height or side
    steps = params.steps
    if params.kind is TaskKind.IMG2IMG:  # the webui runs int(steps x strength) of them
        steps = max(1, int(params.steps * params.denoising_strength))
    work = width * height * steps
    if params.hires:
        scale = params.hr_scale
        hr_w = params.hr_resize_x or int(width * scale)
        hr_h = params.hr_resize_y or int(height * scale)
        hr_steps = params.hr_second_pass_steps or params.steps
        work += hr_w * hr_h * max(1, int(hr_steps * params.denoising_strength))
    # each ControlNet unit runs its encoder half of a UNet again at every step
    work += work * len(params.controlnet) // 2
    return work * params.image_count
