"""Async submits per second and submit latency on the local stack, over HTTP with an API key.

Run: .venv/bin/python -m benchmarks.submits [--count 4000] [--procs 2] [--threads 4]. Writes
benchmarks/results/submits.json. Goal (issue 5): >= 500 submits/s, p99 <= 20 ms on 2 cores.

Two passes over HTTP: with dispatch paused (SD_MAX_CONCURRENCY=0, the tasks wait in the queue)
and with dispatch running (one 1-step 64x64 task at a time on the same cores). Each submit is
the whole submit path: HTTP, API Gateway event, validation, key check, rate counter, quota,
prompt filter, task row, queue message. Then the same handler is called in-process, and once more
under cProfile, to split the front door's cost from the function's own work.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import statistics
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.common import write_result
from tests.support_stack import REPO, RunningStack

BODY = {"prompt": "a red circle on a white background", "steps": 1, "width": 64, "height": 64}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _client(url: str, headers: dict[str, str], count: int, threads: int) -> list[float]:
    """One client process: `threads` keep-alive connections, `count` submits in all."""
    parts = urlsplit(url)
    body = json.dumps(BODY).encode()
    sent = {**headers, "Request-Type": "async", "Content-Type": "application/json"}
    latencies: list[float] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        mine = []
        for _ in range(n):
            start = time.perf_counter()
            conn.request("POST", "/txt2img", body=body, headers=sent)
            resp = conn.getresponse()
            data = resp.read()
            mine.append(time.perf_counter() - start)
            assert resp.status == 202, data
        conn.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=run, args=(count // threads,)) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return latencies


def over_http(url: str, headers: dict[str, str], count: int, procs: int, threads: int) -> dict:
    """Closed loop: procs x threads connections, each sending its next submit when the last one
    is answered (so p99 includes queueing at that concurrency)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        pool.starmap(_client, [(url, headers, 4 * threads, threads)] * procs)  # connect, warm
        started = time.perf_counter()
        results = pool.starmap(_client, [(url, headers, count // procs, threads)] * procs)
        wall = time.perf_counter() - started
    latencies = [x for r in results for x in r]
    return {
        "submits": len(latencies),
        "connections": procs * threads,
        "per_second": round(len(latencies) / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(_pct(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


def in_process(data_dir: Path, key: str, count: int) -> dict:
    """The proxy handler alone, called with API Gateway events in this process, then once more
    under cProfile to say where its time goes."""
    import cProfile
    import os
    import pstats

    os.environ.update(
        {
            "SD_DATA_DIR": str(data_dir),
            "SD_RATE_PER_MINUTE": "100000000",
            "SD_MAX_QUEUED_PER_USER": "100000000",
        }
    )
    import sys

    for folder in (REPO / "functions" / "proxy", REPO / "layers" / "sdcore", REPO / "local"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    from proxy_function.app import lambda_handler
    from sdcore.adapters.local.runtime import LocalContext
    from sdlocal.server import api_gateway_event

    headers = {
        "Authorization": [f"Bearer {key}"],
        "Content-Type": ["application/json"],
        "Request-Type": ["async"],
    }
    body = json.dumps(BODY).encode()

    def once() -> float:
        event = api_gateway_event("POST", "/txt2img", headers, body, "127.0.0.1")
        start = time.perf_counter()
        resp = lambda_handler(event, LocalContext())
        took = time.perf_counter() - start
        assert resp["statusCode"] == 202, resp
        return took

    times = [once() for _ in range(count)]
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(count):
        once()
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    parts = {  # cumulative time of the steps of a submit, per submit
        "authenticate (key lookup)": "authenticate",
        "rate counter": "check_rate",
        "prompt filter": "check_prompts",
        "queue quota": "check_queue_quota",
        "task row + queue message": "submit_task",
        "read back for the answer": "get_task",
        "sqlite commits": "commit",
    }
    where: dict[str, float] = {}
    for label, name in parts.items():
        total = sum(v[3] for (_f, _l, fn), v in stats.items() if fn == name)
        where[label] = round(total / count * 1000, 3)
    total = sum(v[3] for (_f, _l, fn), v in stats.items() if fn == "lambda_handler")
    where["whole handler (profiled)"] = round(total / count * 1000, 3)
    return {
        "submits": count,
        "p50_ms": round(statistics.median(times) * 1000, 2),
        "p99_ms": round(_pct(times, 0.99) * 1000, 2),
        "profiled_ms_per_submit": where,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=4000)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="connections per client process")
    parser.add_argument("--http-workers", type=int, default=2, help="SD_HTTP_WORKERS")
    args = parser.parse_args()
    http: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # dispatch paused (SD_MAX_CONCURRENCY=0): the 2 cores serve submits and the control loop
        # (the waiting tasks' back-off); running: one 1-step 64x64 task at a time beside them
        for label, cap in (("dispatch_paused", "0"), ("dispatch_running", "1")):
            stack = RunningStack(
                Path(tmp) / label, SD_HTTP_WORKERS=str(args.http_workers),
                SD_MAX_CONCURRENCY=cap, SD_MAX_PER_MODEL="1",
                SD_MAX_QUEUED_PER_USER="100000000", SD_RATE_PER_MINUTE="100000000",
            ).start()  # fmt: skip
            try:
                http[label] = over_http(
                    stack.url, stack.headers, args.count, args.procs, args.threads
                )
                key = stack.credentials["user_key"]
                print(label, json.dumps(http[label]), flush=True)
            finally:
                stack.stop()
        handler = in_process(Path(tmp) / "dispatch_running", key, min(args.count, 1000))
    write_result(
        "submits",
        {
            "http": http,
            "handler_in_process": handler,
            "setup": (
                f"local stack (uvicorn front door in its own process, SD_HTTP_WORKERS="
                f"{args.http_workers}), {args.procs} client processes x {args.threads} keep-alive "
                "connections on the same 2 cores, API key auth, prompt filter, async txt2img "
                "submits (1-step 64x64), per-checkpoint cap 1"
            ),
        },
    )


if __name__ == "__main__":
    main()
