"""Real-shaped events from tests/events/, adjusted per test."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parents[1] / "events"
# Credentials the fixtures set for the test at hand: proxy calls carry DEFAULT_HEADERS, admin
# calls ADMIN_HEADERS (see `api(..., admin=True)`).
DEFAULT_HEADERS: dict[str, str] = {}
ADMIN_HEADERS: dict[str, str] = {}


def load(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def api(
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> dict[str, Any]:
    event = copy.deepcopy(load("apigw_txt2img.json"))
    event["httpMethod"] = method
    event["path"] = event["resource"] = path
    event["requestContext"]["resourcePath"] = path
    event["requestContext"]["httpMethod"] = method
    creds = (ADMIN_HEADERS if path.startswith("/admin") else DEFAULT_HEADERS) if auth else {}
    hdrs = {"Content-Type": "application/json", **creds, **(headers or {})}
    event["headers"] = hdrs
    event["multiValueHeaders"] = {k: [v] for k, v in hdrs.items()}
    event["body"] = None if body is None else (body if isinstance(body, str) else json.dumps(body))
    return event


def sqs(*bodies: dict[str, Any]) -> dict[str, Any]:
    template = load("sqs_task.json")["Records"][0]
    records = []
    for n, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record["messageId"] = f"msg-{n}"
        record["body"] = json.dumps(body)
        records.append(record)
    return {"Records": records}


class Context:
    function_name = "test"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test"
    memory_limit_in_mb = 1024
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/test"
    log_stream_name = "stream"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000
