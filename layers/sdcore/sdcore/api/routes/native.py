"""The native API: submit generation tasks (sync or async), and ask about them by taskId."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.front_door import front_door_waits
from sdcore.api.removal_schemas import RemoveBody
from sdcore.api.responses import (
    CancelResult,
    Health,
    ModelListing,
    Starting,
    TaskAccepted,
    TaskList,
    TaskProgress,
    TaskResult,
    TaskSummary,
)
from sdcore.api.routes.common import (
    GENERATION,
    MODELS,
    TASKS,
    documented,
    header,
    json_body,
    principal,
)
from sdcore.api.schemas import ExtrasBody, Img2ImgBody, Txt2ImgBody
from sdcore.composition import get_services
from sdcore.domain.models import ModelType, TaskStatus
from sdcore.errors import InvalidInputError
from sdcore.usecases import models as model_cases
from sdcore.usecases import styles as style_cases
from sdcore.usecases import tasks as task_cases
from sdcore.usecases.submit import Idempotency

router = APIGatewayRouter()

SUBMIT_RESPONSES = {
    200: {
        "description": "Sync: the task ended (see `status` and `error`).",
        **json_body(TaskResult),
    },
    202: {
        "description": "Async, or a sync wait that ran out: poll /tasks/{taskId}/result.",
        **json_body(TaskAccepted),
    },
}
REQUEST_TYPE = (
    "Header `Request-Type: sync` (the default) waits for the images and answers 200 with the "
    "task's result; `async` answers 202 with the taskId at once. `Idempotency-Key` (or a client "
    "`taskId`) makes a repeated submit return the first task."
)


def _answer(
    body: Txt2ImgBody | Img2ImgBody | ExtrasBody | RemoveBody,
) -> Response[TaskResult | TaskAccepted]:
    request_type = (header(router, "Request-Type") or "sync").lower()
    if request_type not in ("sync", "async"):
        raise InvalidInputError("Request-Type", "must be 'sync' or 'async'")
    svc = get_services()
    key = header(router, "Idempotency-Key")
    idempotency = Idempotency(key, body.model_dump(mode="json")) if key is not None else None
    wait_s = svc.settings.sync_timeout_s if request_type == "sync" else 0
    styles = [] if isinstance(body, ExtrasBody) else body.styles
    with front_door_waits(router):
        done = style_cases.submit_styled(
            svc, principal(router), body.to_submission(), styles, idempotency, wait_s
        )
    if request_type == "async" or not done.task.status.terminal:
        return Response(202, content_types.APPLICATION_JSON, TaskAccepted.of(done.task))
    # Every terminal state answers 200 with the body of /tasks/{taskId}/result; `status` and
    # `error` say how it ended.
    return Response(200, content_types.APPLICATION_JSON, TaskResult.of(done))


def _owner() -> str | None:
    who = principal(router)
    return None if who.is_admin else who.user


def _caller() -> str:
    return principal(router).user


@documented(router.get, "/health", tags=["health"], responses={503: {"description": "starting"}})
def health() -> Response[Health | Starting]:
    """Readiness (no key needed): 503 while the default model's first version comes in."""
    waiting = model_cases.not_ready(get_services())
    if waiting is not None:
        return Response(503, content_types.APPLICATION_JSON, Starting(detail=waiting))
    return Response(200, content_types.APPLICATION_JSON, Health())


@documented(router.post, "/txt2img", tags=[GENERATION], responses=SUBMIT_RESPONSES)
def txt2img(body: Txt2ImgBody) -> Response[TaskResult | TaskAccepted]:
    """Text to image.

    The webui's txt2img fields (hires fix included) plus `stable_diffusion_model` and `sd_vae`.
    Header Request-Type: sync (the default) or async; Idempotency-Key makes a repeat safe.
    """
    return _answer(body)


@documented(router.post, "/img2img", tags=[GENERATION], responses=SUBMIT_RESPONSES)
def img2img(body: Img2ImgBody) -> Response[TaskResult | TaskAccepted]:
    """Image to image, or inpainting when a mask is given.

    Images as base64, data URLs, object keys of earlier inputs or results, or http(s) URLs.
    Header Request-Type: sync (the default) or async.
    """
    return _answer(body)


@documented(router.post, "/extra_images", tags=[GENERATION], responses=SUBMIT_RESPONSES)
def extra_images(body: ExtrasBody) -> Response[TaskResult | TaskAccepted]:
    """Upscale one image (resamplers or a registered upscaler model).

    Header Request-Type: sync (the default) or async.
    """
    return _answer(body)


@documented(router.post, "/edits/remove", tags=[GENERATION], responses=SUBMIT_RESPONSES)
def edits_remove(body: RemoveBody) -> Response[TaskResult | TaskAccepted]:
    """Remove people (or any class a segmenter knows) from a photo and paint the place in.

    The result's images are the edited photo, then the mask used; `info` has the segmenter,
    the target and `maskCoverage` (0: nothing found, the photo comes back as it was).
    Header Request-Type: sync (the default) or async.
    """
    return _answer(body)


@documented(router.get, "/tasks", tags=[TASKS])
def list_tasks(
    status: Annotated[TaskStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> TaskList:
    """The caller's tasks, newest first.

    An opaque `cursor` from the previous page pages on; `status` keeps one status only.
    """
    tasks, next_cursor = task_cases.list_tasks(
        get_services(), principal(router).user, status, limit, cursor
    )
    return TaskList(tasks=[TaskSummary.of(t) for t in tasks], cursor=next_cursor)


@documented(router.get, "/tasks/<taskId>/result", tags=[TASKS])
def task_result(taskId: str) -> TaskResult:  # noqa: N803 (path parameter name)
    """A task's status, images, parameters and timings.

    Images are object keys with expiring URLs, never base64.
    """
    return TaskResult.of(task_cases.get_outcome(get_services(), taskId, _owner(), _caller()))


@documented(router.get, "/tasks/<taskId>/progress", tags=[TASKS])
def task_progress(taskId: str) -> TaskProgress:  # noqa: N803
    """How far a task is: progress 0..1, seconds left, the step and job it is on."""
    return TaskProgress.of(task_cases.get_task(get_services(), taskId, _owner(), _caller()))


@documented(router.post, "/tasks/<taskId>/cancellation", tags=[TASKS])
def task_cancellation(taskId: str) -> CancelResult:  # noqa: N803
    """Cancel a task (idempotent).

    A queued task never runs; a running one stops at its next denoising step.
    """
    task = task_cases.request_cancel(get_services(), taskId, _owner(), _caller())
    return CancelResult(taskId=task.public_id, status=task.status)


@documented(router.get, "/models", tags=[MODELS])
def models(type: ModelType | None = None) -> list[ModelListing]:  # noqa: A002 (wire name)
    """Checkpoints and other models (or those of one `type`), with their status."""
    return [ModelListing.of(m) for m in model_cases.list_models(get_services(), type)]
