"""Throughput of the local stack under a burst of compatible requests, dynamic batching on vs
off with the same caps, and the latency of a lone high-priority request sent meanwhile.

Each round starts a stack (the demo checkpoint, SD_MAX_CONCURRENCY 2, SD_MAX_PER_MODEL 1, as
`make run`), warms the checkpoint with one request, then submits `--burst` compatible async
txt2img requests (64x64, 20 steps, each its own prompt and seed) at once and waits for them
all (images per second); then a second burst, while which one sync `"priority": 1` request at a
time is timed. Rounds alternate SD_MAX_BATCH 1 (off) and `--batch` (on).

Run: .venv/bin/python -m benchmarks.batching_load [--burst 32] [--batch 8] [--rounds 2]
Writes benchmarks/results/batching_load.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import write_result
from tests.support_stack import RunningStack, wait_for_result

COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES = ("circle", "square", "triangle")


def _body(n: int) -> dict[str, Any]:
    color, shape = COLORS[n % len(COLORS)], SHAPES[n % len(SHAPES)]
    return {"prompt": f"a {color} {shape} on a white background", "seed": 1000 + n,
            "steps": 20, "width": 64, "height": 64}  # fmt: skip


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _burst(api: httpx.Client, burst: int, offset: int) -> list[str]:
    return [
        api.post("/txt2img", json=_body(offset + n), headers={"Request-Type": "async"}).json()[
            "taskId"
        ]
        for n in range(burst)
    ]


def one_round(max_batch: int, burst: int) -> dict[str, Any]:
    """Two bursts on one stack: the first alone (its images per second), the second with lone
    high-priority requests timed one after another while it runs."""
    stack = RunningStack(Path(tempfile.mkdtemp()), SD_MAX_BATCH=str(max_batch)).start()
    try:
        with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=300) as api:
            assert api.post("/txt2img", json=_body(-1)).json()["status"] == "succeeded"
            started = time.perf_counter()
            results = [wait_for_result(api, t, timeout=600) for t in _burst(api, burst, 0)]
            elapsed = time.perf_counter() - started
            ids = _burst(api, burst, burst)
            done = threading.Event()
            lone: list[float] = []

            def probe() -> None:
                n = 0
                while not done.is_set() and n < 50:
                    body = {**_body(10_000 + n), "priority": 1}
                    t0 = time.perf_counter()
                    answer = api.post("/txt2img", json=body).json()
                    if answer["status"] != "succeeded":
                        answer = wait_for_result(api, answer["taskId"])
                    if not done.is_set():  # only those that ran beside the burst
                        lone.append(time.perf_counter() - t0)
                    n += 1

            prober = threading.Thread(target=probe)
            prober.start()
            results += [wait_for_result(api, task_id, timeout=600) for task_id in ids]
            done.set()
            prober.join()
        assert all(r["status"] == "succeeded" for r in results), results
        batched = [r["info"].get("batch") for r in results[:burst]]
        sizes = [len(b["tasks"]) for b in batched if b]
        return {
            "max_batch": max_batch,
            "burst": burst,
            "seconds": round(elapsed, 3),
            "images_per_s": round(burst / elapsed, 3),
            "tasks_batched": len(sizes),
            "mean_batch_tasks": round(statistics.mean(sizes), 2) if sizes else 1,
            "lone_high_priority_during_a_burst": {
                "count": len(lone),
                "p50_s": round(_percentile(lone, 0.5), 3) if lone else None,
                "p99_s": round(_percentile(lone, 0.99), 3) if lone else None,
            },
        }
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--burst", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rounds = []
    for _ in range(args.rounds):
        for max_batch in (1, args.batch):
            rounds.append(one_round(max_batch, args.burst))
            print(rounds[-1], flush=True)
    off = statistics.median(r["images_per_s"] for r in rounds if r["max_batch"] == 1)
    on = statistics.median(r["images_per_s"] for r in rounds if r["max_batch"] == args.batch)
    write_result(
        "batching_load",
        {
            "model": "demo (shipped demo-shapes checkpoint)",
            "request": "txt2img 64x64, 20 steps, Euler, CFG 7; each its own prompt and seed",
            "caps": {"SD_MAX_CONCURRENCY": 2, "SD_MAX_PER_MODEL": 1},
            "rounds": rounds,
            "median_images_per_s": {"off": off, "on": on},
            "ratio": round(on / off, 2),
            "goal": "ratio >= 2",
        },
    )


if __name__ == "__main__":
    main()
