from __future__ import annotations

import pytest

from sdcore.domain.models import (
    GenerationParams,
    ImageInput,
    ModelChanges,
    ModelStatus,
    TaskKind,
    TaskStatus,
    TaskTransition,
)
from sdcore.errors import ConflictError, InvalidInputError, NotFoundError
from sdcore.services import Services
from sdcore.usecases.control import Outcome, dispatch_task, reap_lost
from sdcore.usecases.submit import submit_task
from sdcore.usecases.tasks import request_cancel
from tests.unit.usecases.conftest import png

TXT = GenerationParams(kind=TaskKind.TXT2IMG, prompt="p", steps=3)


def _drain(svc: Services) -> list[str]:
    outcomes = []
    for message in svc.queue.receive(10, visibility_s=30):
        outcomes.append(dispatch_task(svc, message.body["taskId"]).value)
        svc.queue.delete(message.receipt)
    return outcomes


def test_submit_records_a_queued_task_and_queues_it(svc: Services) -> None:
    task = submit_task(svc, TXT, None, [])
    assert svc.tasks.get(task.task_id).status is TaskStatus.QUEUED
    assert task.model == "demo"
    [message] = svc.queue.receive()
    assert message.body == {"taskId": task.task_id}


def test_submit_stores_input_images_and_rejects_bad_ones(svc: Services) -> None:
    params = GenerationParams(kind=TaskKind.IMG2IMG)
    task = submit_task(svc, params, None, [ImageInput("init_images[0]", data=png())])
    assert task.params.init_images == [f"inputs/anonymous/{task.task_id}/0.png"]
    assert svc.blobs.get(task.params.init_images[0]) == png()
    with pytest.raises(InvalidInputError) as err:
        submit_task(svc, params, None, [ImageInput("init_images[0]", data=b"not an image")])
    assert err.value.field == "init_images[0]"
    with pytest.raises(InvalidInputError) as err:
        submit_task(svc, params, None, [ImageInput("image", key="models/checkpoint/demo/x")])
    assert err.value.field == "image"


def test_submit_refuses_missing_and_unready_models(svc: Services) -> None:
    with pytest.raises(NotFoundError):
        submit_task(svc, TXT, "missing", [])
    svc.models.update("other", ModelChanges(error="sha256 mismatch"))
    with pytest.raises(ConflictError, match="sha256 mismatch"):
        submit_task(svc, TXT, "other", [])
    svc.models.update("other", ModelChanges(error=None, status=ModelStatus.REGISTERING))
    with pytest.raises(ConflictError, match="registering"):
        submit_task(svc, TXT, "other", [])


def test_dispatch_holds_the_caps_and_requeues_the_rest(svc: Services) -> None:
    # Given three tasks for one checkpoint and one for another, caps 2 global / 1 per model
    ids = [submit_task(svc, TXT, "demo", []).task_id for _ in range(3)]
    other = submit_task(svc, TXT, "other", []).task_id
    # When control drains the queue
    outcomes = _drain(svc)
    # Then one per checkpoint was dispatched and the rest wait in the queue, not failed
    assert sorted(outcomes) == ["dispatched", "dispatched", "waiting", "waiting"]
    dispatched = {p["taskId"] for _, p in svc.fleet.invocations}  # type: ignore[attr-defined]
    assert other in dispatched and len(dispatched & set(ids)) == 1
    assert {svc.tasks.get(i).status for i in ids} == {TaskStatus.QUEUED}
    assert len(svc.queue.receive(10)) == 2


def test_global_cap_zero_pauses_dispatch(svc: Services) -> None:
    # Given dispatch paused (SD_MAX_CONCURRENCY=0) and two submitted tasks
    svc.settings.max_concurrency = 0
    ids = [submit_task(svc, TXT, "demo", []).task_id for _ in range(2)]
    # When control drains the queue
    outcomes = _drain(svc)
    # Then nothing runs, nothing fails: both wait, queued, their messages back in the queue
    assert outcomes == ["waiting", "waiting"]
    assert svc.fleet.invocations == []  # type: ignore[attr-defined]
    assert {svc.tasks.get(i).status for i in ids} == {TaskStatus.QUEUED}
    assert len(svc.queue.receive(10)) == 2


