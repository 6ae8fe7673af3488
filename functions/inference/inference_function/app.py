"""The inference function: serves one checkpoint (SD_MODEL_NAME), loaded once and kept warm.
The event is what control sends: {"taskId": ..., "lease": {...}}; or {"warmup": true}, which
only loads the checkpoint (the local runtime sends it when a function starts). The same image
serves SageMaker's container contract too: `inference_function.serve` hands its invocations to
`handle`."""

from __future__ import annotations

import logging
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from sdcore.adapters.xray import traced
from sdcore.composition import get_services, observed
from sdcore.domain.models import Lease
from sdcore.engine import threads
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.errors import NotFoundError
from sdcore.ports import Engine
from sdcore.settings import Settings
from sdcore.usecases.inference import abandon_task, run_task
from sdcore.usecases.model_cache import load_engine

logger = Logger(service="inference")
# the shared package's lines in this JSON format, with the keys of the handling (its task id)
logging.getLogger("sdcore")
copy_config_to_registered_loggers(source_logger=logger, include={"sdcore"})
_engine: Engine | None = None
_loaded: str | None = None  # the sha256 of the version `_engine` holds


def engine() -> Engine:
    """The checkpoint's engine, loaded once per execution environment, and again when the
    model was updated: a task that is running finishes on the version it started with, the
    next one gets the new version (one read of the model record per task tells)."""
    global _engine, _loaded
    svc = get_services()
    name = svc.settings.model_name
    current = svc.models.get(name).sha256
    if _engine is None or _loaded != current:
        _engine = None  # let the old weights go before the new ones load
        _share_cores(svc.settings)
        try:
            _engine = load_engine(svc, name, DiffusersEngine)
        except NotFoundError:
            # its file went away under us: updated again while it was being fetched
            _engine = load_engine(svc, name, DiffusersEngine)
        if _loaded is not None and _loaded != current:
            logger.info("reloaded updated model", extra={"model": name, "sha256": current})
        _loaded = getattr(_engine, "model_hash", current)
    return _engine


def _share_cores(settings: Settings) -> None:
    """On the local stack the workers of every checkpoint share one machine: each run takes
    its share of the cores by the invocations running now (see sdcore.engine.threads). On AWS
    an execution environment runs one task: its threads stay as they are."""
    if settings.backend == "local":
        # imported here: a Lambda function never loads the local adapters
        from sdcore.adapters.local.runtime import RunningInvocations

        threads.configure(RunningInvocations(settings.data_dir).count)


@logger.inject_lambda_context(clear_state=True)
@traced("inference")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event)


@observed("inference")
def handle(event: dict[str, Any]) -> dict[str, Any]:
    """One event, from either entry point: Lambda's handler or SageMaker's `/invocations`
    (`inference_function.serve`)."""
    if event.get("warmup"):
        engine()  # a failure is reported by the first task, which tries again
        return {"warm": True}
    svc = get_services()
    # the load below is this task's too (its span and lines carry the id)
    svc.tracing.about(event["taskId"], svc.settings.model_name)
    lease = Lease.model_validate(event["lease"]) if event.get("lease") else None
    try:
        loaded = engine()
    except Exception as exc:
        logger.exception("model failed to load", extra={"taskId": event["taskId"]})
        status = abandon_task(svc, event["taskId"], lease, f"model failed to load: {exc}")
        return {"taskId": event["taskId"], "status": status.value}
    threads.fit()  # this task's share of the cores, from its start (local stack)
    status = run_task(svc, loaded, event["taskId"], lease)
    return {"taskId": event["taskId"], "status": status.value}
