"""The caller's prompt styles (native API): create, list, read, replace, delete. A request's
`styles` (native or webui) applies them by name; `/sdapi/v1/prompt-styles` lists them."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.routes.common import GENERATION, documented, json_body, principal
from sdcore.api.style_schemas import StyleBody, StyleFields
from sdcore.api.webui_responses import PromptStyle
from sdcore.composition import get_services
from sdcore.domain.models import PromptStyle as DomainStyle
from sdcore.usecases import styles as style_cases

router = APIGatewayRouter()


def _wire(style: DomainStyle) -> PromptStyle:
    return PromptStyle(name=style.name, prompt=style.prompt, negative_prompt=style.negative_prompt)


@documented(router.get, "/styles", tags=[GENERATION])
def list_styles() -> list[PromptStyle]:
    """The caller's prompt styles."""
    return [_wire(s) for s in style_cases.list_styles(get_services(), principal(router))]


@documented(
    router.post,
    "/styles",
    tags=[GENERATION],
    responses={
        201: {"description": "Created.", **json_body(PromptStyle)},
        409: {"description": "The caller has a style of that name."},
    },
)
def create_style(body: StyleBody) -> Response[PromptStyle]:
    """Add a prompt style (at most 64 per user)."""
    made = style_cases.create_style(get_services(), principal(router), body.to_domain())
    return Response(201, content_types.APPLICATION_JSON, _wire(made))


@documented(router.get, "/styles/<name>", tags=[GENERATION])
def get_style(name: str) -> PromptStyle:
    """One of the caller's prompt styles."""
    return _wire(style_cases.get_style(get_services(), principal(router), name))


@documented(router.put, "/styles/<name>", tags=[GENERATION])
def put_style(name: str, body: StyleFields) -> PromptStyle:
    """Replace the prompt style of that name, or add it."""
    style = StyleBody(name=name, **body.model_dump()).to_domain()
    return _wire(style_cases.put_style(get_services(), principal(router), style))


@documented(router.delete, "/styles/<name>", tags=[GENERATION], responses={204: {}})
def delete_style(name: str) -> Response[None]:
    """Remove a prompt style."""
    style_cases.delete_style(get_services(), principal(router), name)
    return Response(204)
