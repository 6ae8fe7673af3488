"""Serving overhead: warm sync txt2img over HTTP on the local stack divided by a direct diffusers
call on the same checkpoint with the same parameters, at 64x64 and 512x512, 20 steps (issue 6's
goal: <= 1.05 at 512x512).

The direct call is plain diffusers in its own process, alive beside the stack, and the two
alternate request by request (so a change in the machine's speed hits both alike):
`StableDiffusionPipeline.from_single_file` on the shipped demo checkpoint with its config folder,
the same scheduler (webui "Euler", built from the checkpoint's scheduler config), CFG 7, one CPU
generator seeded 1, a PIL image out, with the machine's default torch threads (what a user who
skipped us would get). The stack runs with its defaults (`make run`'s caps): a lone task's
worker takes every core (its threads follow the tasks running). The HTTP time includes
everything a user waits for: HTTP, the proxy, the queue hop to control and the worker, prompt
parsing and encoding, the PNG encode and store, and the sync wait. With the default censor
(`flag`) the picture is scored after the answer: the direct call waits until the scores are
recorded, so that work does not land on its time (it is not in the HTTP time either: the
censor's own cost is `benchmarks.censor_cost`'s).

Run: .venv/bin/python -m benchmarks.overhead [--reps 5] [--rounds 1] [--censor off]
[--sizes 64 512]. Writes benchmarks/results/overhead.json (overhead_censor_off.json with
`--censor off`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import write_result
from benchmarks.plain_diffusers import PROMPT, PlainDiffusers
from tests.support_stack import RunningStack

SIZES = (64, 512)
THREADS = os.cpu_count() or 1  # the machine's default, what a user would get


def measure(
    reps: int, censor: str, sizes: tuple[int, ...] = SIZES
) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """HTTP and direct calls alternate, so drift in the machine's speed hits both alike."""
    http: dict[int, list[float]] = {size: [] for size in sizes}
    plain: dict[int, list[float]] = {size: [] for size in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        stack = RunningStack(Path(tmp), SD_IDLE_SECONDS="600", SD_CENSOR=censor).start()
        direct = PlainDiffusers()
        try:
            with httpx.Client(base_url=stack.url, timeout=600, headers=stack.headers) as api:

                def over_http(size: int) -> float:
                    body = {"prompt": PROMPT, "steps": 20, "cfg_scale": 7, "width": size,
                            "height": size, "seed": 1, "sampler_name": "Euler"}  # fmt: skip
                    start = time.perf_counter()
                    resp = api.post("/txt2img", json=body, headers={"Request-Type": "sync"})
                    took = time.perf_counter() - start
                    assert resp.status_code == 200, resp.text
                    assert resp.json()["status"] == "succeeded", resp.text
                    if censor == "flag":
                        scored(resp.json()["taskId"])
                    return took

                def scored(task_id: str) -> None:
                    """Wait until the stack's work for the request is done: `flag` scores the
                    picture after the answer, which would slow the direct call that follows."""
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        info = api.get(f"/tasks/{task_id}/result").json()["info"]
                        if "censor" in info:
                            return
                        time.sleep(0.005)
                    raise RuntimeError(f"task {task_id}'s censor scores were never recorded")

                for size in sizes:  # warm-ups, not counted
                    over_http(size)
                    direct.run(size, 20, THREADS)
                for _ in range(reps):
                    for size in sizes:
                        http[size].append(over_http(size))
                        plain[size].append(direct.run(size, 20, THREADS))
        finally:
            direct.close()
            stack.stop()
    return http, plain


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    # each round is a fresh stack and a fresh diffusers process: a process's speed can differ
    # by a few ms for its whole life (where its memory landed), which one pair would carry
    parser.add_argument("--rounds", type=int, default=1)
    # the stack's default NSFW censor (`flag`) scores every picture, which plain diffusers
    # does not do: `off` measures the serving alone
    parser.add_argument("--censor", default="flag", choices=("off", "flag", "blur", "block"))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args()
    sizes = tuple(args.sizes)
    rounds = [measure(args.reps, args.censor, sizes) for _ in range(args.rounds)]
    runs = []
    for size in sizes:
        http = [t for h, _ in rounds for t in h[size]]
        plain = [t for _, p in rounds for t in p[size]]
        h, d = statistics.median(http), statistics.median(plain)
        per_round = [round(statistics.median(h[size]) / statistics.median(p[size]), 3)
                     for h, p in rounds]  # fmt: skip
        runs.append({"size": f"{size}x{size}", "steps": 20, "rounds": args.rounds,
                     "repetitions_per_round": args.reps, "http_sync_median_s": round(h, 3),
                     "direct_diffusers_median_s": round(d, 3), "ratio": round(h / d, 3),
                     "ratio_per_round": per_round})  # fmt: skip
    write_result(
        "overhead" if args.censor == "flag" else f"overhead_censor_{args.censor}",
        {
            "model": "demo (shipped demo-shapes checkpoint)",
            "sampler": "Euler",
            "cfg_scale": 7,
            "censor": args.censor,
            "runs": runs,
            "goal": "ratio <= 1.05 at 64x64 and 512x512",
        },  # fmt: skip
    )


if __name__ == "__main__":
    main()
