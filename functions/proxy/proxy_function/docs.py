"""The OpenAPI document and Swagger UI of the whole API: native, webui and admin routes. A
resolver of its own that only describes routes (the proxy and admin functions serve them)."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.models import (
    APIKey,
    APIKeyIn,
    HTTPBase,
    HTTPBearer,
)

from sdcore.api.routes import (
    account,
    admin,
    assist,
    controlnet,
    native,
    simple,
    styles,
    templates,
    webui,
    webui_info,
)
from sdcore.api.routes.common import TAGS

DOC_PATHS = frozenset({"/docs", "/openapi.json"})
TITLE = "Serverless Stable Diffusion API"
SECURITY = {
    "bearer": HTTPBearer(description="Authorization: Bearer <API key>"),
    "apiKey": APIKey(name="x-api-key", **{"in": APIKeyIn.header}),
    "basic": HTTPBase(scheme="basic", description="webui clients: <user>:<API key>"),
}

docs = APIGatewayRestResolver(enable_validation=True)
# Include here first: a router's context follows the last resolver that includes it, and the
# proxy app (which includes them next) must own it.
for _router in (
    native.router,
    styles.router,
    account.router,
    webui.router,
    webui_info.router,
    controlnet.router,
    templates.router,
    simple.router,
    assist.router,
    admin.router,
):
    docs.include_router(_router)
docs.enable_swagger(
    path="/docs",
    title=TITLE,
    version="1.0",
    security_schemes=SECURITY,
    security=[{"bearer": []}, {"apiKey": []}, {"basic": []}],
    tags=TAGS,
)


@docs.get("/openapi.json", include_in_schema=False)
def openapi_json() -> Response[str]:
    body = docs.get_openapi_json_schema(
        title=TITLE,
        version="1.0",
        security_schemes=SECURITY,
        security=[{"bearer": []}, {"apiKey": []}, {"basic": []}],
        tags=TAGS,
    )
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=body)
