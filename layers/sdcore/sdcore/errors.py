"""Domain errors. Each maps to one HTTP status in `sdcore.api.errors`, the one error table."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a use case raises on purpose."""


class NotFoundError(DomainError):
    """The task, model or object does not exist (404)."""


class ConflictError(DomainError):
    """The thing exists but is in a state that forbids the operation (409)."""


class InvalidInputError(DomainError):
    """Input passed schema validation but is still unusable (422). `field` names the culprit;
    `also` the other fields that share the blame (a limit on their product)."""

    def __init__(self, field: str, message: str, also: tuple[str, ...] = ()) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.also = also


class OverCapError(DomainError):
    """A cap or quota is reached (429). `retry_after_s` says when to try again."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def over_active_limit(active: int, limit: int) -> str:
    """The message of the per-user quota on queued-or-running tasks."""
    return f"{active} tasks queued or running; the limit is {limit}"


class AuthError(DomainError):
    """No key, or a key that is wrong or revoked (401)."""


class ForbiddenError(DomainError):
    """A valid key without the role the route needs (403)."""


class StaleWriteError(DomainError):
    """A conditional write lost: the record was not in the expected state."""


class TaskTimeoutError(DomainError):
    """A task the caller waits on did not end in time (504); `task_id` says which to poll."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} is still running")
        self.task_id = task_id


class TaskFailedError(DomainError):
    """A task the caller waits on failed; the message is its reason (the webui API answers
    500, as the webui does for a generation that fails)."""


class WaitDeferred(DomainError):
    """A sync request's wait for its task, handed to the local front door: it waits in its
    event loop, not in a function process, then asks again to resume (see usecases.tasks)."""

    def __init__(self, task_id: str, wait_s: float) -> None:
        super().__init__(f"waiting for task {task_id}")
        self.task_id = task_id
        self.wait_s = wait_s


class LLMError(DomainError):
    """The prompt assistant's language model failed or answered nothing usable, after its
    retries (502)."""
