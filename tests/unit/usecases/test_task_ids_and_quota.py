"""A client-chosen task id is its owner's own, and the queued-or-running quota is exact even
when one user submits many at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from sdcore.domain.models import GenerationParams, Role, TaskKind, TaskStatus
from sdcore.errors import NotFoundError, OverCapError
from sdcore.services import Services
from sdcore.usecases.auth import Principal
from sdcore.usecases.submit import Submission, submit
from sdcore.usecases.tasks import get_outcome, get_task, request_cancel

ALICE, BOB = Principal("alice", Role.USER), Principal("bob", Role.USER)
ADMIN = Principal("root", Role.ADMIN)


def _request(prompt: str = "x", task_id: str | None = None) -> Submission:
    return Submission(GenerationParams(kind=TaskKind.TXT2IMG, prompt=prompt), task_id=task_id)


def test_two_users_may_choose_the_same_task_id(svc: Services) -> None:
    mine = submit(svc, ALICE, _request("alice's", "order-0001"))
    theirs = submit(svc, BOB, _request("bob's", "order-0001"))  # not 409: ids are per user

    assert mine.public_id == theirs.public_id == "order-0001"
    assert mine.task_id != theirs.task_id
    assert submit(svc, ALICE, _request("again", "order-0001")).task_id == mine.task_id
    # each reaches their own task by the id they chose
    assert get_task(svc, "order-0001", "alice").params.prompt == "alice's"
    assert get_outcome(svc, "order-0001", "bob").task.params.prompt == "bob's"
    assert request_cancel(svc, "order-0001", "bob").status is TaskStatus.CANCELLED
    assert get_task(svc, "order-0001", "alice").status is TaskStatus.QUEUED
    # nobody reaches another's task, by either id
    with pytest.raises(NotFoundError):
        get_task(svc, mine.task_id, "bob")
    with pytest.raises(NotFoundError):
        get_task(svc, "order-0001", "carol")
    # an admin sees any task by its stored id, and their own by the id they chose
    assert get_task(svc, mine.task_id).owner == "alice"
    own = submit(svc, ADMIN, _request("root's", "order-0001"))
    assert get_task(svc, "order-0001", None, caller="root").task_id == own.task_id


def test_the_queued_task_quota_is_exact_under_concurrent_submits(svc: Services) -> None:
    svc.settings.max_queued_per_user = 3

    def one(n: int) -> str:
        try:
            submit(svc, ALICE, _request(f"p{n}"))
            return "accepted"
        except OverCapError as e:
            assert e.retry_after_s == 5
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(16)))

    assert outcomes.count("accepted") == 3
    assert svc.tasks.count_active("alice", 0) == 3
    submit(svc, BOB, _request())  # another user's quota is their own
