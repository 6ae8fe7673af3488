"""The admin function: model management over HTTP (API Gateway REST proxy events), and the model
jobs (verify an upload, import from a URL) from its job queue (SQS, partial batch failures): a
multi-GB checkpoint takes longer to read back than API Gateway waits (29 s). Invoked directly
with `{"bootstrap": "admin"}` it creates a new deployment's first admin key."""

from __future__ import annotations

import json
import logging
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from sdcore.adapters.xray import traced
from sdcore.api.auth import auth_middleware
from sdcore.api.errors import register_error_handlers
from sdcore.api.routes import admin
from sdcore.composition import get_services, observed
from sdcore.errors import DomainError
from sdcore.usecases.auth import bootstrap_admin
from sdcore.usecases.model_jobs import run_job

logger = Logger(service="admin")
# the shared package's lines in this JSON format, with the keys of the handling
logging.getLogger("sdcore")
copy_config_to_registered_loggers(source_logger=logger, include={"sdcore"})
app = APIGatewayRestResolver(enable_validation=True)
app.use(middlewares=[auth_middleware])
app.include_router(admin.router)
register_error_handlers(app)
processor = BatchProcessor(event_type=EventType.SQS)


def job_handler(record: SQSRecord) -> str:
    body = json.loads(record.body)
    outcome = run_job(get_services(), body)
    logger.info("model job", extra={"job": body.get("job"), "model": body.get("name"),
                                    "outcome": outcome})  # fmt: skip
    return outcome


# the request's id is the lines' correlation_id; X-Ray only in Lambda (no daemon elsewhere)
@logger.inject_lambda_context(
    clear_state=True, correlation_id_path=correlation_paths.API_GATEWAY_REST
)
@traced("admin")
@observed("admin")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "Records" in event:  # the job queue
        return process_partial_response(
            event=event, record_handler=job_handler, processor=processor, context=context
        )
    if "bootstrap" in event:  # `aws lambda invoke`: only those who may invoke the function
        return _bootstrap(event)
    return app.resolve(event, context)


def _bootstrap(event: dict[str, Any]) -> dict[str, Any]:
    name = str(event.get("name") or "admin")
    if event["bootstrap"] != "admin":
        return {"error": 'the only bootstrap is {"bootstrap": "admin", "name"?: "..."}'}
    try:
        key = bootstrap_admin(get_services(), name)
    except DomainError as e:
        return {"error": str(e)}
    logger.info("created the first admin %s", name)
    return {"user": name, "role": "admin", "apiKey": key}
