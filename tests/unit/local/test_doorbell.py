"""The local stack's wake-ups: a queue's consumers and the sync waits are rung by what they wait
for, instead of sleep-polling (adapters/local/doorbell.py)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.doorbell import Listener, bell_dir, ring
from sdcore.adapters.local.queue import SqliteQueue
from sdcore.adapters.local.stores import TASKS_BELL, SqliteTaskStore
from sdcore.domain.models import GenerationParams, Task, TaskKind
from sdcore.settings import Settings
from sdlocal.waits import TaskWaits

LONG = 30.0  # a fallback poll no test may be waiting for


def test_a_ring_wakes_every_listener_and_is_kept_until_read(tmp_path: Path) -> None:
    assert ring(tmp_path, "b") == 0  # nobody listens: nothing happens
    with Listener(tmp_path, "b") as one, Listener(tmp_path, "b") as two:
        assert not one.wait(0)
        assert ring(tmp_path, "b") == 2
        assert one.wait(LONG) and two.wait(LONG)  # rung before the wait: not lost
        assert not one.wait(0)  # read once
    assert list(bell_dir(tmp_path, "b").iterdir()) == []  # closed listeners leave nothing


def test_a_listener_of_a_gone_process_is_forgotten_by_the_next_ring(tmp_path: Path) -> None:
    gone = Listener(tmp_path, "b")
    gone.sock.close()  # the process died: its socket file stays
    assert gone.path.exists()
    assert ring(tmp_path, "b") == 0
    assert not gone.path.exists()


def test_a_ring_wakes_a_waiter_blocked_in_another_thread(tmp_path: Path) -> None:
    with Listener(tmp_path, "b") as bell:
        woken: list[bool] = []
        waiter = threading.Thread(target=lambda: woken.append(bell.wait(LONG)))
        waiter.start()
        ring(tmp_path, "b")
        waiter.join(LONG)
        assert woken == [True]


def test_a_queue_rings_its_consumers_for_messages_due_now(tmp_path: Path) -> None:
    queue = SqliteQueue(Database(tmp_path / "state.db"), "tasks")
    with queue.listener() as bell:
        queue.send({"n": 1}, delay_s=60)
        assert not bell.wait(0)  # a delayed message is due later: no ring
        queue.send({"n": 2})
        assert bell.wait(LONG)
        assert queue.wake(1) == 1  # the delayed one, due now: rung
        assert bell.wait(LONG)
        assert sorted(m.body["n"] for m in queue.receive(10)) == [1, 2]


def _task(task_id: str) -> Task:
    return Task(
        task_id=task_id,
        kind=TaskKind.TXT2IMG,
        model="demo",
        owner="u",
        created_at=1.0,
        params=GenerationParams(kind=TaskKind.TXT2IMG),
    )


def test_a_sync_wait_ends_when_its_task_ends_not_at_a_poll(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    store = SqliteTaskStore(Database(tmp_path / "state.db"))
    store.create(_task("t1"))
    waits = TaskWaits(settings)
    waits.FALLBACK_S = LONG  # only the ring can end the wait in time

    async def scenario() -> None:
        wait = asyncio.create_task(waits.wait("t1", LONG))
        while not waits._rung:  # the wait has read the task and is listening
            await asyncio.sleep(0)
        with Listener(tmp_path, TASKS_BELL) as other:
            store.transition("t1", store.get("t1").cancel(2.0))
            assert other.wait(LONG)  # the store rang the bell
        await asyncio.wait_for(wait, LONG / 3)

    asyncio.run(scenario())
