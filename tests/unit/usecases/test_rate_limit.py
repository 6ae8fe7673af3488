"""Requests per minute per user, over a sliding minute: a burst at the end of one minute and
another at the start of the next cannot add up to twice the limit."""

from __future__ import annotations

import pytest

from sdcore.domain.models import Role
from sdcore.errors import OverCapError
from sdcore.services import Services
from sdcore.usecases.auth import Principal, check_rate


def _at(svc: Services, t: float) -> None:
    svc.clock.now = lambda: t  # type: ignore[method-assign]


def _sent(svc: Services, who: Principal, n: int) -> int:
    """How many of n requests were let through."""
    through = 0
    for _ in range(n):
        try:
            check_rate(svc, who)
            through += 1
        except OverCapError:
            pass
    return through


def test_a_burst_across_a_minute_boundary_gets_the_limit_not_twice_it(svc: Services) -> None:
    svc.settings.rate_per_minute = 10
    who = Principal("alice", Role.USER)
    _at(svc, 60_000 + 59)  # the last second of a minute
    assert _sent(svc, who, 10) == 10
    _at(svc, 60_060 + 1)  # the next minute's first second: the last one still counts ~98 %
    assert _sent(svc, who, 1) == 0  # fixed windows let 10 more through here
    _at(svc, 60_060 + 30)  # half of the last minute's burst has slid out: 5 of it count
    # 5 + this minute's requests (the refused one counts too) <= 10: 4 more
    assert _sent(svc, who, 10) == 4


def test_over_the_limit_says_when_to_retry(svc: Services) -> None:
    svc.settings.rate_per_minute = 10
    who = Principal("bob", Role.USER)
    _at(svc, 120_000 + 50)
    _sent(svc, who, 10)
    _at(svc, 120_060 + 6)  # 10 x 0.9 = 9 from the last minute, so one more fits now
    check_rate(svc, who)
    with pytest.raises(OverCapError) as refused:
        check_rate(svc, who)
    # 10 x (1 - t/60) + 2 <= 10 once t >= 12 s into the minute: 6 s from now
    assert refused.value.retry_after_s == 6
