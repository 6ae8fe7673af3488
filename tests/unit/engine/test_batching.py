"""Dynamic batching on the tiny model: tasks of one batch key as one pipeline call, each task's
pictures what its lone run gives (up to float rounding: the largest difference measured is
printed and documented in docs/generation.md), per-task progress, STOP and SKIP, sub-batches
by prompt length, the hires fix and a bad task among good ones."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.errors import InvalidInputError
from sdcore.ports import BatchItem, EngineInputs, EngineResult, StepAction, StepInfo
from sdcore.webui.generation_rules import MAX_SEED

from .support import Steps, gen

# one level of 255 per channel: a batch of another size may round a pixel one level apart
# (CPU kernels block matrix products by batch size); everything else must be identical
MAX_LEVELS = 1
TIMING = {"elapsed_s", "peak_memory_mb", "batch"}
# tasks the tests share (their lone runs are computed once); an ancestral sampler, so the
# generators' noise after the first step counts too
A = {"seed": 1}
B = {"seed": 20, "prompt": "a blue square", "batch_size": 2}
C = {"seed": 300, "prompt": "green", "negative_prompt": "blurry"}
_lone: dict[str, EngineResult] = {}


def _items(*fields: dict[str, Any]) -> list[BatchItem]:
    return [
        BatchItem(gen(sampler="Euler a", subseed=7, **f), EngineInputs(), Steps()) for f in fields
    ]


def _alone(engine: DiffusersEngine, item: BatchItem, on_step: Any = None) -> EngineResult:
    if on_step is not None:
        return engine.run(item.params, item.inputs, on_step)
    key = repr(item.params)
    if key not in _lone:
        _lone[key] = engine.run(item.params, item.inputs, Steps())
    return _lone[key]


def _max_diff(got: EngineResult, want: EngineResult) -> int:
    assert len(got.images) == len(want.images) > 0
    diffs = [
        int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())
        for a, b in zip(got.images, want.images, strict=True)
    ]
    return max(diffs)


def _same_as_alone(engine: DiffusersEngine, item: BatchItem, got: Any) -> int:
    """The batched answer equals the lone run's (pixels within MAX_LEVELS, the same infotexts
    and info but for timings); the largest pixel difference."""
    assert isinstance(got, EngineResult) and not got.interrupted
    want = _alone(engine, item)
    diff = _max_diff(got, want)
    print(f"max pixel difference, batched vs alone: {diff} / 255")
    assert diff <= MAX_LEVELS
    assert got.infotexts == want.infotexts
    strip = lambda info: {k: v for k, v in info.items() if k not in TIMING}  # noqa: E731
    assert strip(got.info) == strip(want.info)
    return diff


def test_a_batch_is_one_call_and_each_task_is_as_alone(engine: DiffusersEngine) -> None:
    items = _items(A, B, C)
    answers = engine.run_batch(items)
    diffs = [_same_as_alone(engine, item, got) for item, got in zip(items, answers, strict=True)]
    print(f"largest over the batch: {max(diffs)} / 255")
    for got in answers:
        assert isinstance(got, EngineResult)
        assert got.info["batch"] == {"size": 3, "images": 4, "calls": 1}
        assert "peak_memory_mb" in got.info
    assert [len(a.images) for a in answers if isinstance(a, EngineResult)] == [1, 2, 1]
    for item in items:  # each task's own progress: one job, every step
        seen = item.on_step.seen  # type: ignore[attr-defined]
        assert [(s.step, s.steps, s.job_no, s.job_count) for s in seen] == [
            (i, 3, 0, 1) for i in range(1, 4)
        ]


def _at_step_2(action: StepAction) -> Any:
    seen: list[StepInfo] = []

    def on_step(info: StepInfo) -> StepAction:
        seen.append(info)
        return action if info.step == 2 else StepAction.CONTINUE

    on_step.seen = seen  # type: ignore[attr-defined]
    return on_step


def test_stop_drops_one_task_and_skip_keeps_partial_pictures(engine: DiffusersEngine) -> None:
    items = _items(A, B, C)
    items[1].on_step = _at_step_2(StepAction.STOP)
    items[2].on_step = _at_step_2(StepAction.SKIP)
    first, stopped, skipped = engine.run_batch(items)
    assert isinstance(stopped, EngineResult) and stopped.interrupted
    assert stopped.images == [] and stopped.infotexts == []
    assert [s.step for s in items[1].on_step.seen] == [1, 2]  # type: ignore[attr-defined]
    _same_as_alone(engine, items[0], first)
    # a skipped task ends its pass there, as alone: the partial pictures
    assert isinstance(skipped, EngineResult) and not skipped.interrupted
    assert [s.step for s in items[2].on_step.seen] == [1, 2]  # type: ignore[attr-defined]
    assert skipped.info["skipped_jobs"] == [0]
    alone = _alone(engine, items[2], _at_step_2(StepAction.SKIP))
    assert _max_diff(skipped, alone) <= MAX_LEVELS


def test_prompts_of_other_lengths_run_in_calls_of_their_own(engine: DiffusersEngine) -> None:
    long = " ".join(["a red circle on a blue square"] * 14)  # over 75 tokens: two chunks
    items = _items(A, {"seed": 6, "prompt": long}, C)
    answers = engine.run_batch(items)
    for item, got in zip(items, answers, strict=True):
        _same_as_alone(engine, item, got)
    batches = [a.info["batch"] for a in answers if isinstance(a, EngineResult)]
    assert batches == [
        {"size": 2, "images": 2, "calls": 2},
        {"size": 1, "images": 1, "calls": 2},
        {"size": 2, "images": 2, "calls": 2},
    ]


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_fix_batch_is_as_alone(engine: DiffusersEngine, upscaler: str) -> None:
    hires = {"hires": True, "hr_scale": 1.5, "hr_second_pass_steps": 2, "hr_upscaler": upscaler}
    items = _items({"seed": 8, **hires}, {"seed": 9, "prompt": "blue", **hires})
    answers = engine.run_batch(items)
    for item, got in zip(items, answers, strict=True):
        _same_as_alone(engine, item, got)
        assert isinstance(got, EngineResult) and got.images[0].size == (96, 96)
        # both passes reported: the first pass's steps, then the second pass's
        assert [s.step for s in item.on_step.seen][:4] == [1, 2, 3, 1]  # type: ignore[attr-defined]


def test_hires_fix_tasks_ended_in_the_first_pass_get_no_second(engine: DiffusersEngine) -> None:
    hires = {"hires": True, "hr_scale": 1.5, "hr_second_pass_steps": 2, "hr_upscaler": "Latent"}
    items = _items({"seed": 8, **hires}, {"seed": 9, "prompt": "blue", **hires}, {**B, **hires})
    items[1].on_step = _at_step_2(StepAction.SKIP)
    items[2].on_step = _at_step_2(StepAction.STOP)
    going, skipped, stopped = engine.run_batch(items)
    _same_as_alone(engine, items[0], going)  # its second pass ran alone in the second call
    assert isinstance(stopped, EngineResult) and stopped.interrupted and stopped.images == []
    assert isinstance(skipped, EngineResult) and skipped.images[0].size == (64, 64)
    alone = _alone(engine, items[1], _at_step_2(StepAction.SKIP))
    assert alone.images[0].size == (64, 64) and _max_diff(skipped, alone) <= MAX_LEVELS


def test_a_bad_task_gets_its_error_and_the_others_run(engine: DiffusersEngine) -> None:
    items = _items(A, {"seed": MAX_SEED, "batch_size": 2}, C)
    good, bad, other = engine.run_batch(items)
    assert isinstance(bad, InvalidInputError) and bad.field == "seed"
    assert isinstance(good, EngineResult) and good.info["batch"]["size"] == 2
    _same_as_alone(engine, items[0], good)
    _same_as_alone(engine, items[2], other)
