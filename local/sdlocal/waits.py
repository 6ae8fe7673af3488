"""The front door's share of a sync request: the wait for its task, in the event loop (a
function process serves one request at a time, so a wait there would hold it for up to
SD_SYNC_TIMEOUT), and a cap on the function processes one caller may hold at once, so that one
caller cannot take them all."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.doorbell import Listener
from sdcore.adapters.local.stores import TASKS_BELL, SqliteTaskStore
from sdcore.api.front_door import DEFER_HEADER, RESUME_HEADER
from sdcore.errors import NotFoundError
from sdcore.settings import Settings

INTERNAL = (DEFER_HEADER, RESUME_HEADER)


class TaskWaits:
    """Waits until a task ends or time is up: the task table is read again whenever a task
    ends anywhere in the stack (the `tasks` doorbell, rung by the task store), and once a
    second besides, in case a ring was lost. No sleep-polling: a sync answer leaves as soon as
    its task's end is written."""

    FALLBACK_S = 1.0

    def __init__(self, settings: Settings) -> None:
        self.data_dir = settings.data_dir
        self.tasks = SqliteTaskStore(Database(settings.data_dir / "state.db"))
        self._listener: Listener | None = None
        self._rung: set[asyncio.Event] = set()  # the waits in progress

    def _ended(self, task_id: str) -> bool:
        try:
            return self.tasks.get(task_id).status.terminal
        except NotFoundError:
            return True  # nothing to wait for: the replay says what happened

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        """The `tasks` bell, read in the event loop; each ring wakes every wait in progress."""
        if self._listener is not None:
            return
        listener = Listener(self.data_dir, TASKS_BELL)

        def rung() -> None:
            if listener.drain():
                for event in self._rung:
                    event.set()

        loop.add_reader(listener.fileno(), rung)
        self._listener = listener

    async def wait(self, task_id: str, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._listen(loop)
        deadline = time.monotonic() + seconds
        event = asyncio.Event()
        self._rung.add(event)
        try:
            while time.monotonic() < deadline:
                event.clear()  # before the read: a ring during it is not lost
                if await loop.run_in_executor(None, self._ended, task_id):
                    return
                left = max(0.0, deadline - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(left, self.FALLBACK_S))
        finally:
            self._rung.discard(event)


class InFlight:
    """Function processes held per caller (by the key they send); `limit` at most."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: Counter[str] = Counter()

    @staticmethod
    def caller(headers: dict[str, list[str]]) -> str:
        for name in ("authorization", "x-api-key"):
            if headers.get(name):
                return hashlib.sha256(headers[name][-1].encode()).hexdigest()
        return ""  # no key: answered 401 at once, or a public route

    @contextmanager
    def hold(self, caller: str) -> Iterator[bool]:
        """True (and counted while inside) if the caller may take one more process."""
        if not caller or self.held[caller] < self.limit:
            self.held[caller] += 1
            try:
                yield True
            finally:
                self.held[caller] -= 1
                if not self.held[caller]:
                    del self.held[caller]
        else:
            yield False
