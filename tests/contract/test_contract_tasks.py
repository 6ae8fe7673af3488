"""TaskStore contract: the same state rules on SQLite and DynamoDB."""

from __future__ import annotations

import pytest

from sdcore.domain.models import (
    GenerationParams,
    Lease,
    Task,
    TaskChanges,
    TaskKind,
    TaskStatus,
    TaskTransition,
)
from sdcore.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    OverCapError,
    StaleWriteError,
)


def make_task(task_id: str = "t1", created_at: float = 1000.0, **kw: object) -> Task:
    params = GenerationParams(kind=TaskKind.TXT2IMG, prompt="a red circle", guidance=7.5)
    return Task(
        task_id=task_id,
        kind=TaskKind.TXT2IMG,
        model="demo",
        params=params,
        created_at=created_at,
        **kw,  # type: ignore[arg-type]
    )


def test_create_then_get_round_trips(ports):
    # Given a task with floats, nested params, a free-form info dict and a TTL
    task = make_task(info={"cfg_scale": 7.0, "seeds": [1, 2], "nested": {"x": 0.1}}, expires_at=99)

    ports.tasks.create(task)

    assert ports.tasks.get("t1") == task


def test_create_existing_conflicts(ports):
    ports.tasks.create(make_task())
    with pytest.raises(ConflictError):
        ports.tasks.create(make_task())


def test_get_missing_is_not_found(ports):
    with pytest.raises(NotFoundError):
        ports.tasks.get("nope")


def test_transition_sets_status_and_fields(ports):
    ports.tasks.create(make_task())

    task = ports.tasks.transition(
        "t1",
        TaskTransition.between(
            {TaskStatus.QUEUED}, TaskStatus.RUNNING, started_at=1001.5, attempts=1
        ),
    )

    assert (task.status, task.started_at, task.attempts) == (TaskStatus.RUNNING, 1001.5, 1)
    assert ports.tasks.get("t1") == task


def test_transition_from_wrong_status_is_stale(ports):
    ports.tasks.create(make_task())
    ports.tasks.transition("t1", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.CANCELLED))

    with pytest.raises(StaleWriteError):
        ports.tasks.transition(
            "t1", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING)
        )
    assert ports.tasks.get("t1").status is TaskStatus.CANCELLED


def test_transition_with_empty_from_is_stale(ports):
    ports.tasks.create(make_task())
    with pytest.raises(StaleWriteError):
        ports.tasks.transition("t1", TaskTransition.between(set(), TaskStatus.RUNNING))


def test_transition_missing_is_not_found(ports):
    with pytest.raises(NotFoundError):
        ports.tasks.transition(
            "nope", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING)
        )


def test_transition_can_clear_a_field(ports):
    ports.tasks.create(make_task(error="boom", eta_s=3.0))

    task = ports.tasks.transition(
        "t1", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.FAILED, error=None, eta_s=None)
    )

    assert task.error is None and task.eta_s is None
    assert ports.tasks.get("t1").error is None


def test_transition_writes_results(ports):
    ports.tasks.create(make_task())
    ports.tasks.transition("t1", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING))

    ports.tasks.transition(
        "t1",
        TaskTransition.between(
            {TaskStatus.RUNNING},
            TaskStatus.SUCCEEDED,
            images=["outputs/t1/0.png"],
            info={"seed": 42, "guidance": 7.0},
            progress=1.0,
            finished_at=1010.25,
        ),
    )

    got = ports.tasks.get("t1")
    assert got.images == ["outputs/t1/0.png"]
    assert got.info == {"seed": 42, "guidance": 7.0}
    assert isinstance(got.info["guidance"], float)
    assert (got.progress, got.finished_at) == (1.0, 1010.25)


