"""The X-Ray adapter as Lambda runs it: in a child process with Lambda's environment (tracing
on), a traced handler that says what it is about and times a span sends its segments to the
X-Ray daemon's UDP address, here a socket of the test's. The annotations let a search find the
task; the span is a subsegment of its own. Outside Lambda the X-Ray SDK is not imported."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = """
from sdcore.adapters.xray import XRayTracing, traced

tracing = XRayTracing()

@traced("inference")
def handler(event, context):
    tracing.begin()
    tracing.about(event["taskId"], "demo")
    with tracing.span("pipeline"):
        pass
    return {"status": "succeeded", "image": "x" * 100}

class Context:
    function_name = "f"; function_version = "1"; invoked_function_arn = "arn"
    memory_limit_in_mb = 1; aws_request_id = "r"; log_group_name = "g"; log_stream_name = "s"

assert handler({"taskId": "task-123"}, Context())["status"] == "succeeded"
"""


def _run(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(str(REPO / p) for p in ("layers/sdcore", "."))
    env = {**os.environ, **env, "PYTHONPATH": path}
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_traced_handling_sends_annotated_segments_to_the_daemon() -> None:
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(30)
    port = daemon.getsockname()[1]
    env = {
        "LAMBDA_TASK_ROOT": str(REPO),
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{port}",
        "_X_AMZN_TRACE_ID": f"Root=1-5759e988-bd862e3fe1be46a994272793;Parent={'5' * 16};Sampled=1",
        "AWS_REGION": "us-east-1",
    }
    done = _run(env, CHILD)
    assert done.returncode == 0, done.stderr[-3000:]
    segments = {}
    while len(segments) < 2:
        header, _, body = daemon.recv(65536).decode().partition("\n")
        assert json.loads(header)["format"] == "json"
        segment = json.loads(body)
        segments[segment["name"]] = segment
    daemon.close()
    handler, span = segments["## handler"], segments["## pipeline"]
    # the search `annotation.taskId = "task-123"` finds the handling; the span is its child
    assert handler["annotations"]["taskId"] == "task-123"
    assert handler["annotations"]["model"] == "demo"
    assert span["parent_id"] == handler["id"] and span["end_time"] >= span["start_time"]
    # the handler's response is not in the trace
    assert "x" * 100 not in json.dumps(handler)


def test_outside_lambda_nothing_is_traced_and_the_sdk_is_not_imported() -> None:
    done = _run({}, CHILD + "\nimport sys\nassert 'aws_xray_sdk.core' not in sys.modules\n")
    assert done.returncode == 0, done.stderr[-3000:]
