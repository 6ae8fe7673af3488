"""SageMaker's container contract for the inference image: `docker run <image> serve` runs
`python -m inference_function.serve`, an HTTP server on SD_SERVE_HOST:SD_SERVE_PORT (8080).

    GET  /ping         200 once the checkpoint is loaded (or failed to load), 503 while loading
    POST /invocations  the S3 input object of an asynchronous invocation: the Lambda event of a
                       task, {"taskId": ..., "lease": {...}}; answers {"taskId", "status"}

The checkpoint is loaded once, by `inference_function.app.engine`, and each invocation runs the
Lambda handler's own code path (`inference_function.app.handle`): the task table stays the one
source of truth for status, progress, cancellation and heartbeats; the answer SageMaker writes
to the S3 output location only echoes the status the task ended in.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference_function.app import engine, handle, logger
from sdcore.domain.models import Lease
from sdcore.settings import get_settings


class Invocation(BaseModel):
    """An invocation's body: what the fleet writes as the S3 input object."""

    model_config = ConfigDict(extra="allow")

    taskId: str = Field(min_length=1)  # the wire name, as in the Lambda event
    lease: Lease | None = None


class InferenceServer(ThreadingHTTPServer):
    """One checkpoint behind SageMaker's two routes. Requests each get a thread, so /ping
    answers while a task runs; `busy` lets one task (or the initial load) run at a time, since
    the engine holds one pipeline and `engine()` is not safe to enter twice."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.ready = threading.Event()
        self.busy = threading.Lock()

    def load(self) -> None:
        """Load the checkpoint, then answer /ping with 200 whatever came of it. A failed load
        is not reported as unhealthy on purpose: an endpoint whose container never passes /ping
        takes no invocations, so its queued tasks would wait until they time out, with no
        reason given. Ready, each invocation tries the load again and, failing, ends its task
        with the reason (`abandon_task`), exactly as the Lambda handler does."""
        with self.busy:
            try:
                engine()
            except Exception:
                logger.exception("model failed to load; each invocation will report it")
            finally:
                self.ready.set()

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        with self.busy:
            return handle(event)


class _Handler(BaseHTTPRequestHandler):
    server: InferenceServer

    def do_GET(self) -> None:
        if self.path != "/ping":
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"no route GET {self.path}"})
        elif self.server.ready.is_set():
            self._answer(HTTPStatus.OK, {"status": "ready"})
        else:
            self._answer(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "loading"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/invocations":
            self._answer(HTTPStatus.NOT_FOUND, {"error": f"no route POST {self.path}"})
            return
        try:
            event = json.loads(body)
            Invocation.model_validate(event)
        except ValueError as exc:  # JSONDecodeError and ValidationError are ValueErrors
            self._answer(HTTPStatus.BAD_REQUEST, {"error": _bad_body(exc)})
            return
        try:
            answer = self.server.invoke(event)
        except Exception:
            logger.exception("invocation failed", extra={"taskId": event["taskId"]})
            self._answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error"})
            return
        logger.info("invocation done", extra=answer)
        self._answer(HTTPStatus.OK, answer)

    def _answer(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # access lines as debug records of the service's logger, not bare lines on stderr
        # (SageMaker pings every few seconds)
        logger.debug(format % args)


def _bad_body(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return f'the body must be a task reference {{"taskId": ..., "lease": ...}}: {problems}'
    return f"the body is not JSON: {exc}"


def main() -> None:
    # the shared package's records (the load, heartbeats, task ends) in the service's JSON lines:
    # no Lambda runtime here to route the standard library's logging
    logging.getLogger("sdcore")
    copy_config_to_registered_loggers(source_logger=logger, include={"sdcore"})
    settings = get_settings()
    server = InferenceServer((settings.serve_host, settings.serve_port))
    # bound first, so /ping answers 503 while the checkpoint loads (minutes for a large one)
    threading.Thread(target=server.load, name="load", daemon=True).start()

    def stop(signum: int, frame: object) -> None:
        # SageMaker stops a container with SIGTERM. shutdown() waits for serve_forever to
        # return, so it cannot run on the thread serving; a task still running is cut off
        # with the process and its heartbeat goes stale, as when a Lambda function times out.
        logger.info("SIGTERM: shutting down")
        threading.Thread(target=server.shutdown, name="shutdown").start()

    signal.signal(signal.SIGTERM, stop)
    logger.info("serving", extra={"address": f"{settings.serve_host}:{server.server_port}"})
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
