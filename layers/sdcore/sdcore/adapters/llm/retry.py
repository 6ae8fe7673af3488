"""Retries of a streamed chat reply: a bounded count, with back-off, all within one deadline.

A try that fails before its first piece is tried again (throttling, 429, 5xx, a timeout, a
dropped connection); one that fails after pieces went out is not, since the caller already has
them and a second reply would not continue the first."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from sdcore.errors import LLMError

BACKOFF_S = 0.5  # the first wait; doubled per further try
MAX_BACKOFF_S = 4.0


class RetryableError(Exception):
    """A try failed in a way worth trying again; `after_s` is what the server asked for."""

    def __init__(self, reason: str, after_s: float | None = None) -> None:
        super().__init__(reason)
        self.after_s = after_s


def retrying(
    attempt: Callable[[float], Iterator[str]],
    retries: int,
    timeout_s: float,
    *,
    what: str = "the language model",
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[str]:
    """The pieces of `attempt(seconds_left)`, tried up to `retries` more times.

    Raises
    ------
    LLMError
        Every try failed, a failure was not worth retrying, a try failed after its first piece,
        or the deadline passed.
    """
    deadline = clock() + timeout_s
    for number in range(retries + 1):
        left = deadline - clock()
        if left <= 0:
            raise LLMError(f"{what} did not answer within {timeout_s:g} s")
        given = False
        try:
            for piece in attempt(left):
                given = True
                yield piece
                if clock() > deadline:
                    raise LLMError(f"{what} did not finish within {timeout_s:g} s")
            return
        except RetryableError as exc:
            if given:
                raise LLMError(f"{what} failed mid-reply: {exc}") from exc
            if number == retries:
                raise LLMError(f"{what} failed after {retries + 1} tries: {exc}") from exc
            wait = min(MAX_BACKOFF_S, BACKOFF_S * 2**number)
            if exc.after_s is not None:
                wait = max(wait, min(exc.after_s, MAX_BACKOFF_S))
            if clock() + wait >= deadline:
                raise LLMError(f"{what} failed, no time left to retry: {exc}") from exc
            (sleep or time.sleep)(wait)
