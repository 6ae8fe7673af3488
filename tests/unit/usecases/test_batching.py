"""Dynamic batching, the worker's side (SD_MAX_BATCH): a worker that starts a task claims
queued compatible tasks of its checkpoint and runs them in one `Engine.run_batch` call under
the one slot its task holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image

from sdcore.domain.models import GenerationParams, Lease, Task, TaskKind, TaskStatus
from sdcore.errors import DomainError, InvalidInputError
from sdcore.ports import BatchItem, EngineResult, StepAction, StepInfo
from sdcore.services import Services
from sdcore.usecases.batching import RIDER_SCAN
from sdcore.usecases.control import Outcome, dispatch_task
from sdcore.usecases.inference import run_task
from sdcore.usecases.submit import submit_task
from sdcore.usecases.tasks import request_cancel
from sdcore.webui.png_info import read_parameters
from tests.unit.usecases.conftest import ScriptedEngine, dispatched
from tests.unit.usecases.test_metrics import scraped, value

SMALL = {"width": 64, "height": 64, "steps": 3}  # 12,288 pixel-steps a task


class LockstepEngine(ScriptedEngine):
    """Runs a batch as a pipeline does: every item's step at once, each item's callback told
    its own progress; an item whose callback says STOP is dropped, the others go on."""

    def __init__(self, fail_prompt: str | None = None) -> None:
        super().__init__()
        self.batches: list[list[str]] = []  # the prompts of each run_batch call
        self.fail_prompt = fail_prompt

    def run_batch(self, items: Sequence[BatchItem]) -> list[EngineResult | DomainError]:
        self.batches.append([item.params.prompt for item in items])
        steps = items[0].params.steps
        stopped = [False] * len(items)
        for step in range(1, steps + 1):
            self.steps_run += 1
            if self.on_step_hook:
                self.on_step_hook(step)
            for n, item in enumerate(items):
                if not stopped[n]:
                    answer = item.on_step(StepInfo(step, steps, 0, 1, 0.01 * step))
                    stopped[n] = StepAction(int(answer)) is StepAction.STOP
        out: list[EngineResult | DomainError] = []
        for n, item in enumerate(items):
            p = item.params
            if p.prompt == self.fail_prompt:
                out.append(InvalidInputError("prompt", f"cannot draw {p.prompt!r}"))
            elif stopped[n]:
                out.append(EngineResult([], [], {}, interrupted=True))
            else:
                images = [Image.new("RGB", (8, 8), (0, 255, 0)) for _ in range(p.image_count)]
                texts = [f"{p.prompt}\nSteps: {p.steps}, Seed: {p.seed}"] * len(images)
                info = {"seed": p.seed, "batch": {"size": len(items)}}
                out.append(EngineResult(images, texts, info))
        return out


@pytest.fixture
def batching(svc: Services) -> Services:
    svc.settings.max_batch = 4
    svc.settings.progress_interval_s = 0  # check the cancel flag at every step
    return svc


def queued(svc: Services, model: str | None = None, priority: int = 0, **params: Any) -> str:
    """A txt2img task submitted and offered to control, which cannot dispatch it: the one slot
    of its checkpoint is taken (SD_MAX_PER_MODEL 1). Returns its id."""
    fields = {"kind": TaskKind.TXT2IMG, "prompt": "p", **SMALL, **params}
    task = submit_task(svc, GenerationParams(**fields), model, [], priority=priority)
    dispatch_task(svc, task.task_id)
    return task.task_id


def leader(svc: Services, **params: Any) -> tuple[str, Lease]:
    return dispatched(svc, **{**SMALL, "prompt": "lead", **params})


def test_compatible_queued_tasks_run_in_one_call_and_each_records_its_batch(
    batching: Services,
) -> None:
    # Given a dispatched task and three queued ones that differ only in prompt and seed
    lead_id, lease = leader(batching, seed=1)
    riders = [queued(batching, prompt=f"rider {n}", seed=10 + n) for n in range(3)]
    engine = LockstepEngine()

    status = run_task(batching, engine, lead_id, lease)

    # Then one pipeline call ran the four, and each ended as if it ran alone
    assert status is TaskStatus.SUCCEEDED
    assert engine.batches == [["lead", "rider 0", "rider 1", "rider 2"]]
    record = {"size": 4, "id": lead_id, "tasks": [lead_id, *riders]}
    for task_id, prompt, seed in zip([lead_id, *riders], ["lead", "rider 0", "rider 1", "rider 2"],
                                     [1, 10, 11, 12], strict=True):  # fmt: skip
        task = batching.tasks.get(task_id)
        assert task.status is TaskStatus.SUCCEEDED
        assert task.info["batch"] == record
        assert task.info["seed"] == seed
        assert task.images == [f"outputs/anonymous/{task_id}/0.png"]
        assert read_parameters(batching.blobs.get(task.images[0])) == (
            f"{prompt}\nSteps: 3, Seed: {seed}"
        )
        assert task.progress == 1.0 and task.sampling_step == 3
    # a rider holds no lease: only the leader's is the batch's slot
    assert all(batching.tasks.get(t).lease is None for t in riders)
    assert batching.slots.active(batching.clock.now()) == []
    # measured per task, as four lone tasks would be
    samples = scraped(batching)
    demo = {"model": "demo", "fleet": "local"}
    assert value(samples, "sd_tasks_started_total", **demo) == 4
    assert value(samples, "sd_queue_wait_seconds_count", **demo) == 4
    assert value(samples, "sd_tasks_succeeded_total", **demo) == 4


def test_only_compatible_tasks_of_the_same_checkpoint_ride(batching: Services) -> None:
    lead_id, lease = leader(batching)
    fits = queued(batching, prompt="different prompt", seed=99, negative_prompt="blur")
    misfits = [
        queued(batching, steps=4),  # other steps
        queued(batching, guidance=3.0),  # other CFG
        queued(batching, sampler="DDIM"),  # other sampler
        queued(batching, scheduler="Karras"),  # other schedule
        queued(batching, clip_skip=2),  # other clip skip
        queued(batching, width=128),  # other size
        queued(batching, model="other"),  # other checkpoint
        queued(batching, batches=2),  # several n_iter jobs: always alone
    ]
    engine = LockstepEngine()

    run_task(batching, engine, lead_id, lease)

    assert engine.batches == [["lead", "different prompt"]]
    assert batching.tasks.get(fits).status is TaskStatus.SUCCEEDED
    assert all(batching.tasks.get(m).status is TaskStatus.QUEUED for m in misfits)


def test_max_batch_counts_images_and_high_priority_rides_first(batching: Services) -> None:
    batching.settings.max_batch = 4
    lead_id, lease = leader(batching)  # 1 image
    oldest = queued(batching, prompt="oldest")  # 1 image
    too_big = queued(batching, prompt="three", batch_size=3)  # would make 5
    high = queued(batching, prompt="high", priority=1)  # newer, but high priority
    pair = queued(batching, prompt="pair", batch_size=2)  # 1 + 1 + 1 + 2 > 4
    last = queued(batching, prompt="last")
    engine = LockstepEngine()

    run_task(batching, engine, lead_id, lease)

    assert engine.batches == [["lead", "high", "oldest", "last"]]
    for task_id in (too_big, pair):
        assert batching.tasks.get(task_id).status is TaskStatus.QUEUED
    assert batching.tasks.get(high).info["batch"]["tasks"] == [lead_id, high, oldest, last]


def test_a_batch_stays_within_the_work_budget_of_one_task(batching: Services) -> None:
    batching.settings.max_task_work = 64 * 64 * 3 * 2  # two small tasks' worth
    lead_id, lease = leader(batching)
    first, second = queued(batching, prompt="first"), queued(batching, prompt="second")
    engine = LockstepEngine()

    run_task(batching, engine, lead_id, lease)

    assert engine.batches == [["lead", "first"]]
    assert batching.tasks.get(second).status is TaskStatus.QUEUED
    assert batching.tasks.get(first).status is TaskStatus.SUCCEEDED


def test_one_slot_is_held_for_the_whole_batch_and_released_once(batching: Services) -> None:
    lead_id, lease = leader(batching)
    riders = [queued(batching, prompt=f"r{n}") for n in range(2)]
    released: list[str] = []
    real_release = batching.slots.release

    def release(held: Lease) -> None:
        released.append(held.task_id)
        real_release(held)

    batching.slots.release = release  # type: ignore[method-assign]
    seen: list[tuple[list[str], list[str | None]]] = []
    engine = LockstepEngine()
    engine.on_step_hook = lambda step: seen.append(
        (
            [held.task_id for held in batching.slots.active(batching.clock.now())],
            [batching.tasks.get(t).status.value for t in [lead_id, *riders]],
        )
    )

    run_task(batching, engine, lead_id, lease)

    # while the batch ran: one lease (the leader's), every task of it running
    assert seen and all(held == [lead_id] for held, _ in seen)
    assert all(states == ["running"] * 3 for _, states in seen)
    assert released == [lead_id]
    assert batching.slots.active(batching.clock.now()) == []


def test_a_rider_cancelled_mid_run_is_cancelled_and_the_others_succeed(
    batching: Services,
) -> None:
    lead_id, lease = leader(batching, steps=8)
    stays, leaves = queued(batching, prompt="stays", steps=8), queued(batching, steps=8)
    engine = LockstepEngine()
    engine.on_step_hook = lambda step: step == 3 and request_cancel(batching, leaves)

    status = run_task(batching, engine, lead_id, lease)

    assert status is TaskStatus.SUCCEEDED
    cancelled = batching.tasks.get(leaves)
    assert cancelled.status is TaskStatus.CANCELLED and cancelled.images == []
    assert cancelled.info["batch"]["id"] == lead_id  # its record says where it ran
    assert cancelled.sampling_step < 8
    for task_id in (lead_id, stays):
        task = batching.tasks.get(task_id)
        assert task.status is TaskStatus.SUCCEEDED and len(task.images) == 1
    assert batching.slots.active(batching.clock.now()) == []


def test_a_rider_the_engine_refuses_fails_alone(batching: Services) -> None:
    lead_id, lease = leader(batching)
    bad, good = queued(batching, prompt="bad"), queued(batching, prompt="good")

    run_task(batching, LockstepEngine(fail_prompt="bad"), lead_id, lease)

    failed = batching.tasks.get(bad)
    assert failed.status is TaskStatus.FAILED and "cannot draw 'bad'" in (failed.error or "")
    assert failed.info["batch"]["tasks"] == [lead_id, bad, good]
    assert batching.tasks.get(good).status is TaskStatus.SUCCEEDED
    assert batching.tasks.get(lead_id).status is TaskStatus.SUCCEEDED


def test_a_failed_call_fails_every_task_of_it_and_frees_the_slot(batching: Services) -> None:
    lead_id, lease = leader(batching)
    rider = queued(batching, prompt="r")

    status = run_task(batching, ScriptedEngine(fail=RuntimeError("out of memory")), lead_id, lease)

    assert status is TaskStatus.FAILED
    for task_id in (lead_id, rider):
        assert batching.tasks.get(task_id).error == "RuntimeError: out of memory"
    assert batching.slots.active(batching.clock.now()) == []


def test_a_dispatched_or_cancel_requested_task_is_never_claimed(batching: Services) -> None:
    # Given room for two tasks of the checkpoint: control dispatches a second one too
    batching.settings.max_per_model = 2
    lead_id, lease = leader(batching)
    other_id, other_lease = dispatched(batching, **SMALL, prompt="dispatched")
    unwanted = queued(batching, prompt="unwanted")
    batching.tasks.request_cancel(unwanted)  # asked to cancel; control ends it when it comes
    engine = LockstepEngine()

    run_task(batching, engine, lead_id, lease)

    assert engine.batches == []  # nothing to take along: the lone path, one engine.run
    other = batching.tasks.get(other_id)
    assert other.status is TaskStatus.QUEUED and other.lease == other_lease
    assert batching.tasks.get(unwanted).status is TaskStatus.QUEUED
    # the dispatched task still runs on its own, under its own lease
    assert run_task(batching, engine, other_id, other_lease) is TaskStatus.SUCCEEDED


def test_control_drops_a_claimed_riders_message_and_no_slot_leaks(batching: Services) -> None:
    lead_id, lease = leader(batching)
    rider = queued(batching, prompt="r")
    invocations = len(batching.fleet.invocations)  # type: ignore[attr-defined]

    run_task(batching, LockstepEngine(), lead_id, lease)

    # the rider's control message is still in the queue: it is dropped, nothing dispatched
    assert dispatch_task(batching, rider) is Outcome.ENDED
    assert len(batching.fleet.invocations) == invocations  # type: ignore[attr-defined]
    assert batching.slots.active(batching.clock.now()) == []


def test_max_batch_1_runs_the_task_alone(svc: Services) -> None:
    assert svc.settings.max_batch == 1  # the default
    lead_id, lease = leader(svc)
    waiting = queued(svc, prompt="waiting")
    engine = LockstepEngine()

    assert run_task(svc, engine, lead_id, lease) is TaskStatus.SUCCEEDED

    assert engine.batches == []  # engine.run, as before batching
    assert "batch" not in svc.tasks.get(lead_id).info
    assert svc.tasks.get(waiting).status is TaskStatus.QUEUED


def test_a_task_that_always_runs_alone_takes_no_riders(batching: Services) -> None:
    lead_id, lease = leader(batching, batches=2)  # two n_iter jobs: batch_key None
    waiting = queued(batching, prompt="waiting", batches=2)
    engine = LockstepEngine()

    run_task(batching, engine, lead_id, lease)

    assert engine.batches == []
    assert batching.tasks.get(waiting).status is TaskStatus.QUEUED


def test_the_scan_for_riders_is_bounded(batching: Services) -> None:
    assert RIDER_SCAN == 200
    calls: list[int] = []
    real = batching.tasks.list_by_status

    def listed(status: TaskStatus, limit: int = 100) -> list[Task]:
        calls.append(limit)
        return real(status, limit)

    batching.tasks.list_by_status = listed  # type: ignore[method-assign]
    lead_id, lease = leader(batching)
    queued(batching, prompt="r")

    run_task(batching, LockstepEngine(), lead_id, lease)

    assert calls == [RIDER_SCAN]


def test_an_engine_that_answers_too_few_fails_the_batch_not_the_worker(
    batching: Services,
) -> None:
    class Short(LockstepEngine):
        def run_batch(self, items: Sequence[BatchItem]) -> list[EngineResult | DomainError]:
            return super().run_batch(items)[:-1]

    lead_id, lease = leader(batching)
    rider = queued(batching, prompt="r")

    assert run_task(batching, Short(), lead_id, lease) is TaskStatus.FAILED

    for task_id in (lead_id, rider):
        task = batching.tasks.get(task_id)
        assert task.error == "RuntimeError: the engine answered 1 of 2 tasks"
    assert batching.slots.active(batching.clock.now()) == []
