"""Items DynamoDB reads to answer "is a high-priority task waiting?", which control asks on every
dispatch attempt of a normal task, as the backlog of queued normal tasks grows.

The tasks table is created from template.yaml in moto; N normal tasks and one high-priority task
are queued; `count_waiting_high` is called and the items its queries read (`ScannedCount`) are
counted. A read cost that grows with the backlog, asked once per waiting task per back-off,
grows with the square of the backlog.

Run: .venv/bin/python -m benchmarks.waiting_high_reads [--label after] [--sizes 100 1000 4000]
Writes benchmarks/results/waiting_high_reads.json (one entry per label, kept across runs).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import boto3
from moto import mock_aws

from benchmarks.common import RESULTS, write_result
from sdcore.adapters.aws import DynamoDBTaskStore
from sdcore.domain.models import GenerationParams, Task, TaskKind
from tests.aws_template import REGION, create_resources


def measure(sizes: list[int]) -> list[dict[str, Any]]:
    runs = []
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        clients = {s: session.client(s) for s in ("dynamodb", "s3", "sqs")}
        names = create_resources(clients)
        client = clients["dynamodb"]
        store = DynamoDBTaskStore(client, names["TasksTable"])
        scanned: list[int] = []

        def count(parsed: dict[str, Any], **_: Any) -> None:
            scanned.append(int(parsed.get("ScannedCount", 0)))

        client.meta.events.register("after-call.dynamodb.Query", count)
        params = GenerationParams(kind=TaskKind.TXT2IMG, prompt="p")
        now = time.time()
        made = 0
        store.create(Task(task_id="high-0000", kind=TaskKind.TXT2IMG, model="m", params=params,
                          created_at=now, priority=1))  # fmt: skip
        for size in sizes:
            while made < size:
                store.create(Task(task_id=f"normal-{made:06d}", kind=TaskKind.TXT2IMG, model="m",
                                  params=params, created_at=now + made * 1e-3))  # fmt: skip
                made += 1
            scanned.clear()
            started = time.perf_counter()
            waiting = store.count_waiting_high(now - 900)
            elapsed = time.perf_counter() - started
            runs.append(
                {
                    "backlog": size,
                    "waiting_high": waiting,
                    "queries": len(scanned),
                    "items_read": sum(scanned),
                    "seconds_moto": round(elapsed, 4),
                }
            )
            print(json.dumps(runs[-1]))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current")
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 1000, 4000])
    args = parser.parse_args()
    path = RESULTS / "waiting_high_reads.json"
    kept = json.loads(path.read_text()).get("runs", {}) if path.is_file() else {}
    kept[args.label] = measure(args.sizes)
    what = " ".join(__doc__.split("\n\n")[0].split())
    write_result("waiting_high_reads", {"what": what, "runs": kept})


if __name__ == "__main__":
    main()
