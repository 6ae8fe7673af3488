"""CloudFormation's custom resource FleetCleanup (template.yaml): when the stack is deleted,
control deletes the inference functions and endpoints it created for it, which CloudFormation
does not know.

CloudFormation waits for the answer at the request's presigned ResponseURL (for up to an hour),
so one is sent whatever happens: SUCCESS, or FAILED with the reason (the stack's deletion then
stops, and deleting it again retries)."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from sdcore.services import Services
from sdcore.usecases.functions import delete_all_functions

logger = logging.getLogger(__name__)

# CloudFormation shows at most this much of a reason
REASON_LIMIT = 1000


def is_stack_event(event: dict[str, Any]) -> bool:
    return "RequestType" in event and "ResponseURL" in event


def _physical_id(event: dict[str, Any]) -> str:
    # the same id on every update: a new one would make CloudFormation delete the "old" resource,
    # and with it every function
    stack = str(event.get("StackId", "")).split("/")[1:2] or ["stack"]
    return str(event.get("PhysicalResourceId") or f"{stack[0]}-{event['LogicalResourceId']}")


def handle_stack_event(svc: Services, event: dict[str, Any]) -> dict[str, Any]:
    """Act on Create/Update (nothing to do: functions are made on first use) or Delete (delete
    them all), then answer CloudFormation. Returns the answer sent."""
    status, reason, data = "SUCCESS", "", {}
    try:
        if event["RequestType"] == "Delete":
            deleted = delete_all_functions(svc)
            data = {"Deleted": len(deleted)}
            reason = f"deleted {len(deleted)} inference function(s)"
            logger.info("stack deleted: deleted inference functions %s", deleted)
    except Exception as e:  # the answer must go out: CloudFormation would wait an hour
        logger.exception("custom resource %s failed", event.get("RequestType"))
        status, reason = "FAILED", f"{type(e).__name__}: {e}"
    answer = {
        "Status": status,
        "Reason": reason[:REASON_LIMIT] or "ok",
        "PhysicalResourceId": _physical_id(event),
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "Data": data,
    }
    # The URL is presigned for a PUT with no content type: send none, or S3 refuses the signature.
    response = httpx.put(
        event["ResponseURL"],
        content=json.dumps(answer).encode(),
        headers={"Content-Type": ""},
        timeout=30,
    )
    response.raise_for_status()
    return answer
