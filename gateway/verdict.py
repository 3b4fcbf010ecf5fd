"""Is the entity gone, or the route?  A 404 for an id is answered only after asking the upstream
for an entity known to exist: the route's probe sample (gateway.probes).

If the sample is not found either, the upstream route itself is gone: the caller gets a 502
``upstream_route_gone`` and the route is marked down, rather than every script being told
its entity does not exist.  Otherwise (the sample is found, or cannot be had) the 404 stands.
One verdict per route and target (its request line: a reload that edits the targets starts
afresh) stands for ``every`` seconds, so a burst of 404s costs the upstream one extra request
and concurrent 404s share it.  A sample may have been deleted since the last probe round:
before calling a route gone, the providers are probed again for a fresh one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

#: a route's probe sample: (path params, query params), as the probe sends them
Sample = tuple[dict[str, str], dict[str, str]]
#: the sample of a route by name; ``fresh=True`` asks the providers again first (None: no sample)
SampleSource = Callable[[str, bool], Awaitable[Sample | None]]
#: the status one target answers for a sample (None: no answer, e.g. a connection error)
Ask = Callable[[Mapping[str, str], Mapping[str, str]], Awaitable[int | None]]

#: how long a verdict stands: the upstream is asked about a route at most this often
EVERY = 5.0


class GoneCheck:
    """Per (route, target): the last verdict and when it was reached."""

    def __init__(self, samples: SampleSource, *, every: float = EVERY, clock: Callable[[], float] = time.monotonic):
        self._samples = samples
        self._every = every
        self._clock = clock
        self._verdicts: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def route_gone(self, route: str, target: str, ask: Ask) -> str | None:
        """Why ``target`` (``GET /path/{id}``) of the route, not the entity, is gone; None: the 404 stands."""
        key = (route, target)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # concurrent 404s wait for one check
            cached = self._verdicts.get(key)
            if cached is not None and self._clock() - cached[0] < self._every:
                return cached[1]
            verdict = await self._judge(route, ask)
            self._verdicts[key] = (self._clock(), verdict)
            return verdict

    async def _judge(self, route: str, ask: Ask) -> str | None:
        sample = await self._samples(route, False)
        if sample is None:
            return None
        status = await ask(*sample)
        if status in (404, 410):
            # the sample may itself have been deleted since the last probe: take a fresh one once
            fresh = await self._samples(route, True)
            if fresh is not None and fresh != sample:
                sample, status = fresh, await ask(*fresh)
        if status not in (404, 410):
            return None
        shown = ", ".join(f"{k}={v}" for k, v in {**sample[0], **sample[1]}.items())
        return f"answers {status} even for the probe's sample ({shown}), an entity known to exist"