def test_update_running_only_while_running(ports):
    ports.tasks.create(make_task())

    assert ports.tasks.update_running("t1", TaskChanges(progress=0.5)) is False  # queued
    ports.tasks.transition("t1", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING))
    assert (
        ports.tasks.update_running("t1", TaskChanges(progress=0.5, sampling_step=10, eta_s=1.5))
        is True
    )
    ports.tasks.transition("t1", TaskTransition.between({TaskStatus.RUNNING}, TaskStatus.SUCCEEDED))
    assert ports.tasks.update_running("t1", TaskChanges(progress=0.9)) is False  # finished

    got = ports.tasks.get("t1")
    assert (got.progress, got.sampling_step, got.eta_s) == (0.5, 10, 1.5)


def test_skip_requests_previews_and_webui_params_round_trip(ports):
    # Given a task with the webui generation fields (issue 6) set
    params = GenerationParams(
        kind=TaskKind.TXT2IMG,
        sampler="DPM++ 2M SDE",
        scheduler="Exponential",
        subseed=5,
        subseed_strength=0.25,
        seed_resize_from_w=96,
        seed_resize_from_h=64,
        clip_skip=2,
    )
    ports.tasks.create(make_task().model_copy(update={"params": params}))
    ports.tasks.transition("t1", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING))

    # When a skip is asked for and a preview written, then the preview cleared at the end
    assert (
        ports.tasks.update_running("t1", TaskChanges(skip_requests=1, current_image="aGk=")) is True
    )
    running = ports.tasks.get("t1")
    ports.tasks.transition(
        "t1", TaskTransition.between({TaskStatus.RUNNING}, TaskStatus.SUCCEEDED, current_image=None)
    )

    # Then both backends keep them exactly
    assert running.params == params
    assert (running.skip_requests, running.current_image) == (1, "aGk=")
    assert ports.tasks.get("t1").current_image is None


def test_update_running_missing_is_false(ports):
    assert ports.tasks.update_running("nope", TaskChanges(progress=0.5)) is False


def test_request_cancel_is_idempotent(ports):
    ports.tasks.create(make_task())

    first = ports.tasks.request_cancel("t1")
    second = ports.tasks.request_cancel("t1")

    assert first.cancel_requested and second.cancel_requested
    assert second.status is TaskStatus.QUEUED
    assert ports.tasks.get("t1").cancel_requested


def test_request_cancel_of_terminal_task_is_a_no_op(ports):
    ports.tasks.create(make_task())
    ports.tasks.transition("t1", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.SUCCEEDED))

    task = ports.tasks.request_cancel("t1")

    assert task.status is TaskStatus.SUCCEEDED and not task.cancel_requested
    assert not ports.tasks.get("t1").cancel_requested


def test_request_cancel_missing_is_not_found(ports):
    with pytest.raises(NotFoundError):
        ports.tasks.request_cancel("nope")


def test_list_by_status_oldest_first(ports):
    for i, created in enumerate([1003.0, 1001.0, 1002.0, 1000.5]):
        ports.tasks.create(make_task(f"t{i}", created_at=created))
    ports.tasks.transition("t3", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING))

    queued = ports.tasks.list_by_status(TaskStatus.QUEUED)
    running = ports.tasks.list_by_status(TaskStatus.RUNNING)

    assert [t.task_id for t in queued] == ["t1", "t2", "t0"]
    assert [t.task_id for t in running] == ["t3"]
    assert [t.task_id for t in ports.tasks.list_by_status(TaskStatus.QUEUED, limit=2)] == [
        "t1",
        "t2",
    ]
    assert ports.tasks.list_by_status(TaskStatus.FAILED) == []


def test_list_created_since_newest_first_within_the_bound(ports):
    for i, created in enumerate([1003.0, 1001.0, 1002.0, 999.0]):
        ports.tasks.create(make_task(f"t{i}", created_at=created))
    ports.tasks.transition("t2", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING))

    queued = ports.tasks.list_created_since(TaskStatus.QUEUED, 1000.0, limit=10)

    assert [t.task_id for t in queued] == ["t0", "t1"]  # t3 is older, t2 is running
    assert [t.task_id for t in ports.tasks.list_created_since(TaskStatus.QUEUED, 0, 2)] == [
        "t0",
        "t1",
    ]
    assert [t.task_id for t in ports.tasks.list_created_since(TaskStatus.RUNNING, 1002.0, 5)] == [
        "t2"
    ]


