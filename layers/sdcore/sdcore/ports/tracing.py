"""The tracing port: what a handling is about (the task, its checkpoint) and how long its
expensive parts took, said by the use cases without knowing where it goes.

Two adapters: X-Ray through Powertools' Tracer on AWS (`sdcore.adapters.xray`: the task
id and model as annotations, a subsegment per span), and the log locally
(`sdcore.adapters.local.tracing`: a JSON line per span). Both put the task id and model on every
later log line of the handling (Powertools' thread-safe log keys), so one task can be followed
through the proxy, control and the inference function by its id."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager

# the names the task id and model go by, in trace annotations and log lines alike
TASK_KEY = "taskId"
MODEL_KEY = "model"


class Tracing(ABC):
    @abstractmethod
    def begin(self) -> None:
        """A new handling starts (an invocation, a record of a batch): forget what the last one
        was about."""

    @abstractmethod
    def about(self, task_id: str, model: str | None = None) -> None:
        """The handling at hand is about this task (of this checkpoint): annotate the trace and
        put both on every later log line of it, until the next `begin`."""

    @abstractmethod
    def span(self, name: str) -> AbstractContextManager[None]:
        """Time an expensive part (`model load`, `pipeline`, `verify upload`) as a span of
        its own; an exception raised inside is recorded with it and goes on."""
