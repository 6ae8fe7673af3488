"""Control on a fleet that takes minutes to wake (a SageMaker endpoint at zero instances): a
dispatched task keeps its place (its lease renewed) for the fleet's start bound, the per-model
cap comes from the fleet, and the endpoint's SNS reports end tasks that never ran."""

from __future__ import annotations

import pytest

from sdcore.domain.models import GenerationParams, TaskKind, TaskStatus
from sdcore.errors import InvalidInputError
from sdcore.services import Services
from sdcore.usecases.control import Outcome, dispatch_task, end_endpoint_invocation, reap_lost
from sdcore.usecases.inference import run_task
from sdcore.usecases.submit import submit_task
from tests.unit.usecases.conftest import ScriptedEngine, dispatched
from tests.unit.usecases.test_stranded_tasks import Later


def test_a_dispatched_task_keeps_its_slots_while_the_fleet_wakes(svc: Services) -> None:
    svc.settings.start_timeout_s = 30
    svc.settings.lease_s = 120
    svc.fleet.start_bound_s = 1800  # type: ignore[attr-defined]  # the endpoint's bound
    task_id, lease = dispatched(svc)
    later = Later(svc)
    for minutes in range(1, 20):  # the reaper's schedule, every minute, for 19 minutes
        later.offset = 60 * minutes
        assert reap_lost(svc) == []
    # the 120 s lease would have expired long ago: renewed, the slots are still the task's
    [held] = svc.slots.active(svc.clock.now())
    assert held.task_id == task_id and held.expires_at > svc.clock.now()
    # the worker starts it at last, with the lease it was given
    assert run_task(svc, ScriptedEngine(), task_id, lease) is TaskStatus.SUCCEEDED
    assert svc.slots.active(svc.clock.now()) == []


def test_past_the_fleets_bound_the_task_fails(svc: Services) -> None:
    svc.fleet.start_bound_s = 600  # type: ignore[attr-defined]
    task_id, _ = dispatched(svc)
    later = Later(svc)
    later.offset = 599
    assert reap_lost(svc) == []
    later.offset = 601
    assert reap_lost(svc) == [task_id]
    task = svc.tasks.get(task_id)
    assert task.error == "the inference function did not start the task within 600 s"
    assert svc.slots.active(svc.clock.now()) == []


def test_the_per_model_cap_is_the_fleets_capacity(svc: Services) -> None:
    svc.settings.max_concurrency = 10
    svc.settings.max_per_model = 1
    svc.fleet.capacity_of = 3  # type: ignore[attr-defined]  # 3 instances x 1 invocation
    fields = {"kind": TaskKind.TXT2IMG, "steps": 3}
    ids = [submit_task(svc, GenerationParams(prompt=str(i), **fields), None, []).task_id
           for i in range(4)]  # fmt: skip
    outcomes = [dispatch_task(svc, task_id) for task_id in ids]
    assert outcomes.count(Outcome.DISPATCHED) == 3 and outcomes[3] is Outcome.WAITING


def test_a_failed_endpoint_invocation_ends_its_task_and_frees_its_slots(svc: Services) -> None:
    task_id, _ = dispatched(svc)
    report = {"inferenceId": task_id, "invocationStatus": "Failed",
              "failureReason": "ClientError: Received server error (500) from model"}  # fmt: skip
    assert end_endpoint_invocation(svc, report) == "failed"
    task = svc.tasks.get(task_id)
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "the inference endpoint failed: ClientError: Received server error (500) from model"
    )
    assert svc.slots.active(svc.clock.now()) == []
    assert end_endpoint_invocation(svc, report) == "ended"  # SNS delivers at least once


def test_a_completed_invocation_of_a_task_that_ended_changes_nothing(svc: Services) -> None:
    task_id, lease = dispatched(svc)
    run_task(svc, ScriptedEngine(), task_id, lease)
    report = {"inferenceId": task_id, "invocationStatus": "Completed"}
    assert end_endpoint_invocation(svc, report) == "ended"
    assert svc.tasks.get(task_id).status is TaskStatus.SUCCEEDED


def test_a_completed_invocation_that_never_started_its_task_fails_it(svc: Services) -> None:
    task_id, _ = dispatched(svc)
    report = {"inferenceId": task_id, "invocationStatus": "Completed"}
    assert end_endpoint_invocation(svc, report) == "failed"
    task = svc.tasks.get(task_id)
    assert task.error == "the inference endpoint answered without starting the task"


def test_a_report_without_a_task_is_dropped(svc: Services) -> None:
    assert end_endpoint_invocation(svc, {"invocationStatus": "Failed"}) == "dropped"
    assert end_endpoint_invocation(
        svc, {"inferenceId": "nope", "invocationStatus": "Completed"}
    ) == ("dropped")


def test_a_gpu_endpoints_larger_work_budget_applies_to_its_model(svc: Services) -> None:
    svc.settings.max_task_work = 512 * 512 * 20  # one 512x512 image on a CPU function
    big = GenerationParams(kind=TaskKind.TXT2IMG, prompt="p", width=512, height=512, steps=20,
                           batch_size=4)  # fmt: skip
    with pytest.raises(InvalidInputError, match="the limit is 5,242,880"):
        submit_task(svc, big, None, [])
    svc.fleet.work_budget = 512 * 512 * 20 * 100  # type: ignore[attr-defined]  # on SageMaker
    assert submit_task(svc, big, None, []).status is TaskStatus.QUEUED
    huge = big.model_copy(update={"batch_size": 8, "batches": 16})
    with pytest.raises(InvalidInputError, match="the limit is 524,288,000"):
        submit_task(svc, huge, None, [])