def test_a_record_over_dynamodbs_item_limit_is_refused_clearly(ports):
    if ports.backend == "local":
        pytest.skip("SQLite has no item size limit")
    with pytest.raises(InvalidInputError, match="400 KB"):
        ports.tasks.create(make_task(info={"blob": "x" * 400_000}))
    ports.tasks.create(make_task())
    ports.tasks.transition("t1", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING))
    with pytest.raises(InvalidInputError, match="400 KB"):
        ports.tasks.update_running("t1", TaskChanges(info={"blob": "x" * 400_000}))


# --- a user's history and active count ----------------------------------------------------------
def ids(tasks: list[Task]) -> list[str]:
    return [t.task_id for t in tasks]


def test_list_by_owner_newest_first_and_only_the_owners(ports):
    for i, created in enumerate([1001.0, 1003.0, 1002.0]):
        ports.tasks.create(make_task(f"a{i}", created_at=created, owner="alice"))
    ports.tasks.create(make_task("b0", created_at=1004.0, owner="bob"))
    ports.tasks.create(make_task("n0", created_at=1005.0))  # no owner

    assert ids(ports.tasks.list_by_owner("alice")) == ["a1", "a2", "a0"]
    assert ids(ports.tasks.list_by_owner("bob")) == ["b0"]
    assert ports.tasks.list_by_owner("carol") == []
    assert ids(ports.tasks.list_by_owner("alice", limit=2)) == ["a1", "a2"]


def test_owner_round_trips_and_no_owner_stays_empty(ports):
    ports.tasks.create(make_task("a", owner="alice", webhook="https://x.example/hook"))
    ports.tasks.create(make_task("n"))

    ports.tasks.transition(
        "a", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.SUCCEEDED, image_md5=["d41d8c"])
    )

    got = ports.tasks.get("a")
    assert (got.owner, got.webhook, got.image_md5) == (
        "alice",
        "https://x.example/hook",
        ["d41d8c"],
    )
    assert ports.tasks.get("n").owner == ""
    assert (
        ports.tasks.transition(
            "n", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING)
        ).owner
        == ""
    )


def test_list_by_owner_filters_on_status(ports):
    for i in range(5):
        ports.tasks.create(make_task(f"a{i}", created_at=1000.0 + i, owner="alice"))
    for i in (1, 3):
        ports.tasks.transition(
            f"a{i}", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.SUCCEEDED)
        )

    assert ids(ports.tasks.list_by_owner("alice", TaskStatus.SUCCEEDED)) == ["a3", "a1"]
    assert ids(ports.tasks.list_by_owner("alice", TaskStatus.QUEUED, limit=2)) == ["a4", "a2"]
    assert ports.tasks.list_by_owner("alice", TaskStatus.FAILED) == []


def test_list_by_owner_pages_through_ties_on_created_at(ports):
    # Given 7 tasks, 5 of them created in the same instant, created out of id order
    times = {"t3": 1002.0, "t1": 1001.0, "t6": 1001.0, "t2": 1001.0, "t5": 1001.0, "t4": 1001.0}
    times["t0"] = 1000.0
    for task_id, created in times.items():
        ports.tasks.create(make_task(task_id, created_at=created, owner="alice"))
    ports.tasks.create(make_task("x", created_at=1001.0, owner="bob"))
    expected = ["t3", "t6", "t5", "t4", "t2", "t1", "t0"]  # (created_at, task_id) descending

    # When paging two at a time, each cursor the last task's (created_at, task_id)
    pages, before = [], None
    while page := ports.tasks.list_by_owner("alice", limit=2, before=before):
        pages.append(ids(page))
        before = (page[-1].created_at, page[-1].task_id)

    # Then every task comes once, in order
    assert pages == [["t3", "t6"], ["t5", "t4"], ["t2", "t1"], ["t0"]]
    assert ids(ports.tasks.list_by_owner("alice", limit=100)) == expected
    assert ids(ports.tasks.list_by_owner("alice", before=(1001.0, "t5"))) == [
        "t4",
        "t2",
        "t1",
        "t0",
    ]
    assert ids(ports.tasks.list_by_owner("alice", before=(1001.0, "t1"))) == ["t0"]
    assert ports.tasks.list_by_owner("alice", before=(1000.0, "t0")) == []


