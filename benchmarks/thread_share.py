"""Threads shared by what runs now (issue 21): a lone request gets every core, two concurrent
ones split them, on the local stack at its default SD_MAX_CONCURRENCY=2.

Two stacks run side by side, each with the shipped demo checkpoint registered twice (`demo` and
`demo-b`: two checkpoints, so two workers can run at once):

- `shared`: as shipped, each worker starts with every core and its engine takes
  cores // tasks running now (sdcore.engine.threads);
- `fixed` (before): OMP_NUM_THREADS = cores // SD_MAX_CONCURRENCY for each worker's whole life,
  what the fleet set before; the share cannot raise threads above what a worker started with,
  so this is the old behaviour exactly.

Plain diffusers runs in two processes of its own beside them (as in benchmarks/overhead.py:
`from_single_file` on the demo checkpoint, Euler, CFG 7, seed 1, a PIL image out). Per
repetition, in turn (so a change in the machine's speed hits all alike): one request alone over
HTTP to each stack and one direct call with all the machine's threads; then two requests at
once (one per checkpoint) to each stack, two direct calls at once with half the threads each
(the ideal split) and two with all the threads each (oversubscribed, what every worker taking
every core would do). While a pair runs, the runnable threads of its processes are sampled from
/proc every 20 ms: more than one per process on average means threads spin against each other.
The workers' own log lines (`torch threads 2 -> 1 (2 tasks running)`) are collected too, and
the cost of reading the count (a folder listing) against the slots table is timed.

Run: .venv/bin/python -m benchmarks.thread_share [--reps 3] [--steps 20] [--size 512]
Writes benchmarks/results/thread_share.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import write_result
from benchmarks.plain_diffusers import CHECKPOINT, PROMPT, PlainDiffusers
from sdlocal.client import upload_model
from tests.support_stack import RunningStack

CORES = os.cpu_count() or 1
WAITS = "import sys; print(); sys.stdin.read()"  # a process that waits on its stdin


class Runnable:
    """Samples, every 20 ms, how many threads of the given processes are runnable (state R)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            running = 0
            for pid in self.pids:
                for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
                    try:
                        running += stat.read_text().rpartition(")")[2].split()[0] == "R"
                    except OSError:
                        continue
            self.samples.append(running)

    def __enter__(self) -> Runnable:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def per_process(self) -> float:
        return statistics.mean(self.samples or [0]) / max(1, len(self.pids))


def together(calls: list[Callable[[], Any]]) -> float:
    """Wall time of running the calls at once."""
    threads = [threading.Thread(target=call) for call in calls]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start


class Stack:
    def __init__(self, root: Path, name: str, **env: str) -> None:
        self.name = name
        # INFO: the workers' `torch threads` lines reach the stack's log
        self.stack = RunningStack(root / name, SD_MAX_CONCURRENCY="2", SD_IDLE_SECONDS="900",
                                  POWERTOOLS_LOG_LEVEL="INFO", **env).start()  # fmt: skip
        upload_model(self.stack.url, CHECKPOINT, "demo-b", config="demo-shapes",
                     api_key=self.stack.credentials["admin_key"])  # fmt: skip
        self.api = httpx.Client(base_url=self.stack.url, timeout=900, headers=self.stack.headers)

    def generate(self, model: str, size: int, steps: int) -> float:
        body = {"prompt": PROMPT, "steps": steps, "cfg_scale": 7, "width": size, "height": size,
                "seed": 1, "sampler_name": "Euler", "stable_diffusion_model": model}  # fmt: skip
        start = time.perf_counter()
        resp = self.api.post("/txt2img", json=body, headers={"Request-Type": "sync"})
        assert resp.status_code in (200, 202), resp.text
        result = resp.json()
        while result["status"] in ("queued", "running"):  # past the sync wait: a cold start
            time.sleep(0.1)
            result = self.api.get(f"/tasks/{result['taskId']}/result").json()
        took = time.perf_counter() - start
        assert result["status"] == "succeeded", result
        return took

    def thread_changes(self) -> list[str]:
        """The workers' `torch threads a -> b (n tasks running)` lines."""
        out = []
        for line in self.stack.log.read_text(errors="replace").splitlines():
            if "torch threads" in line:
                try:
                    record = json.loads(line)
                    out.append(f"{record.get('timestamp', '')} {record['message']}")
                except (ValueError, KeyError):
                    out.append(line[-120:])
        return out

    def close(self) -> None:
        self.api.close()
        self.stack.stop()


