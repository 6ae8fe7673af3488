"""A local inference function: one process serving one checkpoint, fed by its invocation queue."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time

from sdcore.adapters.local.fleet import invocation_queue
from sdcore.composition import get_services
from sdcore.domain.models import ModelChanges, ModelStatus
from sdcore.errors import NotFoundError, StaleWriteError
from sdcore.local.context import LocalContext

log = logging.getLogger("sdcore.worker")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--function", required=True)
    args = parser.parse_args()
    parent = os.getppid()
    svc = get_services()
    db = svc.fleet.db  # type: ignore[attr-defined]
    queue = invocation_queue(db, args.function, svc.clock.now)

    from inference_function.app import engine, lambda_handler

    try:
        engine()  # load at start, not on the first task: the checkpoint stays warm from here
    except Exception:
        log.exception("model failed to load; tasks sent here will fail with the reason")
    stopping = threading.Event()
    # SIGTERM (stack shutdown, a function update or delete): finish the task at hand, then exit
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    last_work = time.monotonic()
    while os.getppid() == parent and not stopping.is_set():
        messages = queue.receive(1, visibility_s=svc.settings.lease_s)
        if not messages:
            if time.monotonic() - last_work > svc.settings.idle_s:
                break
            time.sleep(0.05)
            continue
        for message in messages:
            lambda_handler(message.body, LocalContext(function_name=args.function))
            queue.delete(message.receipt)
        last_work = time.monotonic()
    try:  # scale to zero: the model is no longer loaded anywhere
        svc.models.update(
            svc.settings.model_name,
            ModelChanges(status=ModelStatus.UNLOADED),
            {ModelStatus.LOADED, ModelStatus.LOADING},
        )
    except (NotFoundError, StaleWriteError):
        pass


if __name__ == "__main__":
    main()
