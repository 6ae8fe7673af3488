"""Running a webui script's plan (see `sdcore.webui.scripts`): its jobs one after the other,
each a generation like any other, with progress over all of them (job `n` of the whole task),
a stop ending the task and a skip ending one job; then its labelled grids. img2img's SD upscale
redraws the upscaled image tile by tile and blends the tiles back."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image

from sdcore.domain.models import GenerationParams
from sdcore.domain.scripts import ScriptPlan, TileUpscale
from sdcore.engine.grids import combine, labelled_grid, split, tile_layout, titled_row
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs, EngineResult, StepAction, StepCallback, StepInfo
from sdcore.webui.scripts import SD_UPSCALE_RESAMPLERS as BUILT_IN
from sdcore.webui.scripts import upscaled_size

# one generation of the task's engine: (params, inputs, step callback) -> result
# a registered upscaler model: (image, scale) -> the image upscaled by scale
UpscaleModel = Callable[[Image.Image, float], Image.Image]
_LANCZOS = Image.Resampling.LANCZOS
RunOne = Callable[[GenerationParams, EngineInputs, StepCallback], EngineResult]


def _as_part(on_step: StepCallback, offset: int, total: int) -> StepCallback:
    """A job's step callback reporting job `offset + n` of the whole task's `total`."""

    def step(info: StepInfo) -> StepAction | bool:
        return on_step(dataclasses.replace(info, job_no=offset + info.job_no, job_count=total))

    return step


def _run_all(
    jobs: list[tuple[GenerationParams, EngineInputs]], on_step: StepCallback, run_one: RunOne
) -> list[EngineResult]:
    """Each job in order; a stopped one ends the run (the rest never start)."""
    total = sum(params.batches for params, _ in jobs)
    results: list[EngineResult] = []
    offset = 0
    for params, inputs in jobs:
        result = run_one(params, inputs, _as_part(on_step, offset, total))
        results.append(result)
        offset += params.batches
        if result.interrupted:
            break
    return results


def run_script(
    params: GenerationParams,
    inputs: EngineInputs,
    on_step: StepCallback,
    run_one: RunOne,
    upscalers: Callable[[], Mapping[str, UpscaleModel]] = dict,
) -> EngineResult:
    """The task's script: its jobs (or tiles), then its grids, as one result.

    Raises
    ------
    InvalidInputError
        As a generation; `script_args` for an image SD upscale cannot tile.
    """
    plan = params.script
    assert plan is not None
    if plan.tile_upscale is not None:
        big = upscaled(inputs.init_images[0].convert("RGB") if inputs.init_images else None,
                       plan.tile_upscale, upscalers)  # fmt: skip
        return _tile_upscale(params, plan.tile_upscale, big, inputs, on_step, run_one)
    jobs = params.script_jobs()
    results = _run_all([(job, inputs) for job in jobs], on_step, run_one)
    return _assemble(plan, results, len(jobs))


def _assemble(plan: ScriptPlan, results: list[EngineResult], count: int) -> EngineResult:
    """Grids first (a job that gave nothing leaves its cell blank), then the jobs' images."""
    firsts: list[Image.Image | None] = [r.images[0] if r.images else None for r in results]
    firsts += [None] * (count - len(firsts))
    grids = [
        labelled_grid(
            [firsts[i] for i in g.cells], g.columns, g.column_labels, g.row_labels, g.margin
        )
        for g in plan.grids
    ]
    shown = ([titled_row(grids, plan.titles)] if plan.titles else []) + (
        grids if plan.sub_grids or not plan.titles else []
    )
    first_text = next((r.infotexts[0] for r in results if r.infotexts), "")
    images, texts = list(shown), [first_text] * len(shown)
    if plan.cells:
        for result in results:
            images += result.images
            texts += result.infotexts
    info: dict[str, Any] = dict(results[0].info) if results else {}
    info.update(
        script=plan.name,
        infotexts=texts,
        all_prompts=[r.info.get("prompt") for r in results],
        all_seeds=[seed for r in results for seed in r.info.get("all_seeds", [])],
        all_subseeds=[seed for r in results for seed in r.info.get("all_subseeds", [])],
        index_of_first_image=len(shown),
        interrupted=any(r.interrupted for r in results),
        skipped_jobs=sorted({j for r in results for j in r.info.get("skipped_jobs", [])}),
    )
    return EngineResult(images=images, infotexts=texts, info=info, interrupted=info["interrupted"])


def upscaled(
    image: Image.Image | None,
    plan: TileUpscale,
    upscalers: Callable[[], Mapping[str, UpscaleModel]],
) -> Image.Image:
    """The image SD upscale redraws: `scale` times the size rounded down to 8 px; by Nearest,
    by Lanczos ("None" too: it resizes the picture as the webui's does), or by a registered
    upscaler model as far as that size needs, then Lanczos-resized to it exactly (the webui's
    `Upscaler.upscale`)."""
    if image is None:
        raise InvalidInputError("init_images", "SD upscale needs an image")
    width, height = upscaled_size(image.width, image.height, plan.scale)
    if plan.upscaler not in BUILT_IN:
        big = upscalers()[plan.upscaler](image, max(width / image.width, height / image.height))
        return big if big.size == (width, height) else big.resize((width, height), _LANCZOS)
    method = Image.Resampling.NEAREST if plan.upscaler == "Nearest" else _LANCZOS
    return image.resize((width, height), method)


def _tile_upscale(
    params: GenerationParams,
    plan: TileUpscale,
    big: Image.Image,
    inputs: EngineInputs,
    on_step: StepCallback,
    run_one: RunOne,
) -> EngineResult:
    """Per picture (one per `n_iter`, seed + n): the init image upscaled, each tile redrawn by
    img2img at the task's width x height with the picture's seed, the tiles blended back."""
    tile_w, tile_h = params.width or 512, params.height or 512
    if big.width < tile_w or big.height < tile_h:
        raise InvalidInputError(
            "script_args",
            f"the upscaled image {big.width}x{big.height} is smaller than a {tile_w}x{tile_h} tile",
        )
    tiles = tile_layout(big.width, big.height, tile_w, tile_h, plan.overlap)
    parts = split(big, tiles)
    jobs = []
    for job in params.script_jobs():
        one = job.model_copy(
            update={
                "width": tile_w,
                "height": tile_h,
                "batch_size": 1,
                "batches": 1,
                "resize_mode": 0,
                "script": None,
            }
        )
        jobs += [(one, dataclasses.replace(inputs, init_images=[part])) for part in parts]
    results = _run_all(jobs, on_step, run_one)
    images, texts = [], []
    per = tiles.count
    for start in range(0, len(results) - per + 1, per):
        done = results[start : start + per]
        if any(r.interrupted or not r.images for r in done):
            break
        images.append(combine([r.images[0] for r in done], tiles))
        texts.append(done[0].infotexts[0])
    info: dict[str, Any] = dict(results[0].info) if results else {}
    info.update(
        script="sd upscale",
        infotexts=texts,
        width=big.width,
        height=big.height,
        tiles=per,
        interrupted=any(r.interrupted for r in results),
    )
    return EngineResult(images=images, infotexts=texts, info=info, interrupted=info["interrupted"])
