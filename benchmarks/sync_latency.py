"""Warm sync txt2img latency over HTTP on the local stack, demo checkpoint, 20 steps.

Run: make bench  (or .venv/bin/python -m benchmarks.sync_latency). Writes
benchmarks/results/sync_latency.json. Numbers depend on the machine: they say where time goes,
not a pass/fail line.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.support_stack import RunningStack

RESULTS = Path(__file__).parent / "results"
SIZES = [(64, 64, 10), (512, 512, 3)]  # width, height, repetitions


def _timed(client: httpx.Client, body: dict) -> tuple[float, dict]:
    start = time.perf_counter()
    resp = client.post("/txt2img", json=body)
    elapsed = time.perf_counter() - start
    resp.raise_for_status()
    return elapsed, resp.json()


def main() -> None:
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        stack = RunningStack(Path(tmp)).start()
        try:
            with httpx.Client(base_url=stack.url, timeout=300, headers=stack.headers) as client:
                first, _ = _timed(client, {"prompt": "warm up", "steps": 1})
                for width, height, reps in SIZES:
                    body = {
                        "prompt": "a red circle",
                        "steps": 20,
                        "width": width,
                        "height": height,
                        "seed": 1,
                    }
                    wall, engine = [], []
                    for _ in range(reps):
                        elapsed, result = _timed(client, body)
                        assert result["status"] == "succeeded", result
                        wall.append(elapsed)
                        engine.append(result["info"]["elapsed_s"])
                    runs.append(
                        {
                            "width": width,
                            "height": height,
                            "steps": 20,
                            "repetitions": reps,
                            "http_sync_median_s": round(statistics.median(wall), 3),
                            "http_sync_min_s": round(min(wall), 3),
                            "engine_median_s": round(statistics.median(engine), 3),
                            "overhead_median_s": round(
                                statistics.median(w - e for w, e in zip(wall, engine, strict=True)),
                                3,
                            ),
                        }
                    )
        finally:
            stack.stop()
    out = {
        "benchmark": "sync_latency",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model": "demo (tiny SD 1.x architecture, random weights)",
        "first_request_s": round(first, 3),
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "sync_latency.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
