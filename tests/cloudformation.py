"""A stand-in for CloudFormation's side of a custom resource (InferenceFleet in template.yaml)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest


class CloudFormation:
    """Where CloudFormation waits for a custom resource's answer (its presigned ResponseURL): a
    127.0.0.1 server that keeps each PUT."""

    def __init__(self) -> None:
        answers: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answers.append(
                    {"contentType": self.headers.get("Content-Type"), **json.loads(body)}
                )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.answers = answers
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/response"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def cloudformation() -> Iterator[CloudFormation]:
    cfn = CloudFormation()
    yield cfn
    cfn.server.shutdown()
    cfn.server.server_close()
