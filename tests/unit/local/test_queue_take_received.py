"""What a local worker that died was holding: the messages it received and never finished,
not those still waiting, nor one a successor received after it died."""

from __future__ import annotations

from pathlib import Path

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.queue import SqliteQueue


def test_take_received_removes_only_what_the_dead_consumer_held(tmp_path: Path) -> None:
    now = [100.0]
    queue = SqliteQueue(Database(tmp_path / "state.db"), "fn:x", now=lambda: now[0])
    for n in range(3):
        queue.send({"taskId": f"t{n}"})
    [held] = queue.receive(1, visibility_s=60)  # the consumer that dies at 101
    now[0] = 102.0
    [successors] = queue.receive(1, visibility_s=60)  # a new consumer, after the death

    taken = queue.take_received(received_by=101.0, visibility_s=60)

    assert [m.body for m in taken] == [held.body]
    assert queue.depth() == 2  # the successor's and the one still waiting stay
    queue.delete(successors.receipt)
    assert [m.body for m in queue.receive(10, visibility_s=60)] == [{"taskId": "t2"}]
