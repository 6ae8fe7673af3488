"""Control under load and faults, on the local stack over HTTP: a burst that must respect the
caps, a worker killed mid-task, and the whole stack killed mid-burst. Bounded in count and time."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from sdlocal.client import upload_model
from tests.support_stack import RunningStack

pytestmark = pytest.mark.slow
TERMINAL = {"succeeded", "failed", "cancelled"}
ASYNC = {"Request-Type": "async"}


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at once; an end at the same instant as a start closes first."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def _wait_all(api: httpx.Client, ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    done: dict[str, dict] = {}
    while time.monotonic() < deadline and len(done) < len(ids):
        for task_id in ids:
            if task_id not in done:
                body = api.get(f"/tasks/{task_id}/result").json()
                if body["status"] in TERMINAL:
                    done[task_id] = body
        time.sleep(0.2)
    return done


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(
        tmp_path_factory.mktemp("load"),
        SD_MAX_CONCURRENCY="2",
        SD_MAX_PER_MODEL="1",
        SD_MAX_QUEUED_PER_USER="1000",
        SD_HEARTBEAT_STALE_SECONDS="6",
        SD_PROGRESS_INTERVAL="0.2",
    ).start()
    # a second checkpoint: the demo file again, under another name (its own function)
    demo = next((running.data_dir / "objects" / "models" / "checkpoint" / "demo").iterdir())
    upload_model(running.url, demo, "demo2", config="demo-shapes",
                 api_key=running.credentials["admin_key"])  # fmt: skip
    yield running
    running.stop()


@pytest.fixture
def api(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=60) as client:
        yield client


def test_burst_of_200_over_two_checkpoints_holds_the_caps(api: httpx.Client) -> None:
    # Given caps of 2 running tasks in all and 1 per checkpoint
    ids, model_of = [], {}
    for n in range(200):
        model = "demo" if n % 2 else "demo2"
        body = {"prompt": f"burst {n}", "steps": 1, "seed": n, "stable_diffusion_model": model}
        resp = api.post("/txt2img", json=body, headers=ASYNC)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["taskId"])
        model_of[ids[-1]] = model
    # When they all run
    done = _wait_all(api, ids, timeout=300)
    # Then every one succeeded, ran once, and the caps held at every moment
    assert len(done) == 200
    assert {b["status"] for b in done.values()} == {"succeeded"}
    assert all(b["attempts"] == 1 and len(b["images"]) == 1 for b in done.values())
    spans = {t: (_ts(b["timings"]["startedAt"]), _ts(b["timings"]["finishedAt"]))
             for t, b in done.items()}  # fmt: skip
    assert _max_overlap(list(spans.values())) <= 2
    for model in ("demo", "demo2"):
        assert _max_overlap([s for t, s in spans.items() if model_of[t] == model]) <= 1
    # and both checkpoints really ran side by side (the global cap was used, not just one)
    assert _max_overlap(list(spans.values())) == 2


def test_a_worker_killed_mid_task_ends_the_task_and_the_next_one_succeeds(
    stack: RunningStack, api: httpx.Client
) -> None:
    long = {"prompt": "long", "steps": 150, "width": 512, "height": 512,
            "stable_diffusion_model": "demo"}  # fmt: skip
    task_id = api.post("/txt2img", json=long, headers=ASYNC).json()["taskId"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.get(f"/tasks/{task_id}/progress").json()["state"]["samplingStep"] >= 1:
            break
        time.sleep(0.2)
    before = set(stack.workers())
    assert before
    # When the worker running it is killed -9 (both checkpoints have one; kill them all)
    killed_at = time.monotonic()
    for pid in before:
        os.kill(pid, signal.SIGKILL)
    done = _wait_all(api, [task_id], timeout=60)
    # Then the task ends within 60 s as failed: worker lost (SD_MAX_ATTEMPTS=1: no retry)
    assert done[task_id]["status"] == "failed"
    assert done[task_id]["error"] == "worker lost"
    assert time.monotonic() - killed_at < 60
    # And the next task for that checkpoint gets a new worker and succeeds
    nxt = api.post("/txt2img", json={"prompt": "after", "steps": 2,
                                     "stable_diffusion_model": "demo"})  # fmt: skip
    body = nxt.json()
    if body["status"] not in TERMINAL:
        body = _wait_all(api, [body["taskId"]], timeout=60)[body["taskId"]]
    assert body["status"] == "succeeded"
    assert not set(stack.workers()) & before


def test_the_whole_stack_killed_mid_burst_ends_every_task_after_restart(
    stack: RunningStack,
) -> None:
    with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=60) as api:
        ids = [
            api.post("/txt2img", headers=ASYNC, json={
                "prompt": f"crash {n}", "steps": 4,
                "stable_diffusion_model": "demo" if n % 2 else "demo2",
            }).json()["taskId"]
            for n in range(40)
        ]  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses = [api.get(f"/tasks/{t}/result").json()["status"] for t in ids[:10]]
            if statuses.count("succeeded") >= 3:
                break
            time.sleep(0.2)
    # When the stack process dies without a clean shutdown, then comes back
    stack.kill()
    stack.start()
    with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=60) as api:
        done = _wait_all(api, ids, timeout=180)
    # Then every task reached a terminal state; none was lost
    assert len(done) == 40
    statuses = [b["status"] for b in done.values()]
    assert set(statuses) <= {"succeeded", "failed"}
    assert statuses.count("succeeded") >= 36  # at most the few running at the crash fail
