"""The front door's share of a sync request: the wait for its task, in the event loop (a
function process serves one request at a time, so a wait there would hold it for up to
SD_SYNC_TIMEOUT), and a cap on the function processes one caller may hold at once, so that one
caller cannot take them all."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.stores import SqliteTaskStore
from sdcore.api.front_door import DEFER_HEADER, RESUME_HEADER
from sdcore.errors import NotFoundError
from sdcore.settings import Settings

INTERNAL = (DEFER_HEADER, RESUME_HEADER)


class TaskWaits:
    """Polls the task table (a read every 0.1 s at most) until the task ends or time is up."""

    def __init__(self, settings: Settings) -> None:
        self.tasks = SqliteTaskStore(Database(settings.data_dir / "state.db"))

    def _ended(self, task_id: str) -> bool:
        try:
            return self.tasks.get(task_id).status.terminal
        except NotFoundError:
            return True  # nothing to wait for: the replay says what happened

    async def wait(self, task_id: str, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + seconds
        delay = 0.02
        while time.monotonic() < deadline:
            if await loop.run_in_executor(None, self._ended, task_id):
                return
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.1)


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
