"""Use cases over the real local adapters (SQLite, files) with a recording fleet and a
scripted engine standing in for the two ports that would start processes or load torch."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdcore.adapters.local.blobs import FileBlobStore
from sdcore.adapters.local.db import Database
from sdcore.adapters.local.metrics import PrometheusMetrics
from sdcore.adapters.local.queue import SqliteQueue
from sdcore.adapters.local.stores import (
    SqliteFunctionStore,
    SqliteModelStore,
    SqliteSlotStore,
    SqliteTaskStore,
    SqliteUserStore,
)
from sdcore.adapters.local.tracing import LogTracing
from sdcore.clock import Clock, IdFactory
from sdcore.domain.models import (
    FunctionChanges,
    FunctionRecord,
    GenerationParams,
    Lease,
    Model,
    ModelStatus,
    TaskKind,
)
from sdcore.ports import (
    Engine,
    EngineInputs,
    EngineResult,
    StepCallback,
    StepInfo,
    WorkerFleet,
    function_name,
)
from sdcore.ports.censor import Censor
from sdcore.services import Services
from sdcore.settings import Settings
from sdcore.usecases.control import dispatch_task
from sdcore.usecases.submit import submit_task


class RecordingFleet(WorkerFleet):
    def __init__(self) -> None:
        self.invocations: list[tuple[str, dict[str, Any]]] = []
        self.deleted: list[str] = []
        self.updated: list[tuple[str, FunctionChanges]] = []
        self.ensured: list[str] = []
        self.status = "active"
        # what a fleet that knows its capacity and start bound answers (None: the settings')
        self.capacity_of: int | None = None
        self.start_bound_s: float | None = None
        self.work_budget: int | None = None

    def ensure(self, model: Model) -> FunctionRecord:
        self.ensured.append(model.name)
        name = function_name("sd", model.name)
        return FunctionRecord(name=name, model=model.name, status=self.status, created_at=0)

    def invoke(self, record: FunctionRecord, payload: dict[str, Any]) -> None:
        self.invocations.append((record.model, payload))

    def delete(self, model_name: str) -> None:
        self.deleted.append(model_name)

    def update(self, model_name: str, changes: FunctionChanges) -> FunctionRecord:
        self.updated.append((model_name, changes))
        name = function_name("sd", model_name)
        return FunctionRecord(name=name, model=model_name, status=self.status, created_at=0)

    def list(self) -> list[FunctionRecord]:
        return []

    def delete_all(self) -> list[str]:
        self.deleted.append("*")
        return []

    def capacity(self, model_name: str) -> int | None:
        return self.capacity_of

    def start_timeout_s(self, model_name: str) -> float | None:
        return self.start_bound_s

    def max_task_work(self, model_name: str) -> int | None:
        return self.work_budget


class ScriptedEngine(Engine):
    """Calls on_step for each step like a pipeline, and draws a flat image."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.steps_run = 0
        self.on_step_hook: Any = None

    def load(self) -> None:
        pass

    def run(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback
    ) -> EngineResult:
        if self.fail:
            raise self.fail
        for step in range(1, params.steps + 1):
            self.steps_run += 1
            if self.on_step_hook:
                self.on_step_hook(step)
            if on_step(StepInfo(step, params.steps, 0, 1, 0.01 * step)):
                return EngineResult([], [], {}, interrupted=True)
        images = [Image.new("RGB", (8, 8), (255, 0, 0)) for _ in range(params.image_count)]
        texts = [f"{params.prompt}\nSteps: {params.steps}"] * len(images)
        return EngineResult(images, texts, {"seed": params.seed})


class ScriptedCensor(Censor):
    """Scores the test chooses: `next_scores` for the next call, else 0 for each picture."""

    name = "scripted"

    def __init__(self) -> None:
        self.next_scores: list[list[float]] = []
        self.judged: list[int] = []  # pictures per call

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        self.judged.append(len(images))
        return self.next_scores.pop(0) if self.next_scores else [0.0] * len(images)


@pytest.fixture
def svc(tmp_path: Path) -> Services:
    settings = Settings(data_dir=tmp_path, max_concurrency=2, max_per_model=1, requeue_delay_s=0)
    db = Database(tmp_path / "state.db")
    clock = Clock()
    services = Services(
        settings=settings,
        tasks=SqliteTaskStore(db),
        models=SqliteModelStore(db),
        functions=SqliteFunctionStore(db),
        slots=SqliteSlotStore(db),
        queue=SqliteQueue(db, "tasks"),
        blobs=FileBlobStore(tmp_path, "http://127.0.0.1:1"),
        fleet=RecordingFleet(),
        users=SqliteUserStore(db),
        metrics=PrometheusMetrics(tmp_path / "metrics"),
        tracing=LogTracing(),
        clock=clock,
        ids=IdFactory(),
        censor=ScriptedCensor(),
    )
    for name in ("demo", "other"):
        services.models.create(
            Model(
                name=name,
                status=ModelStatus.UNLOADED,
                sha256="0" * 64,
                size=1,
                key=f"models/checkpoint/{name}/x",
                registered_at=0,
                modified_at=0,
            )
        )
    return services


def png(color: tuple[int, int, int] = (0, 0, 255)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


def dispatched(svc: Services, **params: Any) -> tuple[str, Lease]:
    """Submit a txt2img task (prompt "p", 3 steps unless `params` say otherwise) and dispatch it;
    returns its id and the lease control handed to the (recording) fleet."""
    fields = {"kind": TaskKind.TXT2IMG, "prompt": "p", "steps": 3, **params}
    task = submit_task(svc, GenerationParams(**fields), None, [])
    dispatch_task(svc, task.task_id)
    _, payload = svc.fleet.invocations[-1]  # type: ignore[attr-defined]
    return task.task_id, Lease.model_validate(payload["lease"])
