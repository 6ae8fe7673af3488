"""A task is never left queued: its checkpoint's worker dies while loading (killed, as an
out-of-memory kill would), every time, and the task still ends, `failed` with the reason, within
the reaper's bound (SD_START_TIMEOUT, here 5 s; the reaper runs every 5 s locally)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from tests.support_stack import RunningStack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(tmp_path_factory.mktemp("stranded"), SD_START_TIMEOUT="5").start()
    yield running
    running.stop()


def test_a_worker_killed_while_loading_fails_its_task_within_the_bound(
    stack: RunningStack,
) -> None:
    with httpx.Client(base_url=stack.url, timeout=30, headers=stack.headers) as api:
        resp = api.post("/txt2img", json={"prompt": "a red circle"},
                        headers={"Request-Type": "async"})  # fmt: skip
        assert resp.status_code == 202, resp.text
        task_id = resp.json()["taskId"]
        killed: set[int] = set()
        deadline = time.monotonic() + 90
        body: dict = {}
        while time.monotonic() < deadline:
            for pid in stack.workers():  # each worker dies while importing and loading
                if pid not in killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
            body = api.get(f"/tasks/{task_id}/result").json()
            if body["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.1)
    assert killed, "no worker was started for the task"
    assert body["status"] == "failed", body
    assert body["error"] == "the inference function did not start the task within 5 s"
    # never started; ended within the bound and one reaper period (5 s each), with room for
    # a slow machine
    timings = body["timings"]
    assert timings["startedAt"] is None
    created, finished = (datetime.fromisoformat(timings[k]) for k in ("createdAt", "finishedAt"))
    assert (finished - created).total_seconds() < 40


def test_the_slots_came_back(stack: RunningStack) -> None:
    """After the failed task, a new one runs: its slot was given back (one slot per checkpoint;
    one still held would keep the next task waiting for the lease, 960 s). The stack restarts
    on the same state with the default start bound first: with 5 s, a cold worker's start (~9 s
    of imports) would fail the new task too, as it should."""
    stack.stop()
    restarted = RunningStack(stack.data_dir, port=stack.port).start()
    try:
        with httpx.Client(base_url=restarted.url, timeout=120, headers=restarted.headers) as api:
            resp = api.post("/txt2img", json={"prompt": "a blue square", "steps": 2})
            # sync: a cold worker may outlast the sync wait; then wait on the task
            body = resp.json()
            deadline = time.monotonic() + 120
            while body["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
                time.sleep(0.2)
                body = api.get(f"/tasks/{body['taskId']}/result").json()
        assert body["status"] == "succeeded", body
    finally:
        restarted.stop()