def test_a_task_over_the_cap_starts_its_function_once_while_it_waits(svc: Services) -> None:
    # Given the per-checkpoint cap taken by a running task of "demo"
    svc.settings.max_per_model = 1
    first = submit_task(svc, TXT, "demo", [])
    assert dispatch_task(svc, first.task_id) is Outcome.DISPATCHED
    svc.fleet.ensured.clear()  # type: ignore[attr-defined]
    # When a second "demo" task waits, first and then again
    second = submit_task(svc, TXT, "demo", [])
    assert dispatch_task(svc, second.task_id, waits=0) is Outcome.WAITING
    assert dispatch_task(svc, second.task_id, waits=1) is Outcome.WAITING
    # Then its function was started (warming up) on the first wait only, and nothing ran
    assert svc.fleet.ensured == ["demo"]  # type: ignore[attr-defined]
    assert len(svc.fleet.invocations) == 1  # type: ignore[attr-defined]


def test_dispatch_of_a_duplicate_message_does_not_take_a_second_slot(svc: Services) -> None:
    task = submit_task(svc, TXT, None, [])
    assert dispatch_task(svc, task.task_id) is Outcome.DISPATCHED
    assert dispatch_task(svc, task.task_id) is Outcome.WAITING
    assert len(svc.fleet.invocations) == 1  # type: ignore[attr-defined]


def test_cancel_of_a_queued_task_means_it_never_runs(svc: Services) -> None:
    task = submit_task(svc, TXT, None, [])
    assert request_cancel(svc, task.task_id).status is TaskStatus.CANCELLED
    assert request_cancel(svc, task.task_id).status is TaskStatus.CANCELLED
    assert _drain(svc) == ["ended"]
    assert svc.fleet.invocations == []  # type: ignore[attr-defined]


def test_dispatch_fails_the_task_when_its_model_was_deleted(svc: Services) -> None:
    task = submit_task(svc, TXT, "other", [])
    svc.models.update("other", ModelChanges(status=ModelStatus.DELETED))
    assert _drain(svc) == ["ended"]
    ended = svc.tasks.get(task.task_id)
    assert ended.status is TaskStatus.FAILED and "deleted" in (ended.error or "")


def test_function_not_yet_active_means_waiting(svc: Services) -> None:
    svc.fleet.status = "pending"  # type: ignore[attr-defined]
    task = submit_task(svc, TXT, None, [])
    assert _drain(svc) == ["waiting"]
    assert svc.slots.active(svc.clock.now()) == []
    assert svc.tasks.get(task.task_id).status is TaskStatus.QUEUED


def test_reaper_ends_a_running_task_whose_heartbeat_stopped(svc: Services) -> None:
    task = submit_task(svc, TXT, None, [])
    old = svc.clock.now() - svc.settings.heartbeat_stale_s - 5
    svc.tasks.transition(
        task.task_id,
        TaskTransition.between(
            {TaskStatus.QUEUED}, TaskStatus.RUNNING, started_at=old, heartbeat_at=old
        ),
    )
    fresh = submit_task(svc, TXT, None, [])
    now = svc.clock.now()
    svc.tasks.transition(
        fresh.task_id,
        TaskTransition.between(
            {TaskStatus.QUEUED}, TaskStatus.RUNNING, started_at=now, heartbeat_at=now
        ),
    )
    assert reap_lost(svc) == [task.task_id]
    lost = svc.tasks.get(task.task_id)
    assert lost.status is TaskStatus.FAILED and lost.error == "worker lost"
    assert svc.tasks.get(fresh.task_id).status is TaskStatus.RUNNING
