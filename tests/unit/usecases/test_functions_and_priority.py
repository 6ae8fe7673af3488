"""The reaper's retries (SD_MAX_ATTEMPTS), task priorities in control, and function admin."""

from __future__ import annotations

import pytest

from sdcore.domain.models import (
    FunctionChanges,
    FunctionRecord,
    GenerationParams,
    Lease,
    TaskKind,
    TaskStatus,
    TaskTransition,
)
from sdcore.errors import NotFoundError
from sdcore.ports import function_name
from sdcore.services import Services
from sdcore.usecases.control import Outcome, dispatch_task, reap_lost
from sdcore.usecases.functions import delete_functions, list_functions, update_functions
from sdcore.usecases.submit import submit_task
from tests.unit.usecases.conftest import RecordingFleet

TXT = GenerationParams(kind=TaskKind.TXT2IMG, prompt="p", steps=3)


def _lost_running_task(svc: Services) -> str:
    """A task dispatched (holding its slots) and started, whose heartbeat then stopped."""
    task = submit_task(svc, TXT, None, [])
    [message] = svc.queue.receive()
    svc.queue.delete(message.receipt)
    assert dispatch_task(svc, task.task_id) is Outcome.DISPATCHED
    [(_, payload)] = svc.fleet.invocations  # type: ignore[attr-defined]
    old = svc.clock.now() - svc.settings.heartbeat_stale_s - 5
    svc.tasks.transition(
        task.task_id,
        TaskTransition.between(
            {TaskStatus.QUEUED},
            TaskStatus.RUNNING,
            started_at=old,
            heartbeat_at=old,
            attempts=1,
            progress=0.5,
            lease=Lease.model_validate(payload["lease"]),
        ),
    )
    return task.task_id


def test_reaper_fails_a_lost_task_when_no_attempts_are_left(svc: Services) -> None:
    # Given SD_MAX_ATTEMPTS=1 (the default) and a task whose worker died on its first run
    task_id = _lost_running_task(svc)

    assert reap_lost(svc) == [task_id]

    lost = svc.tasks.get(task_id)
    assert (lost.status, lost.error) == (TaskStatus.FAILED, "worker lost")
    assert svc.queue.receive() == []  # not queued again
    assert svc.slots.active(svc.clock.now()) == []  # its slots came back


def test_reaper_requeues_a_lost_task_that_has_attempts_left(svc: Services) -> None:
    # Given SD_MAX_ATTEMPTS=2 and a task whose worker died on its first run
    svc.settings = svc.settings.model_copy(update={"max_attempts": 2})
    task_id = _lost_running_task(svc)

    # When the reaper runs
    assert reap_lost(svc) == [task_id]

    # Then the task is queued again, its run's fields cleared, and control gets it again
    again = svc.tasks.get(task_id)
    assert again.status is TaskStatus.QUEUED and again.error is None
    assert (again.started_at, again.heartbeat_at, again.lease, again.progress) == (
        None,
        None,
        None,
        0.0,
    )
    assert again.info["lastError"] == "worker lost (attempt 1)"
    assert svc.slots.active(svc.clock.now()) == []
    [message] = svc.queue.receive()
    assert message.body == {"taskId": task_id}
    assert dispatch_task(svc, task_id) is Outcome.DISPATCHED
    # and a second loss, with no attempts left, fails it
    svc.queue.delete(message.receipt)
    svc.tasks.transition(
        task_id,
        TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING, started_at=1.0, attempts=2),
    )
    assert reap_lost(svc) == [task_id]
    assert svc.tasks.get(task_id).status is TaskStatus.FAILED


