"""Torch's threads shared among the tasks running now (sdcore.engine.threads), and the local
worker's count of them (sdcore.adapters.local.runtime.RunningInvocations)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.fleet import RUNTIME, invocation_queue
from sdcore.adapters.local.runtime import RunningInvocations, serve
from sdcore.engine import threads
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.ports import EngineInputs, StepInfo
from sdcore.settings import Settings

from .support import gen

WAITS = "import sys; print(); sys.stdin.read()"  # a process that waits on its stdin


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    threads.configure(None)
    torch.set_num_threads(before)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_threads_follow_the_count_throttled_never_below_1_nor_above_the_cores() -> None:
    # Given a share of 4 cores whose count we set, on a clock we move
    running, looks, clock = [1], [], Clock()

    def count() -> int:
        looks.append(clock.now)
        return running[0]

    share = threads.CoreShare(count, cores=4, every_s=0.25, clock=clock)
    # When a run starts alone, then another task starts
    assert share.fit(force=True) == 4 and torch.get_num_threads() == 4
    running[0] = 2
    clock.now = 0.1
    # Then the count is not read again within 0.25 s, and is after
    assert share.fit() == 4 and torch.get_num_threads() == 4
    clock.now = 0.3
    assert share.fit() == 2 and torch.get_num_threads() == 2
    assert looks == [0.0, 0.3]
    # never below 1 thread, never above the cores
    for n, want in ((3, 1), (9, 1), (0, 4), (1, 4)):
        running[0] = n
        assert share.fit(force=True) == want and torch.get_num_threads() == want


def test_unconfigured_threads_stay_as_they_are() -> None:
    def callback(*args: Any) -> str:
        return "reported"

    torch.set_num_threads(1)
    assert threads.shared(callback) is callback  # Lambda, SageMaker: nothing configured it
    assert torch.get_num_threads() == 1


def test_the_count_ignores_and_removes_marks_of_processes_that_are_no_workers(
    tmp_path: Path,
) -> None:
    invocations = RunningInvocations(tmp_path)
    assert invocations.count() == 0  # no folder yet
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    invocations.folder.mkdir(parents=True)
    (invocations.folder / gone).touch()
    with invocations.running():
        assert invocations.count() == 1  # this process's own mark only
    assert sorted(p.name for p in invocations.folder.iterdir()) == []


def test_a_local_workers_run_takes_every_core_alone_and_half_with_another_running(
    tmp_path: Path, engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the runtime serving one invocation at a time, its engine sharing 2 cores
    settings = Settings(data_dir=tmp_path, idle_s=0)
    set_calls: list[int] = []
    real_set = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (set_calls.append(n), real_set(n)))
    threads.configure(RunningInvocations(tmp_path).count, cores=2)
    during: list[int] = []

    def on_step(info: StepInfo) -> bool:
        during.append(torch.get_num_threads())
        return False

    def handler(event: dict[str, Any], context: Any) -> None:
        if not event.get("warmup"):
            engine.run(gen(steps=3), EngineInputs(), on_step)

    def serve_one() -> None:
        invocation_queue(Database(tmp_path / "state.db"), "fn").send({"taskId": "t"})
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            serve(settings, "fn", handler)
        finally:
            signal.signal(signal.SIGTERM, sigterm)

    # When it runs alone (threads left at 1 by an earlier shared run)
    real_set(1)
    serve_one()
    # Then it took every core before its first step
    assert set_calls == [2] and during == [2, 2, 2]

    # When another worker runs an invocation meanwhile
    other = subprocess.Popen([sys.executable, "-c", WAITS, RUNTIME],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert other.stdout is not None
        other.stdout.readline()  # its command line is in /proc once it runs Python
        (tmp_path / "running" / str(other.pid)).touch()
        set_calls.clear()
        during.clear()
        serve_one()
    finally:
        other.communicate()
    # Then it took half of them, no more
    assert set_calls == [1] and during == [1, 1, 1]
