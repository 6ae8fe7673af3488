"""Control's DynamoDB and SQS work per waiting task, with 10, 1,000 and 10,000 tasks over the cap:
today's delayed re-queue (a waiting task is received again each back-off) against parking (a
waiting task is parked once and woken once, when a slot of its kind frees).

Under moto, with the tables and queue created from template.yaml and the real adapters (a
recording fleet stands in for Lambda). For each backlog: the backlog is stored parked (setup,
not counted); then a sample of tasks (all of them, at most 100) is delivered to control and
counted: parked, their messages deleted; then the sample is drained: a running task ends, its
slot is released and `slot_freed` wakes one waiter (counted "per freed slot"), whose message
control dispatches (counted "woken"). Before: the same sample delivered to control without a
parked store, each delivery re-queued with a delay: the cost of one attempt, measured; how many
attempts a task makes while it waits follows from the back-off (SD_REQUEUE_DELAY 1 s doubling
to SD_REQUEUE_MAX_DELAY 30 s, template.yaml) and its wait, with one slot for the checkpoint
(MaxPerModel 1) and tasks of `--task-seconds` each: the task at position k waits k x task.

Reads are items read (GetItem 1, BatchGetItem its keys, Query/Scan ScannedCount), writes items
written (TransactWriteItems its items), SQS requests as made (a Lambda event source receives
and deletes in batches of 10: 0.2 requests per delivery, counted here as made by the adapter).

Run: .venv/bin/python -m benchmarks.parked_waiting [--sizes 10 1000 10000] [--task-seconds 60]
Writes benchmarks/results/parked_waiting.json.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from typing import Any

import boto3
from moto import mock_aws

from benchmarks.common import write_result
from sdcore.adapters.aws import (
    DynamoDBFunctionStore,
    DynamoDBModelStore,
    DynamoDBParkedTasks,
    DynamoDBSlotStore,
    DynamoDBTaskStore,
    SqsQueue,
)
from sdcore.adapters.aws.metrics import EmfMetrics
from sdcore.adapters.aws.parked import PARKED_IN, PARKED_RANK, rank
from sdcore.adapters.local.tracing import LogTracing
from sdcore.clock import Clock, IdFactory
from sdcore.domain.models import (
    FunctionChanges,
    FunctionRecord,
    GenerationParams,
    Lease,
    Model,
    ModelStatus,
    Task,
    TaskKind,
)
from sdcore.ports import WorkerFleet, function_name
from sdcore.services import Services
from sdcore.settings import Settings
from sdcore.usecases.control import dispatch_task, slot_freed
from tests.aws_template import REGION, create_resources

SAMPLE = 100
DELAY_S, MAX_DELAY_S = 1.0, 30.0  # template.yaml's SD_REQUEUE_DELAY, SD_REQUEUE_MAX_DELAY
READ_OPS = {"GetItem", "BatchGetItem", "Query", "Scan"}


class Meter:
    """DynamoDB items read and written, and SQS requests, by every call of two clients."""

    def __init__(self, dynamodb: Any, sqs: Any) -> None:
        self.counts: Counter[str] = Counter()
        self.on = False
        for client in (dynamodb, sqs):
            client.meta.events.register("provide-client-params", self._params)
            client.meta.events.register("after-call", self._after)
        self._pending: dict[str, Any] = {}

    def _params(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self._pending = {"op": model.name, "params": params}

    def _after(self, parsed: dict[str, Any], model: Any, event_name: str, **_: Any) -> None:
        if not self.on:
            return
        op, params = model.name, self._pending.get("params", {})
        if event_name.startswith("after-call.sqs"):
            self.counts["sqs_requests"] += 1
        elif op == "GetItem":
            self.counts["reads"] += 1
        elif op == "BatchGetItem":
            self.counts["reads"] += sum(len(t["Keys"]) for t in params["RequestItems"].values())
        elif op in ("Query", "Scan"):
            self.counts["reads"] += int(parsed.get("ScannedCount", 0))
        elif op == "TransactWriteItems":
            self.counts["writes"] += len(params["TransactItems"])
        elif op == "BatchWriteItem":
            self.counts["writes"] += sum(len(r) for r in params["RequestItems"].values())
        else:
            self.counts["writes"] += 1
        self.counts["calls"] += 1

    def measure(self, work: Any) -> Counter[str]:
        self.counts = Counter()
        self.on = True
        try:
            work()
        finally:
            self.on = False
        return self.counts


class ActiveFleet(WorkerFleet):
    """Every checkpoint's function active; invocations recorded, not run."""

    def __init__(self) -> None:
        self.invocations: list[dict[str, Any]] = []

    def ensure(self, model: Model) -> FunctionRecord:
        name = function_name("sd", model.name)
        return FunctionRecord(name=name, model=model.name, status="active", created_at=0)

    def invoke(self, record: FunctionRecord, payload: dict[str, Any]) -> None:
        self.invocations.append(payload)

    def delete(self, model_name: str) -> None: ...

    def update(self, model_name: str, changes: FunctionChanges) -> FunctionRecord:
        raise NotImplementedError

    def list(self) -> list[FunctionRecord]:
        return []

    def delete_all(self) -> list[str]:
        return []


