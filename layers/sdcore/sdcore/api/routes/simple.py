"""The simple API: the small surface an app's own front end calls. Every answer, errors included,
is one envelope `{"code", "msg", "data"}`: code 0 when all is well, else the HTTP status."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.router import APIGatewayRouter
from pydantic import BaseModel, ConfigDict, Field

from sdcore.api.front_door import front_door_waits
from sdcore.api.routes.common import SIMPLE, documented, principal
from sdcore.api.template_schemas import template_submission
from sdcore.composition import get_services
from sdcore.domain.models import TaskStatus
from sdcore.domain.templates import TEMPLATE_NAME
from sdcore.usecases import tasks as task_cases
from sdcore.usecases import templates as template_cases
from sdcore.usecases.tasks import TaskOutcome

router = APIGatewayRouter()
PREFIX = "/simple/"


class SimpleTxt2Img(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompt": "a red fox", "style": "posters", "count": 2}]},
    )
    prompt: str = Field(..., min_length=1, max_length=20_000)
    negativePrompt: str | None = Field(None, max_length=20_000)  # noqa: N815 (wire name)
    width: int | None = Field(None, ge=64, le=2048, multiple_of=8)
    height: int | None = Field(None, ge=64, le=2048, multiple_of=8)
    style: str | None = Field(None, pattern=TEMPLATE_NAME, description="a template's name")
    count: int | None = Field(None, ge=1, le=8, description="how many pictures")
    translate: bool | None = Field(
        None, description="put the Chinese of the prompts into English first (unset: the default)"
    )

    def fields(self) -> dict[str, Any]:
        """The request fields given, in the native API's words."""
        given = {
            "negative_prompt": self.negativePrompt,
            "width": self.width,
            "height": self.height,
            "batch_size": self.count,
            "translate": self.translate,
        }
        return {k: v for k, v in given.items() if v is not None}


class SimpleData(BaseModel):
    taskId: str  # noqa: N815
    status: TaskStatus
    images: list[str] = Field(description="expiring URLs of the pictures")


class SimpleAnswer(BaseModel):
    code: int = Field(description="0: ok; else the HTTP status")
    msg: str
    data: SimpleData | None


def _answer(done: TaskOutcome, pending_status: int) -> Response[SimpleAnswer]:
    task = done.task
    data = SimpleData(taskId=task.public_id, status=task.status, images=done.urls)
    if task.status is TaskStatus.FAILED:
        code, msg = 500, task.error or "the generation failed"
    elif task.status is TaskStatus.CANCELLED:
        code, msg = 409, task.error or "cancelled"
    elif task.status is TaskStatus.SUCCEEDED:
        code, msg = 0, "ok"
    else:
        code, msg = 0, task.status.value
    status = code or (200 if task.status.terminal else pending_status)
    body = SimpleAnswer(code=code, msg=msg, data=data)
    return Response(status, content_types.APPLICATION_JSON, body)


@documented(router.post, "/simple/txt2img", tags=[SIMPLE], responses={202: {}})
def simple_txt2img(body: SimpleTxt2Img) -> Response[SimpleAnswer]:
    """Text to image, waiting for the pictures; `style` names a template.

    202 when the wait ran out: poll GET /simple/tasks/{taskId}.
    """
    svc = get_services()
    with front_door_waits(router):
        done = template_cases.run_simple(
            svc,
            principal(router),
            body.prompt,
            template_submission,
            body.fields(),
            style=body.style,
            wait_s=svc.settings.sync_timeout_s,
        )
    return _answer(done, 202)


@documented(router.get, "/simple/tasks/<taskId>", tags=[SIMPLE])
def simple_task(taskId: str) -> Response[SimpleAnswer]:  # noqa: N803 (path parameter name)
    """A task's status and pictures."""
    who = principal(router)
    owner = None if who.is_admin else who.user
    return _answer(task_cases.get_outcome(get_services(), taskId, owner, who.user), 200)


def _message(body: Any) -> str:
    if not isinstance(body, dict):
        return "error"
    if isinstance(body.get("message"), str):
        return str(body["message"])
    detail = body.get("detail")
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:]) or 'body'}: {d.get('msg', '')}"
            for d in detail
            if isinstance(d, dict)
        )
    return str(detail or body.get("error") or "error")


def enveloped(event: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """A response of the simple API with an error's body in its envelope (the one error table
    answers every route's errors alike; this route family wraps them)."""
    status = int(response.get("statusCode", 200))
    if not str(event.get("path") or "").startswith(PREFIX) or status < 400:
        return response
    try:
        body = json.loads(response.get("body") or "null")
    except ValueError:
        body = None
    if isinstance(body, dict) and "code" in body and "msg" in body:
        return response  # already in the envelope (a failed or cancelled task)
    wrapped = {"code": status, "msg": _message(body), "data": body}
    return {**response, "body": json.dumps(wrapped), "isBase64Encoded": False}
