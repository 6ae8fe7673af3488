"""Run the model jobs waiting in the job queue through the admin handler, as the SQS event source
(AWS) or the local stack's job loop would."""

from __future__ import annotations

import json
from typing import Any

from sdcore.composition import get_services
from tests.functional.events import Context, sqs


def run_model_jobs(limit: int = 20) -> list[dict[str, Any]]:
    """Deliver queued model jobs to the admin function one at a time until none is left;
    returns the bodies it ran. A job the handler reports failed stays queued (not deleted)."""
    from admin_function.app import lambda_handler as admin

    queue = get_services().jobs
    assert queue is not None
    ran = []
    for _ in range(limit):
        messages = queue.receive(1, visibility_s=60)
        if not messages:
            return ran
        [message] = messages
        result = admin(sqs(message.body), Context())
        assert result["batchItemFailures"] == [], result
        queue.delete(message.receipt)
        ran.append(json.loads(json.dumps(message.body)))
    raise AssertionError(f"more than {limit} model jobs")
