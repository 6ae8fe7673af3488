"""Domain errors to HTTP, mapped once for every HTTP function."""

from __future__ import annotations

import logging
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from sdcore.composition import get_services
from sdcore.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    LLMError,
    NotFoundError,
    OverCapError,
    StaleWriteError,
    TaskFailedError,
    TaskTimeoutError,
    WaitDeferred,
)
from sdcore.metric_names import CLIENT_ERRORS

log = logging.getLogger(__name__)


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body,
        headers=headers,
    )


def _route(app: APIGatewayRestResolver) -> str:
    """The route's template (`/tasks/{taskId}`), never the raw path: a label per task id
    would make a metric per task."""
    route = app.context.get("_route")
    path = getattr(route, "openapi_path", None) or getattr(route, "rule", None)
    return str(path) if isinstance(path, str) else "unmatched"


# no request body here is nested deeper than a few levels
MAX_JSON_DEPTH = 64


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in `text` (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def invalid_detail(exc: InvalidInputError) -> list[dict[str, Any]]:
    """A 422's `detail`: the field (and those sharing the blame) with the message."""
    detail = []
    for field in (exc.field, *exc.also):
        parts = ["body", *field.replace("]", "").replace("[", ".").split(".")]
        loc: list[int | str] = [int(p) if p.isdigit() else p for p in parts]
        detail.append({"loc": loc, "msg": exc.message, "type": "value_error"})
    return detail


def llm_body(exc: LLMError) -> dict[str, Any]:
    """A 502's body: the prompt assistant's language model failed."""
    return {"error": "llm_error", "message": str(exc)}


def streamed_error(exc: Exception) -> dict[str, Any]:
    """What a stream that has already begun (answered 200) says of an error that ends it: the
    status and body the error is answered with when nothing was sent yet."""
    if isinstance(exc, InvalidInputError):
        return {"status": 422, "error": "validation_error", "detail": invalid_detail(exc)}
    if isinstance(exc, LLMError):
        return {"status": 502, **llm_body(exc)}
    log.error("unhandled error in a stream", exc_info=exc)
    return {"status": 500, "error": "internal_error", "message": "internal error"}


def register_error_handlers(app: APIGatewayRestResolver) -> None:
    def answer(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        """The error's response; a 4xx is counted by route, status and error code."""
        if 400 <= status < 500:
            reason = str(body.get("error", "error")) if isinstance(body, dict) else "error"
            get_services().metrics.count(
                CLIENT_ERRORS, route=_route(app), status=str(status), reason=reason
            )
        return json_response(status, body, headers)

    def invalid(detail: list[dict[str, Any]]) -> Response:
        return answer(422, {"error": "validation_error", "detail": detail})

    # Registering a handler for Exception would also catch request validation errors, so those
    # get one of their own: 422 with the location of each bad field and a readable message.
    @app.exception_handler(RequestValidationError)
    def _request_invalid(exc: RequestValidationError) -> Response:
        detail = [
            {"loc": list(e["loc"]), "msg": e.get("msg", ""), "type": e["type"]}
            for e in exc.errors()
        ]
        return invalid(detail)

    def _unsupported() -> Response:
        message = "send Content-Type: application/json"
        return answer(415, {"error": "unsupported_media_type", "message": message})

    @app.exception_handler(RequestUnsupportedContentType)
    def _media_type(exc: RequestUnsupportedContentType) -> Response:
        return _unsupported()

    @app.exception_handler(ValueError)
    def _value(exc: ValueError) -> Response:
        # Powertools parses form bodies itself and raises ValueError on malformed ones (e.g.
        # multipart without a boundary); every route here takes JSON
        headers = {k.lower(): v for k, v in (app.current_event.headers or {}).items()}
        ctype = headers.get("content-type") or ""
        if ctype and not ctype.lower().startswith("application/json"):
            return _unsupported()
        log.exception("unhandled error on %s", app.current_event.path)
        return answer(500, {"error": "internal_error", "message": "internal error"})

    @app.exception_handler(UnicodeDecodeError)
    def _not_utf8(exc: UnicodeDecodeError) -> Response:
        # Powertools decodes the body lazily, when validation reads it
        return invalid([{"loc": ["body"], "msg": "body is not UTF-8 JSON", "type": "json_invalid"}])

    @app.exception_handler(RecursionError)
    def _too_deep(exc: RecursionError) -> Response:
        # the JSON parser recurses per level: a body nested thousands deep exhausts the stack
        depth = json_depth(app.current_event.body or "")
        if depth <= MAX_JSON_DEPTH:
            log.exception("unhandled error on %s", app.current_event.path)
            return answer(500, {"error": "internal_error", "message": "internal error"})
        message = f"JSON nested {depth} levels deep; at most {MAX_JSON_DEPTH}"
        return invalid([{"loc": ["body"], "msg": message, "type": "json_invalid"}])

    @app.exception_handler(InvalidInputError)
    def _invalid(exc: InvalidInputError) -> Response:
        return invalid(invalid_detail(exc))

    @app.exception_handler(LLMError)
    def _llm(exc: LLMError) -> Response:
        return answer(502, llm_body(exc))

    @app.exception_handler(NotFoundError)
    def _not_found(exc: NotFoundError) -> Response:
        return answer(404, {"error": "not_found", "message": str(exc)})

    @app.exception_handler([ConflictError, StaleWriteError])
    def _conflict(exc: Exception) -> Response:
        return answer(409, {"error": "conflict", "message": str(exc)})

    @app.exception_handler(OverCapError)
    def _over_cap(exc: OverCapError) -> Response:
        return answer(
            429,
            {"error": "too_many_requests", "message": str(exc)},
            {"Retry-After": str(exc.retry_after_s)},
        )

    @app.exception_handler(AuthError)
    def _unauthorized(exc: AuthError) -> Response:
        return answer(
            401,
            {"error": "unauthorized", "message": str(exc)},
            {"WWW-Authenticate": 'Bearer, Basic realm="sd-api"'},
        )

    @app.exception_handler(ForbiddenError)
    def _forbidden(exc: ForbiddenError) -> Response:
        return answer(403, {"error": "forbidden", "message": str(exc)})

    @app.exception_handler(WaitDeferred)
    def _deferred(exc: WaitDeferred) -> Response:
        # to the local front door only (it asked): it waits, then replays the request
        body = {"taskId": exc.task_id, "status": "waiting"}
        headers = {"x-sd-wait-task": exc.task_id, "x-sd-wait-seconds": f"{exc.wait_s:g}"}
        return answer(202, body, headers)

    @app.exception_handler(TaskTimeoutError)
    def _timeout(exc: TaskTimeoutError) -> Response:
        body = {"error": "timeout", "detail": "still running", "taskId": exc.task_id}
        return answer(504, body)

    @app.exception_handler(TaskFailedError)
    def _failed(exc: TaskFailedError) -> Response:
        return answer(500, {"error": "generation_failed", "detail": str(exc)})

    @app.exception_handler(ServiceError)
    def _service(exc: ServiceError) -> Response:
        return answer(exc.status_code, {"error": "error", "message": exc.msg})

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s", app.current_event.path)
        return answer(500, {"error": "internal_error", "message": "internal error"})