def fake_worker() -> subprocess.Popen[bytes]:
    """A process with a worker's command line, waiting on its stdin."""
    from sdcore.adapters.local.fleet import RUNTIME

    proc = subprocess.Popen([sys.executable, "-c", WAITS, RUNTIME],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.readline()  # its command line is in /proc once it runs Python
    return proc


def count_cost(root: Path) -> dict[str, float]:
    """Microseconds per read of "how many run now": the folder the workers mark (2 marks, one
    another live worker's) against the slots table (2 leases held)."""
    from sdcore.adapters.local.db import Database
    from sdcore.adapters.local.runtime import RunningInvocations
    from sdcore.adapters.local.stores import SqliteSlotStore

    invocations = RunningInvocations(root / "cost")
    slots = SqliteSlotStore(Database(root / "cost" / "state.db"))
    for task in ("a", "b"):
        slots.acquire(task, task, time.time(), 600, global_cap=2, model_cap=1)
    other = fake_worker()
    try:
        invocations.folder.mkdir(parents=True, exist_ok=True)
        (invocations.folder / str(other.pid)).touch()
        with invocations.running():
            assert invocations.count() == 2

            def per_call(read: Callable[[], object], n: int = 2000) -> float:
                start = time.perf_counter()
                for _ in range(n):
                    read()
                return round((time.perf_counter() - start) / n * 1e6, 1)

            return {"folder_us": per_call(invocations.count),
                    "slots_table_us": per_call(lambda: len(slots.active(time.time())))}  # fmt: skip
    finally:
        other.communicate()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    size, steps, half = args.size, args.steps, max(1, CORES // 2)
    times: dict[str, list[float]] = {}
    spin: dict[str, list[float]] = {}

    def note(key: str, took: float) -> None:
        times.setdefault(key, []).append(took)

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cost = count_cost(root)
        shared = Stack(root, "shared")
        fixed = Stack(root, "fixed", OMP_NUM_THREADS=str(half))
        directs = [PlainDiffusers(), PlainDiffusers()]
        try:
            for stack in (shared, fixed):  # warm-ups (loads), not counted
                for model in ("demo", "demo-b"):
                    stack.generate(model, size, 2)
            directs[0].run(size, 2, CORES)
            directs[1].run(size, 2, CORES)
            for _ in range(args.reps):
                for stack in (shared, fixed):
                    note(f"alone_http_{stack.name}", stack.generate("demo", size, steps))
                note("alone_direct", directs[0].run(size, steps, CORES))
                for stack in (shared, fixed):
                    with Runnable(stack.stack.workers()) as seen:
                        took = together([lambda s=stack, m=m: s.generate(m, size, steps)
                                         for m in ("demo", "demo-b")])  # fmt: skip
                    note(f"pair_http_{stack.name}", took)
                    spin.setdefault(f"pair_http_{stack.name}", []).append(seen.per_process())
                for key, threads in (("pair_direct_split", half), ("pair_direct_all", CORES)):
                    with Runnable([d.proc.pid for d in directs]) as seen:
                        took = together([lambda d=d, n=threads: d.run(size, steps, n)
                                         for d in directs])  # fmt: skip
                    note(key, took)
                    spin.setdefault(key, []).append(seen.per_process())
            changes = {"shared": shared.thread_changes(), "fixed": fixed.thread_changes()}
        finally:
            for d in directs:
                d.close()
            shared.close()
            fixed.close()

    med = {k: round(statistics.median(v), 3) for k, v in times.items()}
    write_result(
        "thread_share",
        {
            "model": "demo (shipped demo-shapes checkpoint, registered as demo and demo-b)",
            "size": f"{size}x{size}",
            "steps": steps,
            "sampler": "Euler",
            "cfg_scale": 7,
            "repetitions": args.reps,
            "cores": CORES,
            "max_concurrency": 2,
            "median_s": med,
            "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "alone_ratio_http_over_direct": {
                "shared": round(med["alone_http_shared"] / med["alone_direct"], 3),
                "fixed_before": round(med["alone_http_fixed"] / med["alone_direct"], 3),
            },
            "pair_runnable_threads_per_process": {
                k: round(statistics.mean(v), 2) for k, v in spin.items()
            },
            "worker_thread_changes": changes,
            "count_read_cost": cost,
            # the machine is shared: other work running meanwhile shows here
            "load_average_1min": {
                "start": round(load_before, 2),
                "end": round(os.getloadavg()[0], 2),
            },  # fmt: skip
        },
    )


if __name__ == "__main__":
    main()
