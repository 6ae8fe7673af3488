from __future__ import annotations

import hashlib

from sdcore.domain.models import GenerationParams, TaskKind, TaskStatus
from sdcore.services import Services
from sdcore.usecases.control import dispatch_task
from sdcore.usecases.inference import abandon_task, run_task
from sdcore.usecases.submit import submit_task
from sdcore.usecases.tasks import request_cancel
from sdcore.webui.png_info import read_parameters
from tests.unit.usecases.conftest import ScriptedEngine, dispatched


def test_run_stores_pngs_with_parameters_and_releases_the_slot(svc: Services) -> None:
    task_id, lease = dispatched(svc, batch_size=2)
    assert run_task(svc, ScriptedEngine(), task_id, lease) is TaskStatus.SUCCEEDED
    task = svc.tasks.get(task_id)
    prefix = f"outputs/anonymous/{task_id}"
    assert task.images == [f"{prefix}/0.png", f"{prefix}/1.png"]
    assert task.image_md5 == [hashlib.md5(svc.blobs.get(k)).hexdigest() for k in task.images]
    assert read_parameters(svc.blobs.get(task.images[0])) == "p\nSteps: 3"
    assert task.progress == 1.0 and task.sampling_step == 3
    assert task.started_at is not None and task.finished_at is not None
    assert task.started_at <= task.finished_at
    assert svc.slots.active(svc.clock.now()) == []


def test_a_duplicate_delivery_changes_nothing(svc: Services) -> None:
    task_id, lease = dispatched(svc)
    run_task(svc, ScriptedEngine(), task_id, lease)
    finished = svc.tasks.get(task_id)
    engine = ScriptedEngine()
    assert run_task(svc, engine, task_id, lease) is TaskStatus.SUCCEEDED
    assert engine.steps_run == 0
    assert svc.tasks.get(task_id) == finished


def test_cancel_while_running_stops_at_the_next_step(svc: Services) -> None:
    svc.settings.progress_interval_s = 0  # check the flag at every step
    task_id, lease = dispatched(svc, steps=50)
    engine = ScriptedEngine()
    engine.on_step_hook = lambda step: step == 5 and request_cancel(svc, task_id)
    assert run_task(svc, engine, task_id, lease) is TaskStatus.CANCELLED
    assert engine.steps_run <= 6
    task = svc.tasks.get(task_id)
    assert task.status is TaskStatus.CANCELLED and task.images == []
    assert svc.slots.active(svc.clock.now()) == []


def test_an_engine_error_fails_the_task_with_the_reason(svc: Services) -> None:
    task_id, lease = dispatched(svc)
    status = run_task(svc, ScriptedEngine(fail=RuntimeError("out of memory")), task_id, lease)
    assert status is TaskStatus.FAILED
    assert svc.tasks.get(task_id).error == "RuntimeError: out of memory"
    assert svc.slots.active(svc.clock.now()) == []


def test_abandon_fails_a_task_whose_model_cannot_load(svc: Services) -> None:
    task_id, lease = dispatched(svc)
    abandon_task(svc, task_id, lease, "model failed to load: bad file")
    task = svc.tasks.get(task_id)
    assert task.status is TaskStatus.FAILED and "bad file" in (task.error or "")
    assert svc.slots.active(svc.clock.now()) == []


def test_a_freed_slot_wakes_a_task_waiting_out_its_back_off(svc: Services) -> None:
    # Given a running task and a second one for the same checkpoint sleeping out a long back-off
    svc.settings.requeue_delay_s = 30
    task_id, lease = dispatched(svc)
    for message in svc.queue.receive(10, 300):  # the submits' own messages
        svc.queue.delete(message.receipt)
    params = GenerationParams(kind=TaskKind.TXT2IMG, prompt="p", steps=3)
    waiting = submit_task(svc, params, None, [])
    [message] = svc.queue.receive(10, 300)
    assert dispatch_task(svc, waiting.task_id).value == "waiting"
    svc.queue.delete(message.receipt)
    assert svc.queue.receive(10, 30) == []
    # When the running task ends and frees its slot
    run_task(svc, ScriptedEngine(), task_id, lease)
    # Then the waiting task's message is deliverable at once, not in 30 s
    [woken] = svc.queue.receive(10, 30)
    assert woken.body["taskId"] == waiting.task_id