def _services(clients: dict[str, Any], names: dict[str, str], parked: bool) -> Services:
    ddb = clients["dynamodb"]
    settings = Settings(backend="aws", max_concurrency=2, max_per_model=1,
                        requeue_delay_s=DELAY_S, requeue_max_delay_s=MAX_DELAY_S)  # fmt: skip
    return Services(
        settings=settings,
        tasks=DynamoDBTaskStore(ddb, names["TasksTable"]),
        models=DynamoDBModelStore(ddb, names["ModelsTable"]),
        functions=DynamoDBFunctionStore(ddb, names["FunctionsTable"]),
        slots=DynamoDBSlotStore(ddb, names["SlotsTable"]),
        queue=SqsQueue(clients["sqs"], names["TaskQueue"]),
        blobs=None,  # type: ignore[arg-type]
        fleet=ActiveFleet(),
        users=None,  # type: ignore[arg-type]
        metrics=EmfMetrics("bench"),  # records, flushed never
        tracing=LogTracing(),
        clock=Clock(),
        ids=IdFactory(),
        parked=DynamoDBParkedTasks(ddb, names["TasksTable"]) if parked else None,
    )


def _tasks(prefix: str, count: int, start: float) -> list[Task]:
    params = GenerationParams(kind=TaskKind.TXT2IMG, prompt="a red circle", steps=20)
    return [Task(task_id=f"{prefix}{n:06d}", kind=TaskKind.TXT2IMG, model="demo", params=params,
                 created_at=start + n * 1e-3) for n in range(count)]  # fmt: skip


def _store(svc: Services, tasks: list[Task], parked: bool) -> None:
    """Setup, not counted: tasks stored in batches (parked: with their parked attributes)."""
    store = svc.tasks
    assert isinstance(store, DynamoDBTaskStore)
    for start in range(0, len(tasks), 25):
        requests = []
        for task in tasks[start : start + 25]:
            item = store.codec.item(task)
            if parked:
                item[PARKED_IN] = {"S": task.model}
                item[PARKED_RANK] = {"S": rank(task.priority, task.created_at, task.task_id)}
            requests.append({"PutRequest": {"Item": item}})
        store.client.batch_write_item(RequestItems={store.table: requests})


def _deliver(svc: Services, expected: int) -> Counter[str]:
    """Control's event source: receive, dispatch each, delete each (as SQS's would)."""
    outcomes: Counter[str] = Counter()
    while sum(outcomes.values()) < expected:
        messages = svc.queue.receive(10, visibility_s=300)
        if not messages:
            break
        for message in messages:
            body = message.body
            outcomes[dispatch_task(svc, body["taskId"], int(body.get("waits", 0))).value] += 1
            svc.queue.delete(message.receipt)
    return outcomes


def _send(svc: Services, tasks: list[Task]) -> None:
    for start in range(0, len(tasks), 10):
        entries = [{"Id": str(i), "MessageBody": f'{{"taskId": "{t.task_id}"}}'}
                   for i, t in enumerate(tasks[start : start + 10])]  # fmt: skip
        svc.queue.client.send_message_batch(QueueUrl=svc.queue.queue_url, Entries=entries)  # type: ignore[attr-defined]


def _per(counts: Counter[str], n: int) -> dict[str, float]:
    return {k: round(counts[k] / n, 2) for k in ("reads", "writes", "sqs_requests", "calls")}


def attempts_while_waiting(wait_s: float) -> int:
    """Deliveries of a task that waits `wait_s` under the back-off: the first, and one per
    delay (1, 2, 4, ... 30, 30 ...) until the delays add up to the wait."""
    attempts, waited, delay = 1, 0.0, DELAY_S
    while waited < wait_s:
        waited += delay
        delay = min(delay * 2, MAX_DELAY_S)
        attempts += 1
    return attempts


