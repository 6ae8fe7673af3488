"""The dependencies every use case takes, built once by `sdcore.composition`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdcore.clock import Clock, IdFactory
from sdcore.ports import (
    BlobStore,
    FunctionStore,
    ModelStore,
    Queue,
    SlotStore,
    TaskStore,
    UserStore,
    WorkerFleet,
)
from sdcore.ports.assistant import ChatModel, Translator
from sdcore.ports.censor import Censor
from sdcore.ports.metrics import Metrics
from sdcore.ports.parking import ParkedTasks
from sdcore.ports.templates import BatchStore, TemplateStore
from sdcore.ports.tracing import Tracing
from sdcore.settings import Settings


@dataclass
class Services:
    settings: Settings
    tasks: TaskStore
    models: ModelStore
    functions: FunctionStore
    slots: SlotStore
    queue: Queue
    blobs: BlobStore
    fleet: WorkerFleet
    clock: Clock
    ids: IdFactory
    users: UserStore
    # counters, distributions and gauges (sdcore.metric_names), recorded by the use cases
    metrics: Metrics
    # what a handling is about (the task id on its trace and log lines) and its spans
    tracing: Tracing
    # a Powertools idempotency persistence layer (DynamoDB on AWS, SQLite locally)
    idempotency: Any = None
    # model jobs (verify an upload, import from a URL), consumed by the admin function
    jobs: Queue | None = None
    # judges decoded pictures (SD_CENSOR); built lazily: only the inference function loads it
    censor: Censor | None = None
    # users' and shared templates, and the batches that ran them
    templates: TemplateStore | None = None
    batches: BatchStore | None = None
    # the prompt assistant's LLM (SD_LLM) and its offline translator (Chinese to English)
    chat: ChatModel | None = None
    translator: Translator | None = None
    # tasks over a cap, woken when a slot of theirs frees (usecases/control.py); None (services
    # a test builds by hand): such a task is re-queued with a back-off instead
    parked: ParkedTasks | None = None
