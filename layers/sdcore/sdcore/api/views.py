"""Response bodies shared by the proxy routes and webhook deliveries."""

from __future__ import annotations

from typing import Any

from sdcore.api.schemas import wire_parameters
from sdcore.clock import iso
from sdcore.domain.models import Task
from sdcore.services import Services
from sdcore.usecases.tasks import result_urls


def task_result(svc: Services, task: Task) -> dict[str, Any]:
    """The body of GET /tasks/{taskId}/result."""
    return {
        "taskId": task.task_id,
        "status": task.status.value,
        "images": task.images,
        "urls": result_urls(svc, task),
        "md5": task.image_md5,
        "parameters": wire_parameters(task),
        "info": task.info,
        "error": task.error,
        "attempts": task.attempts,
        "timings": {
            "createdAt": iso(task.created_at),
            "startedAt": iso(task.started_at),
            "finishedAt": iso(task.finished_at),
        },
    }