def test_list_by_owner_pages_with_a_status_filter(ports):
    for i in range(6):
        ports.tasks.create(make_task(f"t{i}", created_at=1000.0, owner="alice"))
    ports.tasks.transition("t2", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.FAILED))

    first = ports.tasks.list_by_owner("alice", TaskStatus.QUEUED, limit=3)
    rest = ports.tasks.list_by_owner(
        "alice", TaskStatus.QUEUED, limit=3, before=(1000.0, first[-1].task_id)
    )

    assert (ids(first), ids(rest)) == (["t5", "t4", "t3"], ["t1", "t0"])


def test_count_active_counts_queued_and_running_since(ports):
    for i in range(6):
        ports.tasks.create(make_task(f"a{i}", created_at=1000.0 + i, owner="alice"))
    ports.tasks.create(make_task("b0", created_at=1003.0, owner="bob"))
    ports.tasks.transition("a4", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING))
    ports.tasks.transition("a5", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.SUCCEEDED))

    assert ports.tasks.count_active("alice", since=0) == 5
    assert ports.tasks.count_active("alice", since=1002.0) == 2  # a3, a4; a2 is not after
    assert ports.tasks.count_active("bob", since=0) == 1
    assert ports.tasks.count_active("carol", since=0) == 0


def test_count_waiting_high_counts_queued_high_priority_tasks_after_since(ports):
    # Given high and normal tasks, queued, running and finished, old and new
    ports.tasks.create(make_task("h1", created_at=1000.0, priority=1))
    ports.tasks.create(make_task("h2", created_at=1010.0, priority=1))
    ports.tasks.create(make_task("h3", created_at=1020.0, priority=1))
    ports.tasks.create(make_task("n1", created_at=1030.0))
    ports.tasks.create(make_task("old", created_at=500.0, priority=1))
    ports.tasks.transition("h3", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING))

    # Then only the queued high ones created after `since` count
    assert ports.tasks.count_waiting_high(900.0) == 2
    assert ports.tasks.count_waiting_high(1005.0) == 1
    assert ports.tasks.count_waiting_high(0.0) == 3
    assert ports.tasks.get("h1").priority == 1 and ports.tasks.get("n1").priority == 0


def test_only_queued_high_priority_tasks_count_as_waiting_high(ports) -> None:
    """The sparse index (DynamoDB) and the partial index (SQLite) hold exactly these: a high
    task leaves them when it starts, and is back when the reaper requeues it."""
    now = 1000.0
    for task_id, priority in (("h1", 1), ("h2", 1), ("n1", 0)):
        ports.tasks.create(make_task(task_id, created_at=now, priority=priority))
    assert ports.tasks.count_waiting_high(now - 1) == 2
    running = ports.tasks.transition(
        "h1", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING, started_at=now)
    )
    assert ports.tasks.count_waiting_high(now - 1) == 1
    ports.tasks.transition("h1", running.requeue("worker lost (attempt 1)"))
    assert ports.tasks.count_waiting_high(now - 1) == 2
    ports.tasks.transition("h2", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.CANCELLED))
    assert ports.tasks.count_waiting_high(now - 1) == 1
    assert ports.tasks.count_waiting_high(now + 1) == 0  # created before `since`


# --- the per-user quota on queued-or-running tasks -----------------------------------------------
def _end(ports, task_id: str, to: TaskStatus = TaskStatus.FAILED) -> Task:
    return ports.tasks.transition(task_id, TaskTransition.between({TaskStatus.QUEUED}, to))


