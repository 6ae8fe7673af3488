"""The proxy function: the public HTTP API (API Gateway REST proxy events): the native routes,
the webui-compatible /sdapi/v1 routes, and the API's OpenAPI document (/openapi.json, /docs)."""

from __future__ import annotations

import logging
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.utilities.typing import LambdaContext

from proxy_function.docs import DOC_PATHS, docs
from sdcore.adapters.xray import traced
from sdcore.api.auth import auth_middleware
from sdcore.api.errors import register_error_handlers
from sdcore.api.routes import (
    account,
    assist,
    controlnet,
    native,
    simple,
    styles,
    templates,
    webui,
    webui_info,
)
from sdcore.composition import observed

logger = Logger(service="proxy")
# the shared package's lines in this JSON format, with the keys of the handling (its task id)
logging.getLogger("sdcore")
copy_config_to_registered_loggers(source_logger=logger, include={"sdcore"})
app = APIGatewayRestResolver(enable_validation=True)
app.use(middlewares=[auth_middleware])
app.include_router(native.router)
app.include_router(styles.router)
app.include_router(account.router)
app.include_router(webui.router)
app.include_router(webui_info.router)
app.include_router(controlnet.router)
app.include_router(templates.router)
app.include_router(simple.router)
app.include_router(assist.router)
register_error_handlers(app)


# the request's id (API Gateway's, or the local front door's) is the lines' correlation_id;
# X-Ray only in Lambda (no daemon elsewhere)
@logger.inject_lambda_context(
    clear_state=True, correlation_id_path=correlation_paths.API_GATEWAY_REST
)
@traced("proxy")
@observed("proxy")
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    resolver = docs if event.get("path") in DOC_PATHS else app
    # the simple API answers its errors in its own envelope
    return simple.enveloped(event, resolver.resolve(event, context))
