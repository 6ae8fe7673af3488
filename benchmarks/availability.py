"""One user saturating the local stack cannot stall the others: while user A holds sync waits on
long tasks and image-URL fetches from a slow server, `GET /health` and user B's async submits
are timed (127.0.0.1 only, bounded in count and time).

User A sends, at once: `--sync` sync txt2img requests (512x512, 150 steps: they wait their full
SD_SYNC_TIMEOUT) and `--fetches` img2img requests whose init image is a URL that answers after
`--slow` seconds. Meanwhile `--samples` /health calls and `--samples` async submits by user B
are timed one after the other. A's requests over its share of the function processes are
refused with 429 (counted).

Run: .venv/bin/python -m benchmarks.availability [--sync 8] [--fetches 4] [--samples 100]
Writes benchmarks/results/availability.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import write_result
from tests.support_stack import RunningStack


class _Slow(BaseHTTPRequestHandler):
    delay = 10.0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        time.sleep(self.delay)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    cut = statistics.quantiles(ordered, n=100)
    return {"n": len(ordered), "p50_ms": round(cut[49] * 1000, 1),
            "p99_ms": round(cut[98] * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1)}  # fmt: skip


def run(sync: int, fetches: int, samples: int, slow: float) -> dict[str, Any]:
    _Slow.delay = slow
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    slow_url = f"http://127.0.0.1:{server.server_address[1]}/image.png"
    stack = RunningStack(Path(tempfile.mkdtemp()), SD_ALLOW_PRIVATE_URLS="true").start()
    outcomes: Counter[int] = Counter()
    try:
        admin = httpx.Client(base_url=stack.url, headers=stack.admin_headers, timeout=30)
        other = admin.post("/admin/users", json={"name": "bob", "role": "user"}).json()["apiKey"]
        a = httpx.Client(base_url=stack.url, headers=stack.headers, timeout=120)
        b = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {other}"},
                         timeout=30)  # fmt: skip

        def call(body: dict[str, Any], route: str) -> None:
            outcomes[a.post(route, json=body).status_code] += 1

        long = {"prompt": "long", "steps": 150, "width": 512, "height": 512}
        fetch = {"prompt": "x", "init_images": [slow_url], "steps": 2}
        load = [threading.Thread(target=call, args=(long, "/txt2img")) for _ in range(sync)]
        load += [threading.Thread(target=call, args=(fetch, "/img2img")) for _ in range(fetches)]
        for thread in load:
            thread.start()
        time.sleep(2)  # let A's requests take what they can
        health, submits = [], []
        for _ in range(samples):
            start = time.perf_counter()
            assert b.get("/health").status_code == 200
            health.append(time.perf_counter() - start)
            start = time.perf_counter()
            answer = b.post("/txt2img", json={"prompt": "b", "steps": 1},
                            headers={"Request-Type": "async"})  # fmt: skip
            submits.append(time.perf_counter() - start)
            assert answer.status_code == 202, answer.text
            b.post(f"/tasks/{answer.json()['taskId']}/cancellation")
        for thread in load:
            thread.join(timeout=120)
        return {
            "load": {"sync_waits": sync, "url_fetches": fetches, "slow_url_s": slow},
            "health": _percentiles(health),
            "other_users_async_submit": _percentiles(submits),
            "user_a_answers": dict(sorted(outcomes.items())),
        }
    finally:
        stack.stop()
        server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sync", type=int, default=8)
    parser.add_argument("--fetches", type=int, default=4)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--slow", type=float, default=10.0)
    args = parser.parse_args()
    result = run(args.sync, args.fetches, args.samples, args.slow)
    write_result("availability", {"what": __doc__.split("\n\n")[0], **result})


if __name__ == "__main__":
    main()
