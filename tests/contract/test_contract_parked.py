"""ParkedTasks contract: order (priority, then age) within and across checkpoints, atomic takes
under a race, only queued tasks parked, ended ones dropped, the count."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sdcore.adapters.aws import DynamoDBParkedTasks, DynamoDBTaskStore
from sdcore.adapters.local.db import Database
from sdcore.adapters.local.parked import SqliteParkedTasks
from sdcore.adapters.local.stores import SqliteTaskStore
from sdcore.domain.models import GenerationParams, Task, TaskKind
from sdcore.ports import ParkedTasks, TaskStore
from tests.aws_template import AwsStack

NOW = 1_700_000_000.0


@dataclass
class Parking:
    backend: str
    tasks: TaskStore
    parked: ParkedTasks
    client: Any = None  # aws: the DynamoDB client, to interleave two takers

    def queued(self, task_id: str, model: str = "a", priority: int = 0, age: float = 0) -> None:
        """A stored, queued task, parked."""
        params = GenerationParams(kind=TaskKind.TXT2IMG, prompt="p")
        created = NOW - age
        self.tasks.create(Task(task_id=task_id, kind=TaskKind.TXT2IMG, model=model,
                               params=params, created_at=created, priority=priority))  # fmt: skip
        assert self.parked.park(task_id, model, priority, created)


@pytest.fixture(params=["local", "aws"])
def parking(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Parking]:
    if request.param == "local":
        db = Database(tmp_path / "state.db")
        yield Parking("local", SqliteTaskStore(db), SqliteParkedTasks(db))
        return
    stack: AwsStack = request.getfixturevalue("aws_stack")
    ddb, table = stack.client("dynamodb"), stack.names["TasksTable"]
    yield Parking("aws", DynamoDBTaskStore(ddb, table), DynamoDBParkedTasks(ddb, table), ddb)


def ids(taken: list[Any]) -> list[str]:
    return [t.task_id for t in taken]


def test_take_gives_high_priority_first_then_oldest(parking: Parking) -> None:
    parking.queued("new", age=1)
    parking.queued("old", age=5)
    parking.queued("high", priority=1, age=0)
    parking.queued("mid", age=3)

    [first] = parking.parked.take(1, ["a"])
    assert (first.task_id, first.model, first.priority, first.created_at) == (
        "high", "a", 1, NOW)  # fmt: skip
    assert ids(parking.parked.take(2, ["a"])) == ["old", "mid"]
    assert ids(parking.parked.take(5, ["a"])) == ["new"]
    assert parking.parked.take(1, ["a"]) == []


def test_take_reads_only_the_checkpoints_named_merged_in_order(parking: Parking) -> None:
    parking.queued("a-old", "a", age=9)
    parking.queued("b-mid", "b", age=5)
    parking.queued("b-high", "b", priority=1, age=0)
    parking.queued("c-oldest", "c", age=20)

    assert ids(parking.parked.take(2, ["a", "b"])) == ["b-high", "a-old"]
    assert ids(parking.parked.take(9, ["b"])) == ["b-mid"]
    assert ids(parking.parked.take(9, ["missing"])) == []
    assert ids(parking.parked.take(9, ["c"])) == ["c-oldest"]


def test_only_a_queued_task_parks_and_one_that_ended_is_dropped(parking: Parking) -> None:
    assert not parking.parked.park("nobody", "a", 0, NOW)
    parking.queued("cancelled", age=2)
    parking.queued("waiting", age=1)
    parking.tasks.transition("cancelled", parking.tasks.get("cancelled").cancel(NOW))
    assert not parking.parked.park("cancelled", "a", 0, NOW)  # ended: not parked again

    assert parking.parked.count() == 2  # the ended one counts until a take drops it
    assert ids(parking.parked.take(1, ["a"])) == ["waiting"]
    assert parking.parked.count() == 0


def test_parking_twice_keeps_one_entry(parking: Parking) -> None:
    parking.queued("t1")
    assert parking.parked.park("t1", "a", 0, NOW)
    assert parking.parked.count() == 1
    assert ids(parking.parked.take(5, ["a"])) == ["t1"]


def test_count(parking: Parking) -> None:
    assert parking.parked.count() == 0
    for n in range(5):
        parking.queued(f"t{n}", f"m{n % 2}", age=n)
    assert parking.parked.count() == 5
    parking.parked.take(2, ["m0", "m1"])
    assert parking.parked.count() == 3


def test_two_takers_never_get_the_same_task(parking: Parking) -> None:
    for n in range(6):
        parking.queued(f"t{n}", age=10 - n)
    if parking.backend == "aws":
        # moto's DynamoDB is not thread-safe, so the race is interleaved by hand: the second
        # taker runs after the first has read the head and before it removes what it read
        client, other = parking.client, parking.parked
        real = client.update_item
        state = {"raced": False}

        def update_item(**kwargs: Any) -> Any:
            if kwargs.get("ReturnValues") == "ALL_OLD" and not state["raced"]:
                state["raced"] = True
                raced.extend(other.take(2, ["a"]))
            return real(**kwargs)

        raced: list[Any] = []
        client.update_item = update_item
        try:
            first = parking.parked.take(3, ["a"])
        finally:
            client.update_item = real
        got = [ids(first), ids(raced)]
    else:
        with ThreadPoolExecutor(6) as pool:
            got = [ids(t) for t in pool.map(lambda _: parking.parked.take(1, ["a"]), range(6))]
    everything = [task_id for taken in got for task_id in taken]
    assert len(everything) == len(set(everything))  # no task taken twice
    if parking.backend == "aws":
        # the loser of the race moved on past what the winner took: 5 of the 6, in order
        assert got == [["t2", "t3", "t4"], ["t0", "t1"]]
    else:
        assert sorted(everything) == [f"t{n}" for n in range(6)]
    assert parking.parked.count() == 6 - len(everything)