def test_create_under_a_limit_counts_the_owners_active_tasks(ports):
    for i in range(2):
        ports.tasks.create(make_task(f"a{i}", owner="alice"), active_limit=2)
    ports.tasks.create(make_task("b0", owner="bob"), active_limit=2)  # another owner's count

    with pytest.raises(OverCapError, match="2 tasks queued or running; the limit is 2"):
        ports.tasks.create(make_task("a2", owner="alice"), active_limit=2)
    with pytest.raises(NotFoundError):
        ports.tasks.get("a2")  # nothing half-written
    with pytest.raises(ConflictError):  # an existing id is still a conflict, not a quota
        ports.tasks.create(make_task("a0", owner="alice"), active_limit=5)

    # a task that ends gives its place back (once: a stale second end takes nothing)
    assert _end(ports, "a0").status is TaskStatus.FAILED
    with pytest.raises(StaleWriteError):
        _end(ports, "a0")
    ports.tasks.create(make_task("a2", owner="alice"), active_limit=2)
    with pytest.raises(OverCapError):
        ports.tasks.create(make_task("a3", owner="alice"), active_limit=2)
    # a running task still counts; it ends through the same transitions
    ports.tasks.transition("a1", TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING))
    with pytest.raises(OverCapError):
        ports.tasks.create(make_task("a3", owner="alice"), active_limit=2)
    ended = ports.tasks.transition(
        "a1", TaskTransition.between({TaskStatus.RUNNING}, TaskStatus.SUCCEEDED, images=["k"])
    )
    assert (ended.status, ended.images) == (TaskStatus.SUCCEEDED, ["k"])
    ports.tasks.create(make_task("a3", owner="alice"), active_limit=2)
    # tasks stored without a limit neither count nor give back
    ports.tasks.create(make_task("x0", owner="carol"))
    _end(ports, "x0")
    ports.tasks.create(make_task("c0", owner="carol"), active_limit=1)
    with pytest.raises(OverCapError):
        ports.tasks.create(make_task("c1", owner="carol"), active_limit=1)


def test_the_limit_is_exact_under_concurrent_creates(ports):
    if ports.backend == "aws":
        pytest.skip(
            "moto's in-process DynamoDB is not thread-safe; there the limit is a condition in "
            "the same transaction as the put (above, and the retry test below)"
        )
    from concurrent.futures import ThreadPoolExecutor

    def create(i: int) -> bool:
        try:
            ports.tasks.create(make_task(f"c{i:02d}", owner="alice"), active_limit=5)
            return True
        except OverCapError:
            return False

    with ThreadPoolExecutor(8) as pool:
        admitted = sum(pool.map(create, range(24)))

    assert admitted == 5
    assert len(ports.tasks.list_by_owner("alice", limit=50)) == 5


def test_a_create_cancelled_by_a_concurrent_transaction_is_tried_again(ports):
    """Two submits of one owner at once: DynamoDB cancels one transaction (TransactionConflict
    on the counter item); it is tried again, and the limit still holds."""
    if ports.backend != "aws":
        pytest.skip("DynamoDB's transaction conflicts")
    from botocore.exceptions import ClientError

    client = ports.tasks.client
    real = client.transact_write_items
    calls: list[int] = []

    def flaky(**kwargs):
        calls.append(1)
        if len(calls) <= 2:  # the first two tries are cancelled
            reasons = [{"Code": "None"}, {"Code": "TransactionConflict"}]
            error = {"Code": "TransactionCanceledException", "Message": "conflict"}
            raise ClientError({"Error": error, "CancellationReasons": reasons}, "Transact")
        return real(**kwargs)

    ports.tasks.client = type("Flaky", (), {"__getattr__": lambda _, n: getattr(client, n)})()
    ports.tasks.client.transact_write_items = flaky
    ports.tasks.create(make_task("a0", owner="alice"), active_limit=1)
    with pytest.raises(OverCapError):
        ports.tasks.create(make_task("a1", owner="alice"), active_limit=1)
    assert ids(ports.tasks.list_by_owner("alice")) == ["a0"]
    assert len(calls) == 4  # two cancelled, the create, the refused one


# --- claim_queued: a worker taking a queued task into its batch ---------------------------------


def _start(now: float = 1001.0) -> TaskTransition:
    return make_task().start(now, None)


