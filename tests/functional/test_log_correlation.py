"""One task followed through its log lines: the proxy that records it, control that dispatches
it and the inference function that loads its checkpoint and runs it each write JSON lines, and
from the moment the task id is known every line of that handling carries it (and the model),
the shared package's lines (`sdcore.*`) included. The local backend, handlers called in process;
the engine is a stand-in (what is tested is the lines, not the pictures)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import inference_function.app as inference_app
from control_function.app import lambda_handler as control
from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.composition import get_services
from sdcore.domain.models import FunctionRecord, Model, ModelFormat, ModelStatus
from sdcore.ports import Engine, EngineInputs, EngineResult, StepCallback
from tests.functional.events import Context, api, sqs

LOGGERS = ("proxy", "control", "inference", "sdcore")


class Flat(Engine):
    """An engine with the diffusers engine's constructor that paints one grey picture."""

    model_hash = "0" * 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def load(self) -> None:
        logging.getLogger("sdcore.engine.stand_in").info("weights loaded")

    def run(self, params, inputs: EngineInputs, on_step: StepCallback) -> EngineResult:  # type: ignore[no-untyped-def]
        grey = Image.fromarray(np.full((8, 8, 3), 128, np.uint8))
        return EngineResult([grey], ["x"], {})


class Lines(logging.Handler):
    """Each record, as its logger's own JSON formatter writes it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        formatter = logging.getLogger(record.name.split(".")[0]).handlers[0].formatter
        assert formatter is not None
        self.lines.append(json.loads(formatter.format(record)))

    def take(self) -> list[dict[str, Any]]:
        lines, self.lines = self.lines, []
        return lines


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def demo(local_env: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A registered checkpoint whose file is in the store, and a fleet that records what
    control hands it (no worker process)."""
    monkeypatch.setenv("SD_MODEL_NAME", "demo")
    composition.reset()
    svc = get_services()
    now = svc.clock.now()
    svc.blobs.put("models/checkpoint/demo/x", b"weights", "application/octet-stream")
    svc.models.create(Model(name="demo", status=ModelStatus.UNLOADED, sha256="0" * 64, size=7,
                            key="models/checkpoint/demo/x", format=ModelFormat.SAFETENSORS,
                            registered_at=now, modified_at=now))  # fmt: skip
    invoked: list[dict[str, Any]] = []
    record = FunctionRecord(name="sd-demo", model="demo", status="active", created_at=now)
    monkeypatch.setattr(svc.fleet, "ensure", lambda model: record)
    monkeypatch.setattr(svc.fleet, "invoke", lambda record, payload: invoked.append(payload))
    monkeypatch.setattr(inference_app, "DiffusersEngine", Flat)
    monkeypatch.setattr(inference_app, "_engine", None)
    return invoked


def test_every_line_of_a_tasks_handling_carries_its_id(
    demo: list[dict[str, Any]], lines: Lines
) -> None:
    # Given a task submitted through the proxy
    resp = proxy(api("POST", "/txt2img", {"prompt": "x", "steps": 1}, {"Request-Type": "async"}),
                 Context())  # fmt: skip
    assert resp["statusCode"] == 202, resp["body"]
    task_id = json.loads(resp["body"])["taskId"]
    logging.getLogger("proxy").info("after the submit")  # a line of the same handling
    submitted = lines.take()
    # the proxy's lines carry the request's id as their correlation id
    assert submitted[-1]["correlation_id"] == api("GET", "/")["requestContext"]["requestId"]

    # When control dispatches it and the inference function runs it
    [message] = get_services().queue.receive(1, visibility_s=60)
    assert control(sqs(message.body), Context()) == {"batchItemFailures": []}
    dispatched = lines.take()
    [payload] = demo
    assert inference_app.lambda_handler(payload, Context())["status"] == "succeeded"
    ran = lines.take()

    # Then every line from the moment the id was known carries it, and the model
    assert submitted[-1]["taskId"] == task_id and submitted[-1]["model"] == "demo"
    for line in dispatched + ran:
        assert (line.get("taskId"), line.get("model")) == (task_id, "demo"), line
    messages = [line["message"] for line in dispatched + ran]
    # control's own line; the load's lines (the shared package's and the engine's) in the
    # inference function
    assert "dispatch" in messages and "weights loaded" in messages, messages
    assert any(m.startswith("loaded model demo") for m in messages), messages
    spans = [line["span"] for line in dispatched + ran if "span" in line]
    assert spans == ["record", "model load", "pipeline"]

    # and the next handling does not inherit them
    proxy(api("GET", "/health"), Context())
    logging.getLogger("proxy").info("another request")
    assert "taskId" not in lines.take()[-1]
