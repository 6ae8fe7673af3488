"""Waiting tasks are parked, not re-queued: a task over a cap leaves the queue, a freed slot wakes
the first waiter of its kind, a park racing a release strands nothing, and the schedule hands
out slots no wake reached."""

from __future__ import annotations

from typing import Any

import pytest

from sdcore.adapters.local.parked import SqliteParkedTasks
from sdcore.domain.models import GenerationParams, Lease, ModelChanges, ModelStatus, TaskKind
from sdcore.domain.models import TaskStatus as S
from sdcore.services import Services
from sdcore.usecases.control import Outcome, dispatch_task, reap_lost, slot_freed, unpark_model
from sdcore.usecases.inference import run_task
from sdcore.usecases.submit import submit_task
from sdcore.usecases.tasks import request_cancel
from tests.unit.usecases.conftest import ScriptedEngine

TXT = GenerationParams(kind=TaskKind.TXT2IMG, prompt="p", steps=3)


@pytest.fixture
def psvc(svc: Services) -> Services:
    """The use cases' services with the parked store the composition root gives them (caps: 2
    global, 1 per checkpoint)."""
    svc.parked = SqliteParkedTasks(svc.tasks.db)  # type: ignore[attr-defined]
    return svc


def deliver(svc: Services) -> dict[str, Outcome]:
    """Control consumes the queue as its event source does: each message dispatched, then
    deleted (none fails here)."""
    outcomes = {}
    for message in svc.queue.receive(10, visibility_s=30):
        body = message.body
        outcomes[body["taskId"]] = dispatch_task(svc, body["taskId"], int(body.get("waits", 0)))
        svc.queue.delete(message.receipt)
    return outcomes


def submit(svc: Services, model: str = "demo", priority: int = 0) -> str:
    return submit_task(svc, TXT, model, [], priority=priority).task_id


def lease_of(svc: Services, task_id: str) -> Lease:
    invocations = svc.fleet.invocations  # type: ignore[attr-defined]
    [lease] = [p["lease"] for _, p in invocations if p["taskId"] == task_id]
    return Lease.model_validate(lease)


def release(svc: Services, task_id: str) -> None:
    """What a worker does when its task ends: the slots back, then the wake."""
    lease = lease_of(svc, task_id)
    svc.slots.release(lease)
    slot_freed(svc, lease.model)


def test_a_task_over_the_cap_is_parked_and_leaves_the_queue(psvc: Services) -> None:
    first, second = submit(psvc), submit(psvc)

    assert deliver(psvc) == {first: Outcome.DISPATCHED, second: Outcome.PARKED}

    assert psvc.queue.receive(10) == []  # no message re-queued: nothing polls while it waits
    assert psvc.parked is not None and psvc.parked.count() == 1
    assert psvc.tasks.get(second).status is S.QUEUED
    assert psvc.fleet.ensured.count("demo") == 2  # type: ignore[attr-defined]


def test_a_release_wakes_exactly_the_oldest_waiter_which_then_runs(psvc: Services) -> None:
    running = submit(psvc)
    waiting = [submit(psvc) for _ in range(3)]
    deliver(psvc)
    # When the running task ends and its worker frees the slot
    release(psvc, running)
    # Then one message is back: the oldest waiter's, and it is dispatched and runs
    assert deliver(psvc) == {waiting[0]: Outcome.DISPATCHED}
    assert run_task(psvc, ScriptedEngine(), waiting[0], lease_of(psvc, waiting[0])) is S.SUCCEEDED
    # and its worker's release wakes the next one, the others stay parked
    assert psvc.parked is not None and psvc.parked.count() == 1
    assert deliver(psvc) == {waiting[1]: Outcome.DISPATCHED}


def test_a_high_priority_waiter_is_woken_first(psvc: Services) -> None:
    running = submit(psvc)
    normal = submit(psvc)
    deliver(psvc)  # the normal task parks before any high one is queued
    high = submit(psvc, priority=1)
    assert deliver(psvc) == {high: Outcome.PARKED}

    release(psvc, running)

    assert deliver(psvc) == {high: Outcome.DISPATCHED}
    assert psvc.tasks.get(normal).status is S.QUEUED


def test_a_slot_freed_with_no_waiter_of_its_kind_goes_to_a_global_cap_waiter(
    psvc: Services,
) -> None:
    psvc.settings.max_concurrency = 1
    running, other = submit(psvc, "demo"), submit(psvc, "other")
    assert deliver(psvc) == {running: Outcome.DISPATCHED, other: Outcome.PARKED}

    release(psvc, running)

    assert deliver(psvc) == {other: Outcome.DISPATCHED}


