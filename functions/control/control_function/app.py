"""The control function: consumes the task queue (SQS, partial batch failures) and routes each
task to its checkpoint's inference function within the caps; delivers webhooks; ends the tasks of
dead letters and of failed inference invocations (Lambda's failure destination, SageMaker
endpoints' SNS topics); a schedule event runs the reaper; the stack's deletion (a custom
resource) deletes the inference functions it created."""

from __future__ import annotations

import json
import logging
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes import SNSEvent
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from control_function.stack import handle_stack_event, is_stack_event
from sdcore.adapters.xray import traced
from sdcore.api.responses import TaskResult
from sdcore.composition import get_services, observed
from sdcore.domain.models import Task
from sdcore.services import Services
from sdcore.usecases.control import (
    dispatch_task,
    end_dead_lettered,
    end_endpoint_invocation,
    end_failed_invocation,
    reap_lost,
)
from sdcore.usecases.measure import record_load
from sdcore.usecases.model_jobs import job_dead_lettered, reconcile_loaded, sweep_uploads
from sdcore.usecases.notify import deliver_webhook
from sdcore.usecases.tasks import outcome

logger = Logger(service="control")
# the shared package's lines in this JSON format, with the keys of the handling (its task id)
logging.getLogger("sdcore")
copy_config_to_registered_loggers(source_logger=logger, include={"sdcore"})
processor = BatchProcessor(event_type=EventType.SQS)


def _result(svc: Services, task: Task) -> dict[str, Any]:
    """A webhook's body: the task's result, as GET /tasks/{taskId}/result answers it."""
    return TaskResult.of(outcome(svc, task)).model_dump(mode="json")


def _dead_letter(record: SQSRecord) -> bool:
    """Whether the record comes from a dead-letter queue (by its queue's name)."""
    names = {n.strip() for n in get_services().settings.dead_letter_queues.split(",") if n}
    return record.event_source_arn.rsplit(":", 1)[-1] in names


def record_handler(record: SQSRecord) -> str:
    # a batch holds up to 10 tasks: each record is a handling (and a subsegment) of its own
    tracing = get_services().tracing
    tracing.begin()
    with tracing.span("record"):
        return _handle_record(record)


def _handle_record(record: SQSRecord) -> str:
    body = json.loads(record.body)
    if "requestPayload" in body:  # an inference function's failed invocation (its destination)
        outcome = end_failed_invocation(get_services(), body)
        logger.info("failed invocation", extra={"outcome": outcome})
        return outcome
    if _dead_letter(record):
        receives = int(record.attributes.approximate_receive_count or 0)
        if "job" in body:
            outcome = job_dead_lettered(get_services(), body, receives)
        else:
            outcome = end_dead_lettered(get_services(), body, receives)
        logger.warning("dead letter", extra={"deadLettered": 1, "outcome": outcome,
                                             "body": sorted(body)})  # fmt: skip
        return outcome
    if "webhook" in body:  # a webhook delivery (attempt n) of a task that ended
        svc = get_services()
        attempt = int(body.get("attempt", 1))
        outcome = deliver_webhook(svc, body["webhook"], attempt, lambda t: _result(svc, t))
        logger.info("webhook", extra={"taskId": body["webhook"], "outcome": outcome})
        return outcome
    task_id = body["taskId"]
    dispatched = dispatch_task(get_services(), task_id, int(body.get("waits", 0)))
    logger.info("dispatch", extra={"taskId": task_id, "outcome": dispatched.value})
    return dispatched.value


@logger.inject_lambda_context(clear_state=True)
@traced("control")
@observed("control")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if is_stack_event(event):  # CloudFormation's FleetCleanup: the stack is being deleted
        return handle_stack_event(get_services(), event)
    if event.get("source") == "aws.events":  # the schedule
        svc = get_services()
        return {
            "reaped": reap_lost(svc),  # tasks whose worker was lost
            "swept": sweep_uploads(svc),  # abandoned uploads and dead model jobs
            "unloaded": reconcile_loaded(svc),  # models no worker holds any more
            "load": record_load(svc),  # the gauges: slots, waiting and running tasks
        }
    records = event.get("Records") or [{}]
    if records[0].get("EventSource") == "aws:sns":  # a SageMaker endpoint's invocation report
        return _endpoint_reports(SNSEvent(event))
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )


def _endpoint_reports(event: SNSEvent) -> dict[str, Any]:
    """SNS delivers one message per invocation; a failure here is retried by SNS."""
    outcomes = []
    for record in event.records:
        notification = json.loads(record.sns.message)
        outcome = end_endpoint_invocation(get_services(), notification)
        logger.info("endpoint invocation", extra={"taskId": notification.get("inferenceId"),
                                                  "outcome": outcome})  # fmt: skip
        outcomes.append(outcome)
    return {"outcomes": outcomes}
