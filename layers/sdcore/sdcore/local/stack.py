"""`make run`: the whole product on one machine. The HTTP front door (proxy and admin functions),
the control loop (control function over the SQLite queue), and one worker process per
checkpoint (inference function). State lives in SD_DATA_DIR and survives restarts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("sdcore.stack")


def _sqs_event(messages: list[Any], queue_name: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": m.message_id,
                "receiptHandle": m.receipt,
                "body": json.dumps(m.body),
                "attributes": {"ApproximateReceiveCount": str(m.receive_count)},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:local:000000000000:{queue_name}",
                "awsRegion": "local",
            }
            for m in messages
        ]
    }


class ControlLoop(threading.Thread):
    """Feeds the task queue to the control function as SQS batches, deleting what succeeded
    (the event source mapping's job on AWS), and runs the reaper on a schedule."""

    def __init__(self, svc: Any, reap_every_s: float = 5.0) -> None:
        super().__init__(name="control", daemon=True)
        self.svc = svc
        self.reap_every_s = reap_every_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        from control_function.app import lambda_handler
        from sdcore.local.context import LocalContext

        queue = self.svc.queue
        next_reap = 0.0
        while not self.stop_event.is_set():
            try:
                now = time.monotonic()
                if now >= next_reap:
                    next_reap = now + self.reap_every_s
                    lambda_handler({"source": "aws.events"}, LocalContext("control"))
                    self.svc.fleet.revive()
                messages = queue.receive(10, visibility_s=60)
                if not messages:
                    self.stop_event.wait(0.02)
                    continue
                result = lambda_handler(_sqs_event(messages, "tasks"), LocalContext("control"))
                failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
                for message in messages:
                    if message.message_id not in failed:
                        queue.delete(message.receipt)
            except Exception:
                log.exception("control loop error")
                self.stop_event.wait(1)


DEMO_CHECKPOINT = Path(__file__).resolve().parents[4] / "models" / "demo-shapes.safetensors"


def register_demo(base_url: str, name: str, api_key: str | None) -> None:
    """Register the shipped demo checkpoint (models/demo-shapes.safetensors, trained by
    scripts/train_demo_model.py) through the ordinary admin upload path."""
    from sdcore.client import upload_model

    upload_model(base_url, DEMO_CHECKPOINT, name, "checkpoint", config="demo-shapes",
                 api_key=api_key)  # fmt: skip


def credentials(data_dir: Path) -> dict[str, str]:
    path = data_dir / "credentials.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def configure_env(args: argparse.Namespace) -> None:
    data_dir = Path(os.environ.get("SD_DATA_DIR", "./local-data")).resolve()
    os.environ["SD_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("SD_MODEL_CACHE_DIR", str(data_dir / "cache"))
    os.environ.setdefault("SD_BACKEND", "local")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    if args.port is not None:
        os.environ["PORT"] = str(args.port)
    repo = Path(__file__).resolve().parents[4]
    extra = [repo / "layers" / "sdcore"] + [
        repo / "functions" / f for f in ("proxy", "admin", "control", "inference")
    ]
    for path in reversed(extra):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in extra]
        + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    )


class Stack:
    def __init__(self) -> None:
        from sdcore.composition import get_services
        from sdcore.local.jobs import JobLoop
        from sdcore.local.server import LocalServer

        self.svc = get_services()
        settings = self.svc.settings
        self.server = LocalServer(settings.host, settings.port, settings.http_workers)
        self.control = ControlLoop(self.svc)
        self.jobs = JobLoop(self.svc)  # model jobs: verify uploads, imports

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self.control.start()
        self.jobs.start()

    def stop(self) -> None:
        self.control.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
        self.control.join(timeout=10)
        self.jobs.stop()
        from sdcore.adapters.local.fleet import ProcessWorkerFleet

        fleet = self.svc.fleet
        assert isinstance(fleet, ProcessWorkerFleet)  # the local stack's own
        fleet.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the local stack")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--no-demo", action="store_true", help="don't register the demo model")
    args = parser.parse_args(argv)
    configure_env(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from sdcore.errors import NotFoundError
    from sdcore.usecases.auth import bootstrap_local

    stack = Stack()
    settings = stack.svc.settings
    created = bootstrap_local(stack.svc, settings.data_dir)
    stack.start()
    creds = credentials(settings.data_dir)
    if not args.no_demo:
        try:
            stack.svc.models.get(settings.default_model)
        except NotFoundError:
            log.info("registering the demo checkpoint %r", settings.default_model)
            register_demo(stack.base_url, settings.default_model, creds.get("admin_key"))
    print(f"Local stack on {stack.base_url}  (data in {settings.data_dir})", flush=True)
    if created:
        print(f"  created API keys (saved in {settings.data_dir / 'credentials.json'}):")
        print(f"    admin key: {created['admin_key']}")
        print(f"    user key:  {created['user_key']}", flush=True)
    else:
        print(f"  API keys: {settings.data_dir / 'credentials.json'}", flush=True)
    user_key = creds.get("user_key", "<user key>")
    print(
        f"  try: curl -s -X POST {stack.base_url}/txt2img -H 'Content-Type: application/json' "
        f"-H 'Authorization: Bearer {user_key}' "
        """-d '{"prompt": "a red circle on a white background"}'""",
        flush=True,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    print("stopping", flush=True)
    stack.stop()


if __name__ == "__main__":
    main()
