"""Virtual time for pacing, retry and limit tests: the gateway's injectable ``clock``/``sleep``.

A test reads the waits the gateway asked for instead of sleeping through them, so a one-second
``Retry-After`` costs nothing and pacing is asserted exactly, not with jitter slack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.resilience import Resilience


class VirtualTime:
    """``sleep(d)`` returns at once and records ``d``; the clock moves only by hand, or by each sleep.

    ``frozen=True``: every sleeper starts from the same instant, so ``wakes`` (the instant each
    sleep would end) is exactly the schedule concurrent requests were given (pacing).
    ``frozen=False``: a sleep moves the clock on, as for one request waiting and retrying.
    ``on_sleep`` lets a test move another clock along (an upstream sandbox's), as real time would.
    """

    def __init__(
        self, start: float = 1000.0, on_sleep: Callable[[float], None] | None = None, *, frozen: bool = True
    ) -> None:
        self.now = start
        self.frozen = frozen
        self.sleeps: list[float] = []
        self.wakes: list[float] = []
        self.on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.wakes.append(self.now + seconds)
        if not self.frozen:
            self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def install(resilience: Resilience, time: VirtualTime) -> None:
    """Point the gateway's retries, breaker and pacing at ``time``."""
    resilience.clock = time.clock
    resilience.sleep = time.sleep
