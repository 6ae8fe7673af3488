"""The prompt assistant: a user's few words (Chinese too) to an English prompt, whole as JSON or
streamed as server-sent events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.assist_schemas import AssistAnswer, AssistBody
from sdcore.api.errors import streamed_error
from sdcore.api.routes.common import PROMPTS, documented, header, json_body, principal
from sdcore.api.streaming import streamed
from sdcore.composition import get_services
from sdcore.usecases import assist as assist_cases
from sdcore.usecases.assist import Assisted

router = APIGatewayRouter()
EVENT_STREAM = "text/event-stream"
EVENT_HEADERS = {"Content-Type": EVENT_STREAM, "Cache-Control": "no-cache"}
ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}


def event(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event (JSON keeps its data on one line)."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def events(items: Iterator[str | Assisted]) -> Iterator[bytes]:
    """`token` per piece of the reply, then `done` with the prompts, or `error`: once the
    stream has begun its status is sent, so an error travels in it."""
    try:
        for item in items:
            if isinstance(item, Assisted):
                yield event("done", AssistAnswer.of(item).model_dump())
            else:
                yield event("token", {"text": item})
    except Exception as exc:  # the one error table's answer, carried by the stream
        yield event("error", streamed_error(exc))


@documented(
    router.post,
    "/prompts/assist",
    tags=[PROMPTS],
    responses={
        200: {
            "description": "The prompts; with `Accept: text/event-stream`, server-sent events.",
            "content": {
                **json_body(AssistAnswer)["content"],
                EVENT_STREAM: {"schema": {"type": "string"}},
            },
        },
        502: {
            "description": "The language model failed after its retries.",
            "content": {"application/json": {"schema": ERROR_SCHEMA}},
        },
    },
)
def assist(body: AssistBody) -> Response[AssistAnswer | str]:
    """An English prompt and negative prompt for a few words (Chinese too).

    With a language model configured (SD_LLM) the model writes them (a template's system prompt
    guides it); without one the offline translator does. A template's prompt skeleton and
    negative prompt, then a prompt style, are applied; the prompt filter judges the result as it
    judges a prompt (422 naming `text`). With `Accept: text/event-stream`: `token` events as the
    reply is written, then one `done` with the prompts, or one `error` with the status and body
    the error would have had.
    """
    svc, who = get_services(), principal(router)
    if EVENT_STREAM in (header(router, "accept") or "").lower():
        items = assist_cases.start_assist(svc, who, body.to_request())
        return streamed(200, EVENT_HEADERS, events(items))
    made = assist_cases.assist(svc, who, body.to_request())
    return Response(200, content_types.APPLICATION_JSON, AssistAnswer.of(made))
