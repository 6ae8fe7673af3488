"""The inference use case's step callback: eta from step times, live previews every N steps
(SD_PREVIEW_EVERY), and webui skip requests reaching the engine as StepAction.SKIP once."""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from sdcore.domain.models import GenerationParams, TaskStatus
from sdcore.ports import (
    Engine,
    EngineInputs,
    EngineResult,
    StepAction,
    StepCallback,
    StepInfo,
)
from sdcore.services import Services
from sdcore.usecases.inference import run_task
from sdcore.usecases.tasks import request_skip
from tests.unit.usecases.conftest import dispatched


class RecordingEngine(Engine):
    """Runs `steps` steps per job, offering a preview; records the answers and what the task
    looked like in the store after each step."""

    def __init__(self, svc: Services, task_id: str, hook: Any = None) -> None:
        self.svc, self.task_id, self.hook = svc, task_id, hook
        self.answers: list[tuple[int, int, Any]] = []
        self.previews = 0
        self.stored: list[dict[str, Any]] = []

    def load(self) -> None:
        pass

    def _preview(self) -> Image.Image:
        self.previews += 1
        return Image.new("RGB", (256, 128), (10, 20, 30))  # a 2048 x 1024 task's latents

    def run(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback
    ) -> EngineResult:
        for job in range(params.batches):
            for step in range(1, params.steps + 1):
                if self.hook:
                    self.hook(job, step)
                info = StepInfo(step, params.steps, job, params.batches, 0.1, 0.05, self._preview)
                answer = on_step(info)
                self.answers.append((job, step, answer))
                task = self.svc.tasks.get(self.task_id)
                self.stored.append({"eta": task.eta_s, "image": task.current_image})
                if answer == StepAction.SKIP:
                    break
        images = [Image.new("RGB", (8, 8)) for _ in range(params.image_count)]
        return EngineResult(images, ["t"] * len(images), {})


def test_previews_every_n_steps_and_eta_from_step_times(svc: Services) -> None:
    svc.settings.progress_interval_s = 0  # write progress at every step
    svc.settings.preview_every = 3
    task_id, lease = dispatched(svc, steps=7, batches=1)
    engine = RecordingEngine(svc, task_id)
    assert run_task(svc, engine, task_id, lease) is TaskStatus.SUCCEEDED
    assert engine.previews == 2  # steps 3 and 6
    images = [s["image"] for s in engine.stored]
    assert [i is not None for i in images] == [False, False, True, True, True, True, True]
    png = base64.b64decode(images[2])
    preview = Image.open(io.BytesIO(png))
    assert preview.getpixel((0, 0)) == (10, 20, 30)
    assert preview.size == (128, 64)  # capped at 128 px a side
    # 7 steps at 0.05 s: after step 1, 6 left
    assert engine.stored[0]["eta"] == 0.3
    done = svc.tasks.get(task_id)
    assert done.current_image is None and done.eta_s == 0.0  # cleared at the end


def test_no_previews_when_off(svc: Services) -> None:
    svc.settings.progress_interval_s = 0
    task_id, lease = dispatched(svc, steps=4, batches=1)
    engine = RecordingEngine(svc, task_id)
    run_task(svc, engine, task_id, lease)
    assert engine.previews == 0 and all(s["image"] is None for s in engine.stored)


def test_a_skip_request_skips_the_job_running_then_only(svc: Services) -> None:
    svc.settings.progress_interval_s = 0
    task_id, lease = dispatched(svc, steps=4, batches=3)

    def hook(job: int, step: int) -> None:
        if (job, step) == (1, 2):
            request_skip(svc, task_id)

    engine = RecordingEngine(svc, task_id, hook)
    assert run_task(svc, engine, task_id, lease) is TaskStatus.SUCCEEDED
    skips = [(job, step) for job, step, a in engine.answers if a == StepAction.SKIP]
    assert skips == [(1, 2)]
    assert [(j, s) for j, s, _ in engine.answers if j == 2] == [(2, i) for i in range(1, 5)]
    assert svc.tasks.get(task_id).status is TaskStatus.SUCCEEDED
