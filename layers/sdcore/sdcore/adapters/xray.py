"""X-Ray through Powertools' Tracer: the task id and model as annotations of the handling's
(sub)segment, so `annotation.taskId = "<id>"` finds the proxy's, control's and the inference
function's traces of one task; a subsegment (`## <name>`) per span; `traced(<function>)` for
the functions' handlers.

Tracing is on only where Powertools would turn it on: in a Lambda function, unless
POWERTOOLS_TRACE_DISABLED is true. Elsewhere (the local stack, tests, a SageMaker container: no
X-Ray daemon) no Tracer is made and the X-Ray SDK is not even imported: outside Lambda its
import builds a boto3 client for sampling rules, half a second of every process's start.
Annotations and spans are then no-ops; the log keys remain."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from aws_lambda_powertools import Tracer
from aws_lambda_powertools.logging.formatter import clear_context_keys, set_context_keys

from sdcore.ports.tracing import MODEL_KEY, TASK_KEY, Tracing

Handler = TypeVar("Handler", bound=Callable[..., Any])


def tracing_on() -> bool:
    """Powertools' own rule: in Lambda (LAMBDA_TASK_ROOT), not SAM's local emulator, and not
    switched off."""
    off = os.getenv("POWERTOOLS_TRACE_DISABLED", "false").lower() in ("1", "true", "yes", "on")
    return bool(os.getenv("LAMBDA_TASK_ROOT")) and not os.getenv("AWS_SAM_LOCAL") and not off


def traced(function: str) -> Callable[[Handler], Handler]:
    """A function's handler as a traced segment (`## lambda_handler`), where tracing is on.
    Its response is never put in the trace: webui routes answer base64 images (a segment
    holds 64 KB) and the admin bootstrap an API key."""

    def decorate(handler: Handler) -> Handler:
        if not tracing_on():
            return handler
        tracer = Tracer(service=function)  # patches boto3 and httpx: their calls are subsegments
        return cast(Handler, tracer.capture_lambda_handler(handler, capture_response=False))

    return decorate


class XRayTracing(Tracing):
    def __init__(self) -> None:
        # a Tracer's settings are shared by every instance: those of the function's own
        self._tracer = Tracer() if tracing_on() else None

    def begin(self) -> None:
        clear_context_keys()

    def about(self, task_id: str, model: str | None = None) -> None:
        keys = {TASK_KEY: task_id} if model is None else {TASK_KEY: task_id, MODEL_KEY: model}
        if self._tracer is not None:
            for key, value in keys.items():
                self._tracer.put_annotation(key, value)
        # Powertools' thread-safe keys: on every Powertools log line of this thread
        set_context_keys(**keys)  # type: ignore[arg-type]

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        if self._tracer is None:
            yield
            return
        # the subsegment records an exception raised inside, which goes on
        with self._tracer.provider.in_subsegment(name=f"## {name}"):
            yield
