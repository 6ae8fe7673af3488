"""Dynamic batching, the engine side: txt2img tasks whose `sdcore.webui.batching.batch_key` is
equal run as one pipeline call, their images side by side in the batch dimension.

Each task keeps what makes its pictures its own: its seeds (`pick_seeds` per task) and so its
images' generators and noise, and its prompt embeddings (encoded per task, one row per image).
Everything else of a call is per image too (the UNet, the schedulers' arithmetic, the
generators' later noise), so a task's pictures equal those of its lone run up to float
rounding. Tasks whose embeddings differ in shape (the webui's 75-token chunks: a longer prompt
has more) cannot share a call without changing their pixels: they are split into sub-batches of
equal shapes, one call each. What cannot be batched exactly runs alone (`groups`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image

from sdcore.domain.models import GenerationParams
from sdcore.engine.jobs import Job, prepare_job
from sdcore.engine.k_samplers import DPMAdaptive
from sdcore.engine.model import LoadedModel, placement
from sdcore.engine.pipeline import (
    UpscalerModels,
    denoise,
    first_pictures,
    hires_embeds,
    paste_back,
    pick_seeds,
    second_pass,
)
from sdcore.engine.report import (
    ImageSeeds,
    RunFacts,
    Seeds,
    StepReporter,
    generation_info,
    infotexts,
)
from sdcore.engine.schedulers import SAMPLER_CLASSES
from sdcore.engine.tiling import tiled
from sdcore.errors import DomainError, InvalidInputError
from sdcore.ports import BatchItem, EngineInputs, EngineResult
from sdcore.webui.batching import batch_key
from sdcore.webui.samplers import resolve

Embeds = dict[str, torch.Tensor]


@dataclass
class Member:
    """One task of a batched call, prepared: its seeds, job, embeddings and progress."""

    item: BatchItem
    seeds: Seeds
    job: Job
    embeds: Embeds  # the first pass's, one row (the pipeline's `num_images_per_prompt` = 1)
    hires: Embeds | None  # the hires fix's second pass's (None: no hires fix)
    progress: StepReporter  # one job: job_no 0 of 1
    frozen: torch.Tensor | None = None  # a skipped task's latents, as they were at the skip

    @property
    def ended(self) -> bool:
        return self.progress.stopped or self.progress.skipped

    def shapes(self) -> tuple[Any, ...]:
        """What must be equal for tasks to share a call: their embeddings' shapes."""
        second = self.hires if self.hires is not None else self.embeds
        return tuple((k, tuple(v.shape)) for pass_ in (self.embeds, second)
                     for k, v in sorted(pass_.items()))  # fmt: skip


def groups(model: LoadedModel, items: Sequence[BatchItem]) -> tuple[list[list[int]], list[int]]:
    """The items that can share calls, as groups of two or more indices (one batch key, the
    same LoRA, VAE and upscaler files, no embedding name meaning two files), and those that run
    alone: an inpainting checkpoint's txt2img (its pipeline draws the masked image's latents
    from the first image's generator only), DPM adaptive (its step sizes follow an error over
    the whole batch), a key of None, and any item left without a partner."""
    if model.inpainting:
        return [], list(range(len(items)))
    by_key: dict[Any, list[int]] = {}
    alone: list[int] = []
    for i, item in enumerate(items):
        key = _key(item)
        if key is None:
            alone.append(i)
        else:
            by_key.setdefault(key, []).append(i)
    found: list[list[int]] = []
    for members in by_key.values():
        group: list[int] = []
        names: dict[str, str] = {}  # embedding name -> sha256 in the group
        for i in members:
            own = {e.name: e.sha256 for e in items[i].inputs.embeddings}
            if any(names.get(name, sha) != sha for name, sha in own.items()):
                alone.append(i)  # the tokenizer holds one file per name at a time
                continue
            names.update(own)
            group.append(i)
        if len(group) > 1:
            found.append(group)
        else:
            alone.extend(group)
    return found, sorted(alone)