def test_claim_queued_starts_a_queued_undispatched_task(ports):
    ports.tasks.create(make_task(priority=1))

    claimed = ports.tasks.claim_queued("t1", _start())

    assert claimed is not None
    assert (claimed.status, claimed.started_at, claimed.attempts) == (TaskStatus.RUNNING, 1001, 1)
    assert claimed.lease is None
    assert ports.tasks.get("t1") == claimed
    # no longer a waiting high-priority task
    assert ports.tasks.count_waiting_high(0) == 0


def test_claim_queued_is_refused_the_second_time(ports):
    ports.tasks.create(make_task())

    assert ports.tasks.claim_queued("t1", _start(1001.0)) is not None
    assert ports.tasks.claim_queued("t1", _start(1002.0)) is None  # running now
    assert ports.tasks.get("t1").started_at == 1001.0


def test_claim_queued_refuses_a_dispatched_task(ports):
    # Given a task control has handed to a function (its slot lease recorded)
    ports.tasks.create(make_task())
    lease = Lease(task_id="t1", model="demo", slots=["g#t1", "m#t1"], expires_at=2000.0)
    assert ports.tasks.update_while("t1", TaskStatus.QUEUED, make_task().dispatched(1000.5, lease))

    assert ports.tasks.claim_queued("t1", _start()) is None
    task = ports.tasks.get("t1")
    assert (task.status, task.lease) == (TaskStatus.QUEUED, lease)


def test_claim_queued_refuses_a_cancel_requested_task(ports):
    ports.tasks.create(make_task())
    ports.tasks.request_cancel("t1")

    assert ports.tasks.claim_queued("t1", _start()) is None
    assert ports.tasks.get("t1").status is TaskStatus.QUEUED


def test_claim_queued_refuses_a_running_or_missing_task(ports):
    ports.tasks.create(make_task())
    ports.tasks.transition("t1", _start())

    assert ports.tasks.claim_queued("t1", _start(1005.0)) is None
    assert ports.tasks.get("t1").started_at == 1001.0
    assert ports.tasks.claim_queued("nope", _start()) is None


def test_claim_queued_takes_a_retried_task_whose_dispatch_was_cleared(ports):
    # Given a task that ran, lost its worker and went back to the queue (requeue clears the
    # dispatch and the lease)
    lease = Lease(task_id="t1", model="demo", slots=["g#t1"], expires_at=2000.0)
    ports.tasks.create(make_task())
    ports.tasks.update_while("t1", TaskStatus.QUEUED, make_task().dispatched(1000.5, lease))
    running = ports.tasks.transition("t1", make_task().start(1001.0, lease))
    ports.tasks.transition("t1", running.requeue("worker lost (attempt 1)"))

    claimed = ports.tasks.claim_queued("t1", running.start(1010.0, None))

    assert claimed is not None and claimed.attempts == 2 and claimed.lease is None


def test_claim_queued_only_starts_a_queued_task(ports):
    ports.tasks.create(make_task())
    with pytest.raises(ValueError):
        ports.tasks.claim_queued("t1", make_task().cancel(1001.0))
    assert ports.tasks.get("t1").status is TaskStatus.QUEUED


def test_claim_queued_is_won_once_under_a_race_of_two_claimers(ports):
    if ports.backend == "aws":
        pytest.skip(
            "moto's in-process DynamoDB is not thread-safe; there the claim is one conditional "
            "update (the second claim above is refused by its condition)"
        )
    import threading
    from concurrent.futures import ThreadPoolExecutor

    for n in range(20):
        ports.tasks.create(make_task(f"r{n:02d}"))
    gate = threading.Barrier(2)

    def claimer() -> list[bool]:
        won = []
        for n in range(20):
            gate.wait(timeout=10)  # both claim the same task at the same moment
            won.append(ports.tasks.claim_queued(f"r{n:02d}", _start()) is not None)
        return won

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.submit(claimer), pool.submit(claimer)
        wins = [x + y for x, y in zip(a.result(), b.result(), strict=True)]

    assert wins == [1] * 20  # every task claimed exactly once
    assert len(ports.tasks.list_by_status(TaskStatus.RUNNING, limit=50)) == 20
