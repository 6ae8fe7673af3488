"""The local counterpart of Lambda's runtime: one process runs one function's handler, fed by
the function's invocation queue (see `fleet`), one event at a time, as Lambda runs one event at
a time per execution environment. The handler is named as Lambda names it (`module.function`,
the image's CMD on AWS). At start the handler gets a warm-up event (`{"warmup": true}`), so an
inference function loads its checkpoint before the first task, not during it.

The process exits when it has been idle for SD_IDLE_SECONDS (scale to zero), when its parent
(the stack) is gone, or on SIGTERM (a stack shutdown, a function update or delete), finishing
the event at hand first.

    python -m sdcore.adapters.local.runtime --function NAME \
        --handler inference_function.app.lambda_handler
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.fleet import _is_worker, invocation_queue, running_dir
from sdcore.settings import Settings

log = logging.getLogger("sdcore.runtime")
WARMUP = {"warmup": True}

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LocalContext:
    """What Lambda passes a handler as its context, for handlers run locally."""

    function_name: str = "local"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:local"
    memory_limit_in_mb: int = 0
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    log_group_name: str = "local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


class RunningInvocations:
    """Which of one local stack's workers run an invocation now: a file per running one,
    `<data_dir>/running/<pid>`, made as it starts and removed as it ends (and by the fleet
    when its worker dies mid-task). Cheap enough to read a few times a second: a listing of
    at most SD_MAX_CONCURRENCY entries (~15 us with two, see benchmarks/thread_share.py)."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = running_dir(data_dir)

    @contextmanager
    def running(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        mine = self.folder / str(os.getpid())
        mine.touch()
        try:
            yield
        finally:
            mine.unlink(missing_ok=True)

    def count(self) -> int:
        """Invocations running now (this process's own among them); an entry of a process
        that is no worker (any more) is not counted, and removed."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return 0
        live, me = 0, str(os.getpid())
        for name in names:
            if name == me or (name.isdigit() and _is_worker(int(name))):
                live += 1
            else:
                (self.folder / name).unlink(missing_ok=True)
        return live


def load_handler(name: str) -> Handler:
    """`module.function` -> the function (importing the module: the init phase)."""
    module, _, function = name.rpartition(".")
    handler: Handler = getattr(importlib.import_module(module), function)
    return handler


IDLE_POLL_S = 0.5  # an idle worker looks at its queue this often even when nothing rang


def serve(settings: Settings, function: str, handler: Handler) -> None:
    """Warm up, then run the invocations of `function` until idle, orphaned or told to stop."""
    parent = os.getppid()
    queue = invocation_queue(Database(settings.data_dir / "state.db"), function)
    invocations = RunningInvocations(settings.data_dir)
    # an invocation rings the queue's bell: taken at once, not at the next poll (listening
    # before the warm-up: one sent meanwhile has rung by the time it ends)
    bell = queue.listener()
    try:
        handler(WARMUP, LocalContext(function_name=function))
    except Exception:
        log.exception("warm-up of %s failed; its invocations will report why", function)
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()
        queue.ring()  # out of the wait now

    signal.signal(signal.SIGTERM, stop)
    last_work = time.monotonic()
    try:
        while os.getppid() == parent and not stopping.is_set():
            messages = queue.receive(1, visibility_s=settings.lease_s)
            if not messages:
                if time.monotonic() - last_work > settings.idle_s:
                    break
                bell.wait(IDLE_POLL_S)  # the fallback: a lost ring, the parent gone
                continue
            for message in messages:
                with invocations.running():
                    handler(message.body, LocalContext(function_name=function))
                queue.delete(message.receipt)
            last_work = time.monotonic()
    finally:
        bell.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--function", required=True)
    parser.add_argument("--handler", required=True)
    args = parser.parse_args()
    serve(Settings(), args.function, load_handler(args.handler))


if __name__ == "__main__":
    main()
