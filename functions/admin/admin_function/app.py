"""The admin function: model management over HTTP (API Gateway REST proxy events)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.utilities.typing import LambdaContext

from sdcore.api.admin_routes import router
from sdcore.api.auth import auth_middleware
from sdcore.api.errors import register_error_handlers

logger = Logger(service="admin")
app = APIGatewayRestResolver(enable_validation=True)
app.use(middlewares=[auth_middleware])
app.include_router(router)
register_error_handlers(app)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
