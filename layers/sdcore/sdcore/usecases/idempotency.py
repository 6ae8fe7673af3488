"""`Idempotency-Key` on submits, with Powertools idempotency over the backend's persistence
layer (DynamoDB on AWS, SQLite locally): a repeated submit returns the first task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyValidationError

from sdcore.errors import ConflictError
from sdcore.services import Services

CONFIG = IdempotencyConfig(
    event_key_jmespath="[user, key]",
    payload_validation_jmespath="body",
    expires_after_seconds=24 * 3600,
    raise_on_no_idempotency_key=True,
)


def submit_once(
    svc: Services, user: str, key: str, body: dict[str, Any], submit: Callable[[], str]
) -> str:
    """Run `submit` (which returns a task id) once per (user, key); later calls with the same
    key return that task id. The same key with another body is a 409."""

    @idempotent_function(
        data_keyword_argument="request", persistence_store=svc.idempotency, config=CONFIG
    )
    def _submit(request: dict[str, Any]) -> dict[str, str]:
        return {"taskId": submit()}

    try:
        return _submit(request={"user": user, "key": key, "body": body})["taskId"]
    except IdempotencyValidationError:
        raise ConflictError("Idempotency-Key was used with a different request body") from None
