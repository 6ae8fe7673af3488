"""Table writes and object PUTs per task, counted at the ports over one task's whole life
(submit -> dispatch -> run -> end), with the real engine on the demo checkpoint.

Run: .venv/bin/python -m benchmarks.cost_per_task. Writes benchmarks/results/cost_per_task.json.
Goal (issue 5): <= 6 table writes per task, 1 PUT per image, progress writes throttled.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from sdcore.composition import build_services
from sdcore.domain.models import GenerationParams, Model, ModelFormat, ModelStatus, TaskKind
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.settings import Settings
from sdcore.usecases.control import dispatch_task
from sdcore.usecases.inference import run_task
from sdcore.usecases.model_cache import materialise
from sdcore.usecases.submit import submit_task

# Port methods that write: table writes (DynamoDB requests on AWS), object PUTs, queue sends.
TABLE_WRITES = {
    "tasks": {"create", "transition", "update_running", "request_cancel"},
    "slots": {"acquire", "renew", "release"},
    "models": {"create", "update"},
    "functions": {"put", "delete", "touch"},
}
PUTS = {"blobs": {"put"}}


class Counting:
    """Wraps a port and counts calls to the named methods."""

    def __init__(self, inner: Any, name: str, methods: set[str], counts: Counter) -> None:
        self._inner, self._name, self._methods, self._counts = inner, name, methods, counts

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr in self._methods:

            def counted(*args: Any, **kwargs: Any) -> Any:
                self._counts[f"{self._name}.{attr}"] += 1
                return value(*args, **kwargs)

            return counted
        return value


def main(tasks: int = 10, steps: int = 20, batch: int = 1) -> None:
    from sdcore.ports import function_name
    from sdlocal.demo.tiny import save_single_file

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        svc = build_services(Settings(data_dir=root, model_cache_dir=root / "cache"))
        path = save_single_file(root / "demo.safetensors")
        import hashlib

        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        key = f"models/checkpoint/demo/{sha}"
        svc.blobs.put(key, path.read_bytes())
        svc.models.create(
            Model(
                name="demo",
                status=ModelStatus.UNLOADED,
                sha256=sha,
                size=path.stat().st_size,
                key=key,
                config="tiny-sd",
                format=ModelFormat.SAFETENSORS,
                registered_at=0,
                modified_at=0,
            )
        )
        local, name, model_hash, config = materialise(svc, "demo")
        engine = DiffusersEngine(local, name, model_hash, config_dir=config, device="cpu")
        engine.load()

        class Fleet:  # control hands the task straight to this process's engine
            def __init__(self) -> None:
                self.payloads: list[dict[str, Any]] = []

            def ensure(self, model: Model) -> Any:
                from sdcore.domain.models import FunctionRecord

                return FunctionRecord(
                    name=function_name("sd", model.name),
                    model=model.name,
                    status="active",
                    created_at=0,
                )

            def invoke(self, record: Any, payload: dict[str, Any]) -> None:
                self.payloads.append(payload)

        fleet = Fleet()
        svc.fleet = fleet  # type: ignore[assignment]
        counts: Counter = Counter()
        for port, methods in {**TABLE_WRITES, **PUTS}.items():
            setattr(svc, port, Counting(getattr(svc, port), port, methods, counts))
        from sdcore.domain.models import Lease

        params = GenerationParams(
            kind=TaskKind.TXT2IMG, prompt="a red circle", steps=steps, batch_size=batch
        )
        for _ in range(tasks):
            task = submit_task(svc, params, "demo", [], owner="user")
            for message in svc.queue.receive(10, visibility_s=30):
                dispatch_task(svc, message.body["taskId"])
                svc.queue.delete(message.receipt)
            payload = fleet.payloads.pop()
            run_task(svc, engine, task.task_id, Lease.model_validate(payload["lease"]))
        table = sum(v for k, v in counts.items() if k.split(".")[0] in TABLE_WRITES)
        puts = sum(v for k, v in counts.items() if k.split(".")[0] in PUTS)
        write_result(
            "cost_per_task",
            {
                "tasks": tasks,
                "steps": steps,
                "images_per_task": batch,
                "progress_interval_s": svc.settings.progress_interval_s,
                "per_task": {k: round(v / tasks, 2) for k, v in sorted(counts.items())},
                "table_writes_per_task": round(table / tasks, 2),
                "puts_per_image": round(puts / (tasks * batch), 2),
                "note": (
                    "slots.acquire is one TransactWriteItems (3 items) on DynamoDB; the per-user "
                    "rate counter adds one write per HTTP request and is not counted here"
                ),
            },
        )


if __name__ == "__main__":
    main()
