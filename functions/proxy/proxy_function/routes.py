"""The public API: submit generation tasks, and ask about them by taskId."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.auth import principal
from sdcore.api.errors import json_response
from sdcore.api.idempotency import submit_once
from sdcore.api.schemas import ExtrasBody, Img2ImgBody, Txt2ImgBody, wire_parameters
from sdcore.api.views import task_result
from sdcore.clock import iso
from sdcore.composition import get_services
from sdcore.domain.models import ModelType, Task, TaskStatus
from sdcore.errors import InvalidInputError
from sdcore.usecases import models as model_cases
from sdcore.usecases import tasks as task_cases
from sdcore.usecases.auth import Principal, check_queue_quota
from sdcore.usecases.prompts import check_prompts

router = APIGatewayRouter()


def header(name: str) -> str | None:
    for key, value in (router.current_event.headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def submit(
    body: Txt2ImgBody | Img2ImgBody | ExtrasBody, who: Principal, model: str | None = None
) -> Task:
    """Validate, apply the caller's limits and filters, and submit once (Idempotency-Key or a
    client taskId make repeats return the first task)."""
    svc = get_services()
    check_prompts(svc, body)
    params, images, mask = body.to_domain()

    def run() -> str:
        check_queue_quota(svc, who)
        task = task_cases.submit_task(
            svc,
            params,
            model or body.stable_diffusion_model,
            images,
            mask,
            owner=who.user,
            is_admin=who.is_admin,
            webhook=body.webhook,
            task_id=body.taskId,
            priority=body.priority,
        )
        return task.task_id

    key = header("Idempotency-Key")
    if key:
        if not 1 <= len(key) <= 255:
            raise InvalidInputError("Idempotency-Key", "1 to 255 characters")
        task_id = submit_once(svc, who.user, key, body.model_dump(mode="json"), run)
    else:
        task_id = run()
    return task_cases.get_task(svc, task_id)


def _answer(body: Txt2ImgBody | Img2ImgBody | ExtrasBody) -> Response[dict[str, Any]]:
    request_type = (header("Request-Type") or "sync").lower()
    if request_type not in ("sync", "async"):
        raise InvalidInputError("Request-Type", "must be 'sync' or 'async'")
    svc = get_services()
    task = submit(body, principal(router))
    if request_type == "async":
        return json_response(202, {"taskId": task.task_id, "status": task.status.value})
    task = task_cases.wait_for_task(svc, task.task_id, svc.settings.sync_timeout_s)
    if not task.status.terminal:  # outlasted the sync wait: the client polls the result
        return json_response(202, {"taskId": task.task_id, "status": task.status.value})
    # Every terminal state answers 200 with the same body as /tasks/{taskId}/result; `status`
    # and `error` say how it ended.
    return json_response(200, task_result(svc, task))


def _owner() -> str | None:
    who = principal(router)
    return None if who.is_admin else who.user


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@router.post("/txt2img")
def txt2img(body: Txt2ImgBody) -> Response[dict[str, Any]]:
    """Text to image. Header Request-Type: sync (default) or async."""
    return _answer(body)


@router.post("/img2img")
def img2img(body: Img2ImgBody) -> Response[dict[str, Any]]:
    """Image to image, or inpainting when a mask is given."""
    return _answer(body)


@router.post("/extra_images")
def extra_images(body: ExtrasBody) -> Response[dict[str, Any]]:
    """Upscale one image by resampling."""
    return _answer(body)


@router.get("/tasks")
def list_tasks(
    status: Annotated[TaskStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> dict[str, Any]:
    """The caller's tasks, newest first (an opaque cursor pages on)."""
    svc = get_services()
    who = principal(router)
    tasks, next_cursor = task_cases.list_tasks(svc, who.user, status, limit, cursor)
    return {
        "tasks": [
            {
                "taskId": t.task_id,
                "kind": t.kind.value,
                "status": t.status.value,
                "model": t.model,
                "prompt": t.params.prompt,
                "seed": t.info.get("seed", t.params.seed),
                "parameters": wire_parameters(t),
                "images": t.images,
                "md5": t.image_md5,
                "error": t.error,
                "timings": {
                    "createdAt": iso(t.created_at),
                    "startedAt": iso(t.started_at),
                    "finishedAt": iso(t.finished_at),
                },
            }
            for t in tasks
        ],
        "cursor": next_cursor,
    }


@router.get("/tasks/<taskId>/result")
def task_result_route(taskId: str) -> dict[str, Any]:  # noqa: N803 (path parameter name)
    """A task's status, images and timings."""
    svc = get_services()
    return task_result(svc, task_cases.get_task(svc, taskId, _owner()))


@router.get("/tasks/<taskId>/progress")
def task_progress(taskId: str) -> dict[str, Any]:  # noqa: N803
    """How far a task is."""
    task = task_cases.get_task(get_services(), taskId, _owner())
    progress = 1.0 if task.status is TaskStatus.SUCCEEDED else task.progress
    return {
        "taskId": task.task_id,
        "status": task.status.value,
        "progress": progress,
        "etaRelative": task.eta_s if task.eta_s is not None else 0.0,
        "state": {
            "samplingStep": task.sampling_step,
            "samplingSteps": task.sampling_steps,
            "jobNo": task.job_no,
            "jobCount": task.job_count,
            "interrupted": task.cancel_requested or task.status is TaskStatus.CANCELLED,
            "skipped": task.skip_requests > 0,
        },
        # base64 PNG preview while running (SD_PREVIEW_EVERY > 0), else null
        "currentImage": task.current_image,
    }


@router.post("/tasks/<taskId>/cancellation")
def task_cancellation(taskId: str) -> dict[str, Any]:  # noqa: N803
    """Cancel a task (idempotent)."""
    task = task_cases.request_cancel(get_services(), taskId, _owner())
    return {"taskId": task.task_id, "status": task.status.value, "cancelRequested": True}


@router.get("/models")
def models(type: ModelType | None = None) -> list[dict[str, Any]]:  # noqa: A002 (wire name)
    """Checkpoints and other models (or those of one `type`), with their status."""
    return [
        {
            "type": m.type.value,
            "name": m.name,
            "status": m.status.value,
            "sha256": m.sha256,
            "size": m.size,
            "registeredTime": iso(m.registered_at),
            "lastModificationTime": iso(m.modified_at),
            "error": m.error,
        }
        for m in model_cases.list_models(get_services(), type)
    ]