def _key(item: BatchItem) -> tuple[Any, ...] | None:
    params, inputs = item.params, item.inputs
    key = batch_key(params)
    if key is None or params.remove is not None or not _own_steps(params):
        return None
    loras = tuple(sorted((name, f.sha256) for name, f in inputs.loras.items()))
    upscalers = tuple(sorted((name, f.sha256) for name, f in inputs.upscalers.items()))
    vae = inputs.vae.sha256 if inputs.vae is not None else None
    return key, loras, upscalers, vae


def _own_steps(params: GenerationParams) -> bool:
    """Whether every image's steps are its own (not DPM adaptive's, in either pass)."""
    try:
        names = [resolve(params.sampler, params.scheduler)[0]]
        if params.hr_sampler:
            names.append(resolve(params.hr_sampler, params.hr_scheduler or None)[0])
    except InvalidInputError:
        return False  # run alone, where the error is the task's answer
    return not any(issubclass(SAMPLER_CLASSES[n][0], DPMAdaptive) for n in names)


def shared_inputs(items: Sequence[BatchItem]) -> EngineInputs:
    """The first item's inputs with every item's embeddings loaded (each prompt is encoded
    with its own only: `prepare`)."""
    union = {(e.name, e.sha256): e for item in items for e in item.inputs.embeddings}
    return replace(items[0].inputs, embeddings=list(union.values()))


def prepare(model: LoadedModel, item: BatchItem, started: float) -> Member:
    """One task's job, seeds and embeddings, checked as `generate` checks them, with the
    group's networks applied.

    Raises
    ------
    InvalidInputError
        A parameter the model cannot honour; `field` is the webui name of the culprit.
    """
    params, inputs = item.params, item.inputs
    job = prepare_job(model, params, inputs, inputs.upscalers)
    resolve(params.sampler, params.scheduler)
    seeds = pick_seeds(params)
    loaded = model.encoder.active_embeddings
    model.encoder.active_embeddings = {e.name for e in inputs.embeddings}  # its own only
    try:
        embeds = model.encoder.encode_pair(
            params.prompt, params.negative_prompt, params.clip_skip
        ).kwargs(*placement(job.pipe))
        hires = None if job.hires is None else hires_embeds(model, job.hires, params, embeds)
    finally:
        model.encoder.active_embeddings = loaded
    return Member(item, seeds, job, embeds, hires, StepReporter(item.on_step, 1, started))


def prepare_all(model: LoadedModel, items: Sequence[BatchItem]) -> list[Member | DomainError]:
    """`prepare` for each item: its Member, or the DomainError it raised."""
    started = time.perf_counter()
    out: list[Member | DomainError] = []
    for item in items:
        try:
            out.append(prepare(model, item, started))
        except DomainError as exc:
            out.append(exc)
    return out


def sub_batches(members: Sequence[Member]) -> list[list[Member]]:
    """The members in calls of equal embedding shapes, in their order of first appearance."""
    calls: dict[tuple[Any, ...], list[Member]] = {}
    for m in members:
        calls.setdefault(m.shapes(), []).append(m)
    return list(calls.values())


class BatchReporter:
    """`callback_on_step_end` of a shared call: each task's StepReporter hears of its own
    images (its rows of the latents, for the preview). A task that STOPs or SKIPs ends there:
    a skipped task's rows are put back as they were at that step after every later step, so
    its pictures are the partial ones its lone run would decode; the others go on; once every
    task ended the pipeline is interrupted."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.rows = _rows(self.members)

    def __call__(self, pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        latents = kwargs.get("latents")
        going = False
        for m, rows in zip(self.members, self.rows, strict=True):
            if m.ended:
                continue
            mine = None if latents is None else latents[rows]
            if not m.progress.report(pipe, i, mine):
                going = True
            elif m.progress.skipped and mine is not None:
                m.frozen = mine.clone()
        frozen = [(m.frozen, rows) for m, rows in zip(self.members, self.rows, strict=True)
                  if m.frozen is not None]  # fmt: skip
        if frozen and latents is not None:
            latents = latents.clone()
            for kept, rows in frozen:
                latents[rows] = kept
            kwargs["latents"] = latents
        if not going:
            pipe._interrupt = True
        return kwargs


def _rows(members: Sequence[Member]) -> list[slice]:
    rows, start = [], 0
    for m in members:
        rows.append(slice(start, start + m.seeds.total))
        start += m.seeds.total
    return rows


def _seeds(members: Sequence[Member]) -> ImageSeeds:
    """Every image's seeds, task after task (`resize_from` is equal: part of the key)."""
    return ImageSeeds(
        [s for m in members for s in m.seeds.seeds],
        [s for m in members for s in m.seeds.subseeds],
        members[0].seeds.resize_from,
    )


