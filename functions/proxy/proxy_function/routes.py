"""The public API: submit generation tasks, and ask about them by taskId."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.errors import json_response
from sdcore.api.schemas import ExtrasBody, Img2ImgBody, Txt2ImgBody, wire_parameters
from sdcore.clock import iso
from sdcore.composition import get_services
from sdcore.domain.models import Task, TaskStatus
from sdcore.errors import InvalidInputError
from sdcore.usecases import models as model_cases
from sdcore.usecases import tasks as task_cases

router = APIGatewayRouter()


def _header(name: str) -> str | None:
    headers = router.current_event.headers or {}
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _result(task: Task) -> dict[str, Any]:
    svc = get_services()
    return {
        "taskId": task.task_id,
        "status": task.status.value,
        "images": task.images,
        "urls": task_cases.result_urls(svc, task),
        "parameters": wire_parameters(task),
        "info": task.info,
        "error": task.error,
        "timings": {
            "createdAt": iso(task.created_at),
            "startedAt": iso(task.started_at),
            "finishedAt": iso(task.finished_at),
        },
    }


def _submit(body: Txt2ImgBody | Img2ImgBody | ExtrasBody) -> Response[dict[str, Any]]:
    request_type = (_header("Request-Type") or "sync").lower()
    if request_type not in ("sync", "async"):
        raise InvalidInputError("Request-Type", "must be 'sync' or 'async'")
    svc = get_services()
    params, images, mask = body.to_domain()
    task = task_cases.submit_task(svc, params, body.stable_diffusion_model, images, mask)
    if request_type == "async":
        return json_response(202, {"taskId": task.task_id, "status": task.status.value})
    task = task_cases.wait_for_task(svc, task.task_id, svc.settings.sync_timeout_s)
    if not task.status.terminal:  # outlasted the sync wait: the client polls the result
        return json_response(202, {"taskId": task.task_id, "status": task.status.value})
    # Every terminal state answers 200 with the same body as /tasks/{taskId}/result; `status`
    # and `error` say how it ended.
    return json_response(200, _result(task))


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}


@router.post("/txt2img")
def txt2img(body: Txt2ImgBody) -> Response[dict[str, Any]]:
    """Text to image. Header Request-Type: sync (default) or async."""
    return _submit(body)


@router.post("/img2img")
def img2img(body: Img2ImgBody) -> Response[dict[str, Any]]:
    """Image to image, or inpainting when a mask is given."""
    return _submit(body)


@router.post("/extra_images")
def extra_images(body: ExtrasBody) -> Response[dict[str, Any]]:
    """Upscale one image by resampling."""
    return _submit(body)


@router.get("/tasks/<taskId>/result")
def task_result(taskId: str) -> dict[str, Any]:  # noqa: N803 (path parameter name)
    """A task's status, images and timings."""
    return _result(task_cases.get_task(get_services(), taskId))


@router.get("/tasks/<taskId>/progress")
def task_progress(taskId: str) -> dict[str, Any]:  # noqa: N803
    """How far a task is."""
    task = task_cases.get_task(get_services(), taskId)
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
        },
    }


@router.post("/tasks/<taskId>/cancellation")
def task_cancellation(taskId: str) -> dict[str, Any]:  # noqa: N803
    """Cancel a task (idempotent)."""
    task = task_cases.request_cancel(get_services(), taskId)
    return {"taskId": task.task_id, "status": task.status.value, "cancelRequested": True}


@router.get("/models")
def models() -> list[dict[str, Any]]:
    """Checkpoints and other models, with their status."""
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
        for m in model_cases.list_models(get_services())
    ]
