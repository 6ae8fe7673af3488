"""`GET /metrics` on the local stack: every process's Prometheus figures in one exposition,
for an admin key only (the figures name users and models). Served by the front door itself,
not a function: on AWS the same figures go to CloudWatch, and no function answers /metrics."""

from __future__ import annotations

import json

from prometheus_client import CONTENT_TYPE_LATEST

from sdcore.adapters.local.metrics import exposition, metrics_dir
from sdcore.composition import get_services
from sdcore.errors import AuthError, ForbiddenError
from sdcore.usecases.auth import authenticate, require_admin

Answer = tuple[int, bytes, dict[str, str]]


def scrape(headers: dict[str, str]) -> Answer:
    """The exposition, or 401/403 as the API answers them."""
    svc = get_services()
    try:
        require_admin(authenticate(svc, headers))
    except AuthError as exc:
        return _error(401, "unauthorized", str(exc), {"WWW-Authenticate": "Bearer"})
    except ForbiddenError as exc:
        return _error(403, "forbidden", str(exc))
    body = exposition(metrics_dir(svc.settings.data_dir))
    return 200, body, {"Content-Type": CONTENT_TYPE_LATEST}


def _error(status: int, code: str, message: str, extra: dict[str, str] | None = None) -> Answer:
    body = json.dumps({"error": code, "message": message}).encode()
    return status, body, {"Content-Type": "application/json", **(extra or {})}