def test_a_park_racing_a_release_does_not_strand_the_task(psvc: Services) -> None:
    running = submit(psvc)
    deliver(psvc)
    waiting = submit(psvc)
    parked = psvc.parked
    assert parked is not None
    park = parked.park

    def released_meanwhile(*args: Any) -> bool:
        # the slot comes back after this task's acquire failed and before it is parked: the
        # release's wake finds no one parked
        release(psvc, running)
        assert psvc.queue.receive(10, visibility_s=0) == []
        return park(*args)

    parked.park = released_meanwhile  # type: ignore[method-assign]
    assert deliver(psvc) == {waiting: Outcome.PARKED}
    parked.park = park  # type: ignore[method-assign]
    # Then its look after parking found the free slot and woke it
    assert deliver(psvc) == {waiting: Outcome.DISPATCHED}
    assert parked.count() == 0


def test_the_schedule_hands_a_slot_no_wake_reached_to_a_parked_task(psvc: Services) -> None:
    running, waiting = submit(psvc), submit(psvc)
    deliver(psvc)
    # a worker that died between giving its slots back and waking anyone
    psvc.slots.release(lease_of(psvc, running))
    assert psvc.queue.receive(10) == []

    assert reap_lost(psvc) == []

    assert deliver(psvc) == {waiting: Outcome.DISPATCHED}


def test_the_schedule_hands_out_no_more_than_the_free_slots(psvc: Services) -> None:
    psvc.settings.max_concurrency = 0  # dispatch paused: everything parks
    ids = [submit(psvc, m) for m in ("demo", "demo", "other", "other")]
    assert set(deliver(psvc).values()) == {Outcome.PARKED}
    psvc.settings.max_concurrency = 2

    reap_lost(psvc)

    # one per checkpoint (its cap is 1), the oldest of each
    assert deliver(psvc) == {ids[0]: Outcome.DISPATCHED, ids[2]: Outcome.DISPATCHED}
    assert psvc.parked is not None and psvc.parked.count() == 2


def test_a_woken_task_that_ended_meanwhile_passes_the_wake_on(psvc: Services) -> None:
    running, first, second = submit(psvc), submit(psvc), submit(psvc)
    deliver(psvc)
    release(psvc, running)  # wakes `first`...
    request_cancel(psvc, first)  # ...which is cancelled before control sees its message

    assert deliver(psvc) == {first: Outcome.ENDED}
    assert deliver(psvc) == {second: Outcome.DISPATCHED}


def test_parked_tasks_of_a_checkpoint_that_can_no_longer_run_end(psvc: Services) -> None:
    running, waiting = submit(psvc), submit(psvc)
    deliver(psvc)
    psvc.models.update("demo", ModelChanges(status=ModelStatus.REGISTERING, error="bad file"))

    reap_lost(psvc)  # the schedule wakes them; each fails at dispatch
    assert deliver(psvc) == {waiting: Outcome.ENDED}
    assert psvc.tasks.get(waiting).status is S.FAILED
    assert psvc.tasks.get(running).status is S.QUEUED  # dispatched: its worker ends it


def test_unpark_model_ends_every_waiter_of_a_deleted_checkpoint(psvc: Services) -> None:
    psvc.settings.max_concurrency = 0
    ids = [submit(psvc) for _ in range(3)]
    deliver(psvc)
    psvc.models.update("demo", ModelChanges(status=ModelStatus.DELETED))

    assert unpark_model(psvc, "demo") == 3
    assert deliver(psvc) == dict.fromkeys(ids, Outcome.ENDED)
    assert {psvc.tasks.get(task_id).status for task_id in ids} == {S.FAILED}


def test_deleting_a_checkpoint_ends_its_parked_tasks(psvc: Services) -> None:
    from sdcore.usecases.models import delete_model

    psvc.settings.max_concurrency = 0
    ids = [submit(psvc) for _ in range(2)]
    deliver(psvc)
    assert psvc.parked is not None and psvc.parked.count() == 2

    delete_model(psvc, "demo")

    assert psvc.parked.count() == 0
    assert deliver(psvc) == dict.fromkeys(ids, Outcome.ENDED)
    assert {psvc.tasks.get(task_id).error for task_id in ids} == {"model demo was deleted"}