def _stack(embeds: Sequence[tuple[Embeds, int]]) -> Embeds:
    """Each task's embeddings repeated once per image (as the pipeline's
    `num_images_per_prompt` repeats them), the tasks one after the other."""
    keys = embeds[0][0].keys()
    return {k: torch.cat([e[k].repeat(n, *([1] * (e[k].dim() - 1))) for e, n in embeds])
            for k in keys}  # fmt: skip


def _split(out: Any, members: Sequence[Member]) -> list[Any]:
    """A call's output (latents or pictures) cut into each task's images."""
    if isinstance(out, torch.Tensor):
        return [out[rows] for rows in _rows(members)]
    pictures = list(out)
    return [pictures[rows] for rows in _rows(members)]


def _join(parts: Sequence[Any]) -> Any:
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(list(parts))
    return [p for part in parts for p in part]


@tiled  # tiling is part of the key: the same for every task of the call
def generate_batch(
    model: LoadedModel,
    params: GenerationParams,
    members: Sequence[Member],
    upscalers: UpscalerModels,
    identity: tuple[str, str, str],
) -> list[EngineResult]:
    """One call for `members` (equal embedding shapes; `params`: the first's): each task's
    EngineResult as `generate` gives it alone, `info["batch"]` added."""
    started = time.perf_counter()
    job = members[0].job  # equal for all: the key holds every field it is made from
    sampler, schedule = resolve(params.sampler, params.scheduler)
    embeds = _stack([(m.embeds, m.seeds.total) for m in members])
    out = denoise(model, job, params, _seeds(members), (sampler, schedule), embeds,
                  BatchReporter(members))  # fmt: skip
    pictures = _split(out, members)
    plan = job.hires
    if plan is not None:  # the second pass for the tasks that neither stopped nor skipped
        ended = [m.ended for m in members]
        live = [m for m, e in zip(members, ended, strict=True) if not e]
        done: Any = iter(())
        if live:
            first = _join([p for p, e in zip(pictures, ended, strict=True) if not e])
            hires = _stack([(m.hires if m.hires is not None else m.embeds, m.seeds.total)
                            for m in live])  # fmt: skip
            second = second_pass(model, plan, first, params, _seeds(live), hires,
                                 BatchReporter(live), upscalers)  # fmt: skip
            done = iter(_split(second, live))
        pictures = [next(done) if not e else [] if m.progress.stopped  # dropped: not decoded
                    else first_pictures(model, plan, p)
                    for m, p, e in zip(members, pictures, ended, strict=True)]  # fmt: skip
    name, model_hash, device = identity
    facts = RunFacts(sampler, schedule, job.width, job.height, job.inpaint, plan, name,
                     model_hash, device)  # fmt: skip
    size = {"size": len(members), "images": sum(m.seeds.total for m in members)}
    return [_result(m, p, facts, started, size) for m, p in zip(members, pictures, strict=True)]


def _result(
    m: Member, pictures: Any, facts: RunFacts, started: float, batch: dict[str, int]
) -> EngineResult:
    """A task's answer; a stopped task's pictures are dropped (it was cancelled)."""
    params, inputs = m.item.params, m.item.inputs
    images: list[Image.Image] = [] if m.progress.stopped else paste_back(m.job, pictures)
    texts = infotexts(params, inputs, m.seeds, facts, len(images))
    info = generation_info(params, m.seeds, facts, texts, m.progress, started)
    info["batch"] = dict(batch)
    return EngineResult(images, texts, info, interrupted=m.progress.stopped)
