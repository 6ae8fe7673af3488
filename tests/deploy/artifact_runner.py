"""Runs one event through one handler of the built artifacts, in a clean interpreter.

    python -S -E artifact_runner.py FUNCTION_DIR LAYER_DIR HANDLER EVENT_FILE

`-S -E`: no site-packages and no PYTHON* variables, so everything but the standard library comes
from the artifacts, as in Lambda (whose runtime adds the function's folder and the layer's
`python/`). Prints one JSON line: the handler's answer, and every AWS API call it made (a
botocore `before-parameter-build` hook), with what names the resource. Imports nothing of the tests.
"""

from __future__ import annotations

import importlib
import json
import sys

function_dir, layer_dir, handler_name, event_file = sys.argv[1:5]
sys.path[:0] = [function_dir, layer_dir]

import boto3  # noqa: E402  (the layer's)

KEYS = (
    "TableName",
    "IndexName",
    "Bucket",
    "Key",
    "Prefix",
    "QueueUrl",
    "QueueName",
    "FunctionName",
    "Role",
    "Resource",
)  # fmt: skip (as tests/iam.py records them)
calls: list[dict[str, object]] = []


def record(params: dict, model: object, **_: object) -> None:
    found = {k: params[k] for k in KEYS if isinstance(params.get(k), str)}
    if params.get("Tags"):
        found["Tagged"] = True
    if "RequestItems" in params:
        found["Tables"] = sorted(params["RequestItems"])
    if "TransactItems" in params:
        found["Transact"] = [
            [op, item[op]["TableName"]] for item in params["TransactItems"] for op in item
        ]
    service = model.service_model.endpoint_prefix  # type: ignore[attr-defined]
    calls.append({"service": service, "operation": model.name, "params": found})  # type: ignore[attr-defined]


boto3.setup_default_session()
assert boto3.DEFAULT_SESSION is not None
# before-parameter-build: API calls and presigned URLs alike
boto3.DEFAULT_SESSION.events.register("before-parameter-build", record)

module_name, _, function = handler_name.rpartition(".")
handler = getattr(importlib.import_module(module_name), function)
with open(event_file) as fh:
    event = json.load(fh)


class Context:
    function_name = "artifact-test"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:artifact-test"
    memory_limit_in_mb = 512
    aws_request_id = "artifact-test"
    log_group_name = log_stream_name = "artifact-test"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


result = handler(event, Context())
outside = sorted(
    name for name, module in sys.modules.items()
    if "site-packages" in (getattr(module, "__file__", "") or "")
)  # fmt: skip
print(json.dumps({"result": result, "calls": calls, "from_site_packages": outside}, default=str))
