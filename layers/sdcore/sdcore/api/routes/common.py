"""What every route module shares: the OpenAPI tags, a route decorator that takes the summary
and description from the handler's docstring, and the caller and headers of the request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.usecases.auth import Principal

GENERATION = "generation"
TASKS = "tasks"
MODELS = "models"
TEMPLATES = "templates"
SIMPLE = "simple"
PROMPTS = "prompts"
WEBUI = "webui"
ADMIN_MODELS = "admin: models"
ADMIN_FUNCTIONS = "admin: functions"
ADMIN_USERS = "admin: users"
ADMIN_STATS = "admin: stats"

TAGS = [
    {"name": "health", "description": "Readiness."},
    {"name": GENERATION, "description": "Submit txt2img, img2img and extras tasks."},
    {"name": TASKS, "description": "A task's result, progress and cancellation; history."},
    {"name": MODELS, "description": "The registered models and their status."},
    {"name": TEMPLATES, "description": "Saved requests; batches of them compared in a grid."},
    {"name": SIMPLE, "description": "A small API for app front ends, in one envelope."},
    {"name": PROMPTS, "description": "The prompt assistant: a few words to an English prompt."},
    {"name": WEBUI, "description": "AUTOMATIC1111 webui-compatible API: clients work unchanged."},
    {"name": ADMIN_MODELS, "description": "Upload, import, rename and delete models."},
    {"name": ADMIN_FUNCTIONS, "description": "The inference functions, one per checkpoint."},
    {"name": ADMIN_USERS, "description": "Users and their API keys."},
    {"name": ADMIN_STATS, "description": "Task counts and latencies, last hour and day."},
]

F = TypeVar("F", bound=Callable[..., Any])


def documented(
    route: Callable[..., Callable[[F], F]], path: str, **kwargs: Any
) -> Callable[[F], F]:
    """`route(path, ...)` (a router's get/post/delete) with the OpenAPI summary and description
    taken from the handler's docstring: its first line, then the rest."""

    def decorate(handler: F) -> F:
        summary, _, description = (handler.__doc__ or "").strip().partition("\n")
        return route(
            path,
            summary=summary.strip() or None,
            description=" ".join(description.split()) or None,
            **kwargs,
        )(handler)

    return decorate


def principal(router: APIGatewayRouter) -> Principal:
    """The caller, as the auth middleware found it."""
    return router.context["principal"]  # type: ignore[no-any-return]


def header(router: APIGatewayRouter, name: str) -> str | None:
    """A request header, by case-insensitive name."""
    for key, value in (router.current_event.headers or {}).items():
        if key.lower() == name.lower():
            return value
    return None


def json_body(model: Any) -> dict[str, Any]:
    """The OpenAPI `responses` entry of a JSON body."""
    return {"content": {"application/json": {"model": model}}}
