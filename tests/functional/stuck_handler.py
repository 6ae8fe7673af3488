"""A stand-in inference handler for local worker processes: it starts each task through the
real `run_task` (so the task is running, with its lease and heartbeat) on an engine that never
finishes, as a worker does mid-task until it is killed. It loads no model and no torch."""

from __future__ import annotations

import threading
from typing import Any

from sdcore.composition import get_services
from sdcore.domain.models import GenerationParams, Lease
from sdcore.ports import Engine, EngineInputs, EngineResult, StepCallback
from sdcore.usecases.inference import run_task

STUCK_S = 120.0  # long past any test's bound; the worker is killed well before


class StuckEngine(Engine):
    def load(self) -> None:
        return None

    def run(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback
    ) -> EngineResult:
        threading.Event().wait(STUCK_S)
        raise RuntimeError("the stuck engine was not killed")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if event.get("warmup"):
        return {"warm": True}
    lease = Lease.model_validate(event["lease"]) if event.get("lease") else None
    status = run_task(get_services(), StuckEngine(), event["taskId"], lease)
    return {"taskId": event["taskId"], "status": status.value}
