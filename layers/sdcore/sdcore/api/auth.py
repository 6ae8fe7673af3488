"""Authentication for every HTTP route but the public ones, as a Powertools middleware."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

from sdcore.composition import get_services
from sdcore.usecases.auth import authenticate, check_rate, require_admin

PUBLIC = frozenset({"/health", "/docs", "/openapi.json"})


def auth_middleware(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response:
    path = app.current_event.path
    if path not in PUBLIC:
        svc = get_services()
        principal = authenticate(svc, dict(app.current_event.headers or {}))
        if path == "/admin" or path.startswith("/admin/"):
            require_admin(principal)
        check_rate(svc, principal)
        app.append_context(principal=principal)
    return next_middleware(app)