def test_when_a_slot_frees_the_high_priority_task_goes_first(svc: Services) -> None:
    # Given both global slots taken (caps: 2 global, 1 per checkpoint)
    busy = [submit_task(svc, TXT, m, []).task_id for m in ("demo", "other")]
    for task_id in busy:
        assert dispatch_task(svc, task_id) is Outcome.DISPATCHED
    for message in svc.queue.receive(10):
        svc.queue.delete(message.receipt)
    # and a normal task, then a high one, waiting over the cap
    normal = submit_task(svc, TXT, "demo", []).task_id
    high = submit_task(svc, TXT, "other", [], priority=1).task_id
    assert dispatch_task(svc, normal) is Outcome.WAITING
    assert dispatch_task(svc, high) is Outcome.WAITING
    # When the "other" task ends and gives its slots back
    svc.slots.release(_lease(svc, busy[1]))
    # Then the normal task, even when delivered first, waits; the high one takes the slot
    assert dispatch_task(svc, normal) is Outcome.WAITING
    assert dispatch_task(svc, high) is Outcome.DISPATCHED
    assert svc.fleet.invocations[-1][1]["taskId"] == high  # type: ignore[attr-defined]
    # and once no high task waits (its worker started it), normal tasks take slots again
    svc.tasks.transition(
        high, TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING, started_at=1.0)
    )
    svc.slots.release(_lease(svc, busy[0]))
    assert dispatch_task(svc, normal) is Outcome.DISPATCHED


def _lease(svc: Services, task_id: str) -> Lease:
    invocations = svc.fleet.invocations  # type: ignore[attr-defined]
    [lease] = [p["lease"] for _, p in invocations if p["taskId"] == task_id]
    return Lease.model_validate(lease)


def test_a_high_task_queued_too_long_no_longer_holds_normal_ones_back(svc: Services) -> None:
    high = submit_task(svc, TXT, "demo", [], priority=1)
    assert svc.tasks.count_waiting_high(0) == 1
    assert svc.tasks.count_waiting_high(high.created_at) == 0
    normal = submit_task(svc, TXT, "other", []).task_id
    assert dispatch_task(svc, normal) is Outcome.WAITING
    svc.clock.now = lambda: high.created_at + 901  # type: ignore[method-assign]
    assert dispatch_task(svc, normal) is Outcome.DISPATCHED


def test_the_local_queue_delivers_high_priority_first(svc: Services) -> None:
    ids = [submit_task(svc, TXT, None, [], priority=p).task_id for p in (0, 0, 1, 0)]
    delivered = [m.body["taskId"] for m in svc.queue.receive(10)]
    assert delivered == [ids[2], ids[0], ids[1], ids[3]]
    assert svc.tasks.get(ids[2]).priority == 1


class ListingFleet(RecordingFleet):
    """The recording fleet with two functions."""

    def list(self) -> list[FunctionRecord]:
        return [
            FunctionRecord(name=function_name("sd", m), model=m, status="active", created_at=0)
            for m in ("demo", "other")
        ]


@pytest.fixture
def listing(svc: Services) -> Services:
    svc.fleet = ListingFleet()
    return svc


def test_batch_update_changes_the_named_functions_or_all(listing: Services) -> None:
    changes = FunctionChanges(memory_mb=4096, env={"HF_HOME": "/tmp/hf"})

    updated = update_functions(listing, ["other"], changes)

    assert [r.model for r in updated] == ["other"]
    assert listing.fleet.updated == [("other", changes)]  # type: ignore[attr-defined]
    update_functions(listing, None, FunctionChanges(timeout_s=60))
    assert [m for m, _ in listing.fleet.updated[1:]] == ["demo", "other"]  # type: ignore[attr-defined]


def test_batch_update_naming_a_model_without_function_changes_nothing(listing: Services) -> None:
    with pytest.raises(NotFoundError, match="missing"):
        update_functions(listing, ["demo", "missing"], FunctionChanges(memory_mb=4096))
    assert listing.fleet.updated == []  # type: ignore[attr-defined]


def test_delete_removes_the_functions_that_exist(listing: Services) -> None:
    deleted = delete_functions(listing, ["other", "missing", "other"])

    assert deleted == [function_name("sd", "other")]
    assert listing.fleet.deleted == ["other"]  # type: ignore[attr-defined]
    assert [r.model for r in list_functions(listing)] == ["demo", "other"]
