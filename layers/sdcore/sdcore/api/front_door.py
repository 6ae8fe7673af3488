"""The local front door's two-step sync wait (sdlocal/server.py): a function process serves one
request at a time, as a Lambda environment does, so a sync request must not hold one while its
task runs. The front door asks the function to hand the wait over (it answers 202 with the task
and the seconds to wait), waits in its event loop, then replays the request, which renders the
answer without submitting or waiting again. AWS ignores the headers: API Gateway cannot wait
outside a function."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.composition import get_services
from sdcore.usecases.tasks import deferrable_waits

DEFER_HEADER = "x-sd-defer-wait"
RESUME_HEADER = "x-sd-resume-task"
# what the function answers (sdcore.api.errors writes them)
WAIT_TASK_HEADER = "x-sd-wait-task"
WAIT_SECONDS_HEADER = "x-sd-wait-seconds"


@contextmanager
def front_door_waits(router: APIGatewayRouter) -> Iterator[None]:
    """Within: a sync wait is handed to the local front door when it asked for that."""
    if get_services().settings.backend != "local":
        yield
        return
    headers = {k.lower(): v for k, v in (router.current_event.headers or {}).items()}
    with deferrable_waits(headers.get(DEFER_HEADER) == "1", headers.get(RESUME_HEADER)):
        yield