def measure(size: int, task_s: float) -> dict[str, Any]:
    with mock_aws():
        session = boto3.Session(region_name=REGION)
        clients = {s: session.client(s) for s in ("dynamodb", "s3", "sqs")}
        names = create_resources(clients)
        meter = Meter(clients["dynamodb"], clients["sqs"])
        after, before = _services(clients, names, True), _services(clients, names, False)
        after.models.create(Model(name="demo", status=ModelStatus.UNLOADED, sha256="0" * 64,
                                  size=1, key="models/checkpoint/demo/x", registered_at=0,
                                  modified_at=0))  # fmt: skip
        now = time.time() - 3600
        sample = min(size, SAMPLE)
        # the slot held by a running task, and the backlog already parked behind it
        [running] = _tasks("running-", 1, now - 1)
        _store(after, [running], parked=False)
        _send(after, [running])
        assert _deliver(after, 1) == {"dispatched": 1}
        _store(after, _tasks("parked-", size - sample, now), parked=True)
        arriving = _tasks("new-", sample, now + size)
        _store(after, arriving, parked=False)
        _send(after, arriving)

        # after: the sample arrives and is parked
        outcomes: Counter[str] = Counter()
        parked = meter.measure(lambda: outcomes.update(_deliver(after, sample)))
        assert outcomes == {"parked": sample}, outcomes
        assert after.parked is not None

        # the sample drains: a running task ends (its slot released, a waiter woken), the
        # woken one is dispatched
        released: Counter[str] = Counter()
        freed: Counter[str] = Counter()
        woken: Counter[str] = Counter()
        for _ in range(sample):
            invocations = after.fleet.invocations  # type: ignore[attr-defined]
            lease = Lease.model_validate(invocations[-1]["lease"])
            released.update(meter.measure(lambda lease=lease: after.slots.release(lease)))

            def wake(model: str = lease.model) -> None:
                assert slot_freed(after, model) == 1

            freed.update(meter.measure(wake))
            woken.update(meter.measure(lambda: outcomes.update(_deliver(after, 1))))
        assert outcomes["dispatched"] == sample, outcomes
        # a slot of a checkpoint nobody waits for: the search for a global-cap waiter
        after.models.create(Model(name="idle", status=ModelStatus.UNLOADED, sha256="0" * 64,
                                  size=1, key="models/checkpoint/idle/x", registered_at=0,
                                  modified_at=0))  # fmt: skip
        idle = after.slots.acquire("idle-task", "idle", time.time(), 60, 2, 1)
        assert idle is not None
        after.slots.release(idle)
        no_waiter = meter.measure(lambda: slot_freed(after, "idle"))

        # before: the same number of deliveries of waiting tasks, each re-queued with a delay
        waiting = _tasks("backoff-", sample, now + 2 * size)
        _store(before, waiting, parked=False)
        _send(before, waiting)
        outcomes = Counter()
        attempt = meter.measure(lambda: outcomes.update(_deliver(before, sample)))
        assert outcomes == {"waiting": sample}, outcomes

    # a task waits for the tasks ahead of it, one slot, task_s each: k x task_s
    deliveries = [attempts_while_waiting(k * task_s) for k in range(1, size + 1)]
    mean_deliveries = sum(deliveries) / size
    per_attempt = _per(attempt, sample)
    per_park, per_woken, per_wake = _per(parked, sample), _per(woken, sample), _per(freed, sample)
    per_release = _per(released, sample)
    # both: the task's dispatch and its slot's release; after: its park and its wake, before:
    # its deliveries while it waits
    common = {k: per_woken[k] + per_release[k] for k in per_woken}
    after_total = {k: round(common[k] + per_park[k] + per_wake[k], 2) for k in common}
    before_total = {k: round(common[k] + (mean_deliveries - 1) * per_attempt[k], 1)
                    for k in common}  # fmt: skip
    return {
        "backlog": size,
        "sample": sample,
        "before": {
            "per_waiting_delivery": per_attempt,
            "deliveries_per_task": round(mean_deliveries, 1),
            "deliveries_last_task": deliveries[-1],
            "per_task": before_total,
        },
        "after": {
            "per_park": per_park,
            "per_release": per_release,
            "per_wake": per_wake,
            "per_wake_no_waiter_of_its_kind": _per(no_waiter, 1),
            "per_woken_dispatch": per_woken,
            "deliveries_per_task": 2,
            "per_task": after_total,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10, 1000, 10000])
    parser.add_argument("--task-seconds", type=float, default=60.0)
    args = parser.parse_args()
    runs = []
    for size in args.sizes:
        started = time.perf_counter()
        run = measure(size, args.task_seconds)
        run["seconds_moto"] = round(time.perf_counter() - started, 1)
        print(run, flush=True)
        runs.append(run)
    what = " ".join(__doc__.split("\n\n")[0].split())
    write_result("parked_waiting", {"what": what, "task_seconds": args.task_seconds,
                                    "slots_per_checkpoint": 1, "runs": runs})  # fmt: skip


if __name__ == "__main__":
    main()
