"""`make run`: the whole product on one machine. The HTTP front door (proxy and admin functions),
the control loop (control function over the SQLite queue, and its schedule), the model-job loop
(admin function), and one worker process per checkpoint (inference function). State lives in
SD_DATA_DIR and survives restarts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import tarfile
import tempfile
import threading
from pathlib import Path

from sdcore import composition
from sdcore.adapters.local.fleet import ProcessWorkerFleet
from sdcore.adapters.local.metrics import metrics_dir
from sdcore.adapters.local.metrics import reset as reset_metrics
from sdcore.adapters.local.queue import SqliteQueue
from sdcore.adapters.local.runtime import LocalContext
from sdcore.errors import NotFoundError
from sdcore.settings import Settings
from sdcore.usecases.auth import bootstrap_local
from sdlocal.client import upload_model
from sdlocal.events import EventSource
from sdlocal.server import LocalServer

log = logging.getLogger("sdlocal.stack")

REPO = Path(__file__).resolve().parents[2]
DEMO_CHECKPOINT = REPO / "models" / "demo-shapes.safetensors"
# the demo checkpoint's canny ControlNet (a diffusers folder, trained by
# scripts/train_demo_controlnet.py), registered next to it under this name
DEMO_CONTROLNET = REPO / "models" / "demo-controlnet"
DEMO_CONTROLNET_NAME = "demo-canny"
# the queues whose dead letters control ends (as on AWS), and the names they go by
DEAD_LETTERS = {"tasks": "tasks-dlq", "model-jobs": "model-jobs-dlq"}


def register_demo(base_url: str, name: str, api_key: str | None) -> None:
    """Register the shipped demo checkpoint (models/demo-shapes.safetensors, trained by
    scripts/train_demo_model.py) through the ordinary admin upload path."""
    upload_model(base_url, DEMO_CHECKPOINT, name, "checkpoint", config="demo-shapes",
                 api_key=api_key)  # fmt: skip


def pack_folder(folder: Path, archive: Path) -> Path:
    """An uncompressed tar of a diffusers folder's files, as the admin upload takes a folder:
    the same bytes (and so the same sha256) every time for the same files."""
    with tarfile.open(archive, "w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.mtime, info.mode = 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    return archive


def register_demo_controlnet(base_url: str, api_key: str | None) -> None:
    """Register the shipped demo ControlNet (models/demo-controlnet/, a diffusers folder) through
    the ordinary admin upload path, as the tar of its folder."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = pack_folder(DEMO_CONTROLNET, Path(tmp) / "demo-controlnet.tar")
        upload_model(base_url, archive, DEMO_CONTROLNET_NAME, "controlnet", api_key=api_key)


def credentials(data_dir: Path) -> dict[str, str]:
    path = data_dir / "credentials.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def local_settings(port: int | None = None) -> Settings:
    """The environment's settings, on the local backend, with the data directory made absolute
    (every process of the stack gets these) and the model cache inside it unless set."""
    settings = Settings()
    data_dir = settings.data_dir.resolve()
    updates: dict[str, object] = {"backend": "local", "data_dir": data_dir}
    if "model_cache_dir" not in settings.model_fields_set:
        updates["model_cache_dir"] = data_dir / "cache"
    if port is not None:
        updates["port"] = port
    if not settings.dead_letter_queues:  # the names the stack's event sources give them
        updates["dead_letter_queues"] = ",".join(DEAD_LETTERS.values())
    return settings.model_copy(update=updates)


