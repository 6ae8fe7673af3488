"""No task is left queued forever: a dispatched task its function never starts is ended by the
reaper within SD_START_TIMEOUT; a failed inference invocation (Lambda's on-failure record) and
a dead-lettered message end what they were about, with the reason; slots come back."""

from __future__ import annotations

import pytest

from sdcore.domain.models import ModelStage, ModelStatus, PendingVersion, TaskStatus
from sdcore.services import Services
from sdcore.usecases.control import end_dead_lettered, end_failed_invocation, reap_lost
from sdcore.usecases.inference import run_task
from sdcore.usecases.model_jobs import job_dead_lettered
from tests.unit.usecases.conftest import ScriptedEngine, dispatched


class Later:
    """The services' clock, moved on."""

    def __init__(self, svc: Services) -> None:
        self.base = svc.clock.now
        self.offset = 0.0
        svc.clock.now = lambda: self.base() + self.offset  # type: ignore[method-assign]


def test_dispatch_records_when_and_the_slots_it_handed_over(svc: Services) -> None:
    task_id, lease = dispatched(svc)
    task = svc.tasks.get(task_id)
    assert task.status is TaskStatus.QUEUED and task.dispatched_at is not None
    assert task.lease == lease


def test_a_task_dispatched_but_never_started_is_failed_and_its_slots_freed(
    svc: Services,
) -> None:
    svc.settings.start_timeout_s = 30
    task_id, lease = dispatched(svc)
    later = Later(svc)
    later.offset = 29  # within the bound: a cold start may take this long
    assert reap_lost(svc) == [] and svc.tasks.get(task_id).status is TaskStatus.QUEUED
    later.offset = 31  # its worker died while loading, or the invocation was lost
    assert reap_lost(svc) == [task_id]
    task = svc.tasks.get(task_id)
    assert task.status is TaskStatus.FAILED
    assert task.error == "the inference function did not start the task within 30 s"
    assert svc.slots.active(svc.clock.now()) == []
    # a late start of the ended task changes nothing, and gives back nothing twice
    assert run_task(svc, ScriptedEngine(), task_id, lease) is TaskStatus.FAILED


def test_a_started_task_is_not_ended_by_the_start_bound(svc: Services) -> None:
    svc.settings.start_timeout_s = 30
    task_id, lease = dispatched(svc)
    svc.tasks.transition(task_id, svc.tasks.get(task_id).start(svc.clock.now(), lease))
    Later(svc).offset = 31  # over the start bound, but it started: its heartbeat (60 s) rules
    assert task_id not in reap_lost(svc)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ({"errorType": "Runtime.OutOfMemory", "errorMessage": "Runtime exited with error"},
         "the inference function failed: Runtime.OutOfMemory: Runtime exited with error"),
        (None, "the inference function failed: EventAgeExceeded"),
    ],
)  # fmt: skip
def test_a_failed_invocation_ends_its_task_with_the_reason(
    svc: Services, response: dict | None, reason: str
) -> None:
    task_id, lease = dispatched(svc)
    record = {
        "version": "1.0",
        "requestContext": {"condition": "RetriesExhausted" if response else "EventAgeExceeded"},
        "requestPayload": {"taskId": task_id, "lease": lease.model_dump()},
        "responsePayload": response,
    }  # fmt: skip
    assert end_failed_invocation(svc, record) == "failed"
    task = svc.tasks.get(task_id)
    assert (task.status, task.error) == (TaskStatus.FAILED, reason)
    assert svc.slots.active(svc.clock.now()) == []
    assert end_failed_invocation(svc, record) == "ended"  # a redelivery changes nothing


def test_a_failed_invocation_of_a_running_task_ends_it_too(svc: Services) -> None:
    task_id, lease = dispatched(svc)
    svc.tasks.transition(task_id, svc.tasks.get(task_id).start(svc.clock.now(), lease))
    record = {
        "requestPayload": {"taskId": task_id},
        "requestContext": {"condition": "RetriesExhausted"},
        "responsePayload": {"errorType": "Sandbox.Timedout", "errorMessage": "900 s"},
    }
    assert end_failed_invocation(svc, record) == "failed"
    assert svc.tasks.get(task_id).error == "the inference function failed: Sandbox.Timedout: 900 s"


def test_a_dead_lettered_task_message_fails_its_task(svc: Services) -> None:
    task_id, _ = dispatched(svc)
    assert end_dead_lettered(svc, {"taskId": task_id}, receives=5) == "failed"
    task = svc.tasks.get(task_id)
    assert task.status is TaskStatus.FAILED
    assert task.error == "control could not hand the task to a function (5 tries failed)"
    assert end_dead_lettered(svc, {"webhook": task_id, "attempt": 3}, 5) == "dropped"
    assert end_dead_lettered(svc, {"taskId": "no-such-task"}, 5) == "dropped"


def test_a_dead_lettered_model_job_refuses_its_version(svc: Services) -> None:
    now = svc.clock.now()
    pending = PendingVersion(stage=ModelStage.VERIFYING, key="models/checkpoint/new/k",
                             sha256="b" * 64, size=1, started_at=now, updated_at=now)  # fmt: skip
    from sdcore.domain.models import Model

    svc.models.create(Model(name="new", sha256="b" * 64, size=1, key=pending.key,
                            pending=pending, registered_at=now, modified_at=now))  # fmt: skip
    body = {"job": "verify", "name": "new", "key": pending.key}
    assert job_dead_lettered(svc, body, receives=3) == "failed"
    model = svc.models.get("new")
    assert (
        model.status is ModelStatus.REGISTERING and model.error == "the verify job failed 3 times"
    )
    assert job_dead_lettered(svc, body, receives=3) == "stale"  # already refused
