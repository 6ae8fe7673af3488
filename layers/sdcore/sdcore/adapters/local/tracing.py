"""Traces on the local stack: no X-Ray here, so a span is a JSON log line (`sdcore.trace`, at
INFO: seen with POWERTOOLS_LOG_LEVEL=INFO) with its name, duration and outcome, carrying the
task id and model like every other log line of the handling (Powertools' thread-safe keys)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools.logging.formatter import clear_context_keys, set_context_keys

from sdcore.ports.tracing import MODEL_KEY, TASK_KEY, Tracing

log = logging.getLogger("sdcore.trace")


class LogTracing(Tracing):
    def begin(self) -> None:
        clear_context_keys()

    def about(self, task_id: str, model: str | None = None) -> None:
        keys = {TASK_KEY: task_id} if model is None else {TASK_KEY: task_id, MODEL_KEY: model}
        set_context_keys(**keys)  # type: ignore[arg-type]

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            seconds = round(time.perf_counter() - started, 4)
            log.info("span %s", name, extra={"span": name, "seconds": seconds, "outcome": outcome})
