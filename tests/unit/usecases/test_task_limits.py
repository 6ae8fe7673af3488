"""What is refused at submit so that no task waits for a function that can never run it: a task
over the work budget, and a checkpoint too large for the fleet."""

from __future__ import annotations

import pytest

from sdcore.domain.models import GenerationParams, Model, ModelChanges, TaskKind, TaskStatus
from sdcore.errors import InvalidInputError
from sdcore.services import Services
from sdcore.usecases.submit import ImageInput, submit_task, task_work

TXT = TaskKind.TXT2IMG


def test_work_counts_every_image_and_the_hires_pass(svc: Services) -> None:
    model = svc.models.get("demo")
    plain = GenerationParams(kind=TXT, width=512, height=512, steps=20, batch_size=2, batches=3)
    assert task_work(plain, model) == 512 * 512 * 20 * 6
    hires = plain.model_copy(update={"hires": True, "hr_scale": 2.0, "denoising_strength": 0.5})
    assert task_work(hires, model) == (512 * 512 * 20 + 1024 * 1024 * 10) * 6
    img2img = GenerationParams(kind=TaskKind.IMG2IMG, width=64, height=64, steps=20,
                               denoising_strength=0.25)  # fmt: skip
    assert task_work(img2img, model) == 64 * 64 * 5  # int(steps x strength) steps run
    assert task_work(GenerationParams(kind=TaskKind.EXTRAS), model) == 0


def test_a_size_left_out_counts_as_the_architecture_s_native_size(svc: Services) -> None:
    svc.models.update("demo", ModelChanges(details={"architecture": "sdxl"}))
    params = GenerationParams(kind=TXT, steps=10)
    assert task_work(params, svc.models.get("demo")) == 1024 * 1024 * 10


def test_a_task_over_the_work_budget_is_refused_naming_its_fields(svc: Services) -> None:
    svc.settings.max_task_work = 512 * 512 * 20 * 4
    ok = GenerationParams(kind=TXT, width=512, height=512, steps=20, batch_size=4)
    assert submit_task(svc, ok, None, []).task_id
    over = ok.model_copy(update={"batches": 2})
    with pytest.raises(InvalidInputError) as err:
        submit_task(svc, over, None, [])
    assert err.value.field == "steps"
    assert set(err.value.also) == {"width", "height", "batch_size", "n_iter"}
    assert "41,943,040" in err.value.message and "20,971,520" in err.value.message
    svc.settings.max_task_work = 0  # no limit
    assert submit_task(svc, over, None, []).task_id


def test_a_checkpoint_the_fleet_cannot_hold_is_refused_at_submit(
    svc: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuses(model: Model) -> str | None:
        return "too large" if model.name == "other" else None

    monkeypatch.setattr(svc.fleet, "refuses", refuses, raising=False)
    assert submit_task(svc, GenerationParams(kind=TXT), "demo", []).task_id
    with pytest.raises(InvalidInputError) as err:
        submit_task(svc, GenerationParams(kind=TXT), "other", [])
    assert err.value.field == "stable_diffusion_model" and "too large" in err.value.message
    assert len(svc.tasks.list_by_status(TaskStatus.QUEUED)) == 1


def test_a_task_over_the_time_limit_stops_and_fails_with_its_slots_freed(svc: Services) -> None:
    from sdcore.domain.models import Lease, TaskStatus
    from sdcore.usecases.inference import run_task
    from tests.unit.usecases.conftest import ScriptedEngine, dispatched

    svc.settings.task_time_limit_s = 5
    task_id, lease = dispatched(svc, steps=20)
    ticks = iter(range(1_000_000))
    base = svc.clock.now()
    svc.clock.now = lambda: base + 2 * next(ticks)  # type: ignore[method-assign]  # 2 s a call
    engine = ScriptedEngine()

    assert run_task(svc, engine, task_id, Lease.model_validate(lease)) is TaskStatus.FAILED

    task = svc.tasks.get(task_id)
    assert task.error == "time limit: ran longer than 5 s (SD_TASK_TIME_LIMIT)"
    assert engine.steps_run < 20  # stopped between steps, not run to the end
    assert svc.slots.active(svc.clock.now()) == []


def test_the_work_budget_is_per_role(svc: Services) -> None:
    svc.settings.max_task_work = 512 * 512 * 20
    svc.settings.admin_task_work_factor = 4
    four = GenerationParams(kind=TXT, width=512, height=512, steps=20, batch_size=4)
    with pytest.raises(InvalidInputError, match="the limit is 5,242,880"):
        submit_task(svc, four, None, [], owner="alice")
    assert submit_task(svc, four, None, [], owner="root", is_admin=True).task_id
    five = four.model_copy(update={"batch_size": 5})
    with pytest.raises(InvalidInputError, match="the limit is 20,971,520"):
        submit_task(svc, five, None, [], owner="root", is_admin=True)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"hires": True, "hr_scale": 8.0}, "hr_scale"),
        ({"hires": True, "hr_resize_x": 4096}, "hr_resize_x"),
        ({"hires": True, "hr_upscaler": "Bicubic"}, "hr_upscaler"),
        ({"hires": True, "hr_sampler": "Euler x"}, "hr_sampler_name"),
        ({"hires": True, "denoising_strength": 0.1, "steps": 3}, "denoising_strength"),
        ({"width": 100}, "width"),
        ({"sampler": "Nope"}, "sampler_name"),
        ({"seed": 2**32 - 1, "batch_size": 2}, "seed"),
        ({"seed_resize_from_w": 4, "seed_resize_from_h": 64}, "seed_resize_from_w"),
        ({"kind": TaskKind.IMG2IMG, "denoising_strength": 0.1, "steps": 5}, "denoising_strength"),
        ({"kind": TaskKind.IMG2IMG, "resize_mode": 7}, "resize_mode"),
    ],
)
def test_what_the_engine_would_refuse_is_refused_at_submit(
    svc: Services, fields: dict[str, object], field: str
) -> None:
    """A 422 naming the field before the task is queued, not a failure after it waited."""
    params = GenerationParams(**{"kind": TXT, "width": 64, "height": 64, "steps": 4, **fields})
    with pytest.raises(InvalidInputError) as err:
        submit_task(svc, params, None, [ImageInput(field="init_images", data=_png())])
    assert err.value.field == field
    assert svc.tasks.list_by_status(TaskStatus.QUEUED) == []


def test_a_hires_pass_with_denoising_strength_0_is_accepted(svc: Services) -> None:
    params = GenerationParams(kind=TXT, width=64, height=64, hires=True, denoising_strength=0.0)
    assert submit_task(svc, params, None, []).status is TaskStatus.QUEUED


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 64)).save(out, "PNG")
    return out.getvalue()
