"""Time and identifiers, injectable so tests can control them."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime


class Clock:
    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class IdFactory:
    def new_id(self) -> str:
        return uuid.uuid4().hex


def iso(ts: float | None) -> str | None:
    """ISO-8601 UTC with milliseconds, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
