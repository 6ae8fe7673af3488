"""Async submits per second and submit latency on the local stack, over HTTP with an API key.

Run: .venv/bin/python -m benchmarks.submits [--count 2000] [--threads 8]. Writes
benchmarks/results/submits.json. Goal (issue 5): >= 500 submits/s, p99 <= 20 ms on 2 cores.

The tasks queue behind a checkpoint whose caps let one run at a time (1-step 64x64), so the
measurement is the submit path itself: HTTP, API Gateway event, validation, key check, rate
counter, quota, prompt filter, task row, queue message. A second pass times the same handler
called in-process, to split HTTP/process-pool cost from the function's own work.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.common import write_result
from tests.support_stack import RunningStack

BODY = {"prompt": "a red circle on a white background", "steps": 1, "width": 64, "height": 64}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def over_http(url: str, headers: dict[str, str], count: int, threads: int) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = count // threads

    def run() -> None:
        mine = []
        with httpx.Client(base_url=url, headers={**headers, "Request-Type": "async"}) as client:
            for _ in range(per_thread):
                start = time.perf_counter()
                resp = client.post("/txt2img", json=BODY)
                mine.append(time.perf_counter() - start)
                assert resp.status_code == 202, resp.text
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - started
    return {
        "submits": len(latencies),
        "client_threads": threads,
        "per_second": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(_pct(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


def in_process(data_dir: Path, key: str, count: int) -> dict:
    """The proxy handler alone, called with API Gateway events in this process."""
    import os

    os.environ.update(
        {
            "SD_DATA_DIR": str(data_dir),
            "SD_RATE_PER_MINUTE": "100000000",
            "SD_MAX_QUEUED_PER_USER": "100000000",
        }
    )
    import json

    from proxy_function.app import lambda_handler
    from sdcore.local.context import LocalContext
    from sdcore.local.server import api_gateway_event

    headers = {
        "Authorization": [f"Bearer {key}"],
        "Content-Type": ["application/json"],
        "Request-Type": ["async"],
    }
    body = json.dumps(BODY).encode()
    times = []
    for _ in range(count):
        event = api_gateway_event("POST", "/txt2img", headers, body, "127.0.0.1")
        start = time.perf_counter()
        resp = lambda_handler(event, LocalContext())
        times.append(time.perf_counter() - start)
        assert resp["statusCode"] == 202, resp
    return {
        "submits": count,
        "p50_ms": round(statistics.median(times) * 1000, 2),
        "p99_ms": round(_pct(times, 0.99) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stack = RunningStack(
            Path(tmp), SD_HTTP_WORKERS="4", SD_MAX_CONCURRENCY="1", SD_MAX_PER_MODEL="1",
            SD_MAX_QUEUED_PER_USER="100000000", SD_RATE_PER_MINUTE="100000000",
        ).start()  # fmt: skip
        try:
            over_http(stack.url, stack.headers, 200, args.threads)  # warm the pool
            http = over_http(stack.url, stack.headers, args.count, args.threads)
            key = stack.credentials["user_key"]
        finally:
            stack.stop()
        handler = in_process(Path(tmp), key, min(args.count, 1000))
    write_result(
        "submits",
        {
            "http": http,
            "handler_in_process": handler,
            "setup": "local stack, SD_HTTP_WORKERS=4, API key auth, prompt filter, async submits",
        },
    )


if __name__ == "__main__":
    main()
