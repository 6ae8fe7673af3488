"""The inference function: serves one checkpoint (SD_MODEL_NAME), loaded once and kept warm.
The event is what control sends: {"taskId": ..., "lease": {...}}."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from sdcore.composition import get_services
from sdcore.domain.models import Lease
from sdcore.inference.loading import load_engine
from sdcore.inference.port import Engine
from sdcore.usecases.inference import abandon_task, run_task

logger = Logger(service="inference")
_engine: Engine | None = None


def engine() -> Engine:
    global _engine
    if _engine is None:
        svc = get_services()
        _engine = load_engine(svc, svc.settings.model_name)
    return _engine


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    svc = get_services()
    lease = Lease.model_validate(event["lease"]) if event.get("lease") else None
    try:
        loaded = engine()
    except Exception as exc:
        logger.exception("model failed to load", extra={"taskId": event["taskId"]})
        status = abandon_task(svc, event["taskId"], lease, f"model failed to load: {exc}")
        return {"taskId": event["taskId"], "status": status.value}
    status = run_task(svc, loaded, event["taskId"], lease)
    return {"taskId": event["taskId"], "status": status.value}