class Stack:
    def __init__(self, settings: Settings, starting: str | None = None) -> None:
        """`starting`: why the stack is not ready yet (its front door answers /health 503
        with it until `self.server.started()`); None: ready once serving."""
        # Imported here, after main() set the libraries' switches (Powertools reads its log
        # level when a function module is imported), in this thread (two threads importing
        # Powertools at once can trip over its partly initialised modules).
        from admin_function.app import lambda_handler as admin_handler
        from control_function.app import lambda_handler as control_handler

        self.control_handler = control_handler
        # this run's figures only (every process of the stack writes there: /metrics)
        reset_metrics(metrics_dir(settings.data_dir))
        composition.use_settings(settings)  # this process's functions and threads
        self.svc = composition.get_services()
        fleet = self.svc.fleet
        if not isinstance(fleet, ProcessWorkerFleet):
            raise TypeError("the local stack runs the local backend")
        self.fleet = fleet
        self.server = LocalServer(settings, starting=starting)
        # control: the task queue, and its schedule (reaper, sweep, loaded models), after which
        # functions with invocations waiting and no process get one (after a restart, or a
        # worker that idled out just as work arrived)
        assert isinstance(self.svc.queue, SqliteQueue) and isinstance(self.svc.jobs, SqliteQueue)
        self.control = EventSource("tasks", self.svc.queue, control_handler, function="control",
                                   tick=self._schedule)  # fmt: skip
        # model jobs (verify uploads, imports) one at a time; a job cut short by a restart is
        # delivered again after a minute (jobs are safe to repeat), a failed one after 5 s
        self.jobs = EventSource("model-jobs", self.svc.jobs, admin_handler, function="admin",
                                batch_size=1, retry_after_s=5)  # fmt: skip
        # messages that failed again and again: control ends what each was about
        self.dead_letters = [
            EventSource(
                DEAD_LETTERS[queue.name],
                queue.dead_letters(),
                control_handler,
                function="control",
                idle_wait_s=0.5,
            )  # fmt: skip
            for queue in (self.svc.queue, self.svc.jobs)
        ]

    def _schedule(self) -> None:
        self.control_handler({"source": "aws.events"}, LocalContext("control"))
        self.fleet.revive()

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self.control.start()
        self.jobs.start()
        for source in self.dead_letters:
            source.start()

    def stop(self) -> None:
        self.control.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
        self.control.stop()
        self.jobs.stop()
        for source in self.dead_letters:
            source.stop()
        self.fleet.shutdown()


def _announce(stack: Stack, settings: Settings, created: dict[str, str] | None) -> None:
    print(f"Local stack on {stack.base_url}  (data in {settings.data_dir})", flush=True)
    if created:
        print(f"  created API keys (saved in {settings.data_dir / 'credentials.json'}):")
        print(f"    admin key: {created['admin_key']}")
        print(f"    user key:  {created['user_key']}", flush=True)
    else:
        print(f"  API keys: {settings.data_dir / 'credentials.json'}", flush=True)
    user_key = credentials(settings.data_dir).get("user_key", "<user key>")
    print(f"  open {stack.base_url}/ in a browser and sign in with the user key: {user_key}")
    print(
        f"  try: curl -s -X POST {stack.base_url}/txt2img -H 'Content-Type: application/json' "
        f"-H 'Authorization: Bearer {user_key}' "
        """-d '{"prompt": "a red circle on a white background"}'""",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the local stack")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--no-demo", action="store_true", help="don't register the demo model")
    args = parser.parse_args(argv)
    # libraries' own switches, for this process and every process it starts: no model hub,
    # and the functions' logs at WARNING (the stack prints what a user needs)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = local_settings(args.port)
    # until the demo models are registered, /health says so (503 starting); then, until the
    # checkpoint is verified, the proxy's own readiness does
    starting = None if args.no_demo else "the demo models are being registered"
    stack = Stack(settings, starting=starting)
    created = bootstrap_local(stack.svc, settings.data_dir)
    stack.start()
    if not args.no_demo:
        admin_key = credentials(settings.data_dir).get("admin_key")
        try:
            stack.svc.models.get(settings.default_model)
        except NotFoundError:
            log.info("registering the demo checkpoint %r", settings.default_model)
            register_demo(stack.base_url, settings.default_model, admin_key)
        try:
            stack.svc.models.get(DEMO_CONTROLNET_NAME)
        except NotFoundError:
            log.info("registering the demo ControlNet %r", DEMO_CONTROLNET_NAME)
            register_demo_controlnet(stack.base_url, admin_key)
    stack.server.started()
    _announce(stack, settings, created)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    print("stopping", flush=True)
    stack.stop()


if __name__ == "__main__":
    main()
