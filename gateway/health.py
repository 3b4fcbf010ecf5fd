"""Per-route health: up or down, why, and since when, fed by live traffic and by probes.

One tracker lives as long as the process (reloads keep it), so a route that keeps its
name keeps its history.  Every change is mirrored into bounded metrics:
``gateway_route_up{route}``, ``gateway_route_last_change_timestamp_seconds{route}`` and
``gateway_route_failure_info{route, code}``; the human reason (the error message,
never a secret) is kept here for the status page.  A route nobody has called or
probed yet is *unknown*: its ``gateway_route_up`` is NaN, so every route is listed
from the start, yet a fresh gateway raises no alert about routes it has no evidence for.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from gateway.metrics import Metrics


@dataclass(slots=True)
class RouteState:
    #: None until the first evidence
    up: bool | None = None
    #: the error code that broke it, and the message (empty while up)
    code: str = ""
    reason: str = ""
    #: wall-clock time of the last up ↔ down change
    since: float | None = None
    #: wall-clock time of the last evidence, and where it came from: "traffic" or "probe"
    checked: float | None = None
    source: str = ""
    #: index in ``targets`` of the target that last answered (≥ 1: a fallback is in use)
    target: int = 0


class RouteHealth:
    """Up/down state per route name, mirrored into metrics as it changes."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self._metrics = metrics
        self._clock = clock
        self._states: dict[str, RouteState] = {}
        #: the served config's routes (``track``); None: every name (no config tracked yet)
        self._served: frozenset[str] | None = None

    def get(self, route: str) -> RouteState:
        return self._states.get(route) or RouteState()

    def _state(self, route: str) -> RouteState | None:
        """The route's state, made on first use (not ``setdefault``, which builds one on every call);
        None for a route the served config no longer has: a request begun before the reload that removed
        it, finishing now, must bring back no series (a 0 written then would page for ever)."""
        state = self._states.get(route)
        if state is None:
            if self._served is not None and route not in self._served:
                return None
            state = self._states[route] = RouteState()
        return state

    def up(self, route: str, source: str = "traffic") -> None:
        state = self._states.get(route) or self._state(route)
        if state is None:
            return
        now = self._clock()
        state.checked, state.source = now, source
        if state.up is True:
            return
        if state.code:
            self._clear_failure(route, state.code)
        state.up, state.code, state.reason, state.since = True, "", "", now
        self._metrics.route_up.labels(route).set(1)
        self._metrics.route_changed.labels(route).set(now)

    def down(self, route: str, code: str, reason: str, source: str = "traffic") -> None:
        state = self._state(route)
        if state is None:
            return
        now = self._clock()
        state.checked, state.source = now, source
        if state.up is not False:
            state.since = now
            self._metrics.route_up.labels(route).set(0)
            self._metrics.route_changed.labels(route).set(now)
        if state.code != code:
            if state.code:
                self._clear_failure(route, state.code)
            self._metrics.route_failure.labels(route, code).set(1)
        state.up, state.code, state.reason = False, code, reason

    def _clear_failure(self, route: str, code: str) -> None:
        # 0 first: with gateway serve --workers N the value lives in a shared file that remove() leaves alone
        # (its /metrics then drops it: gateway.route_series)
        self._metrics.route_failure.labels(route, code).set(0)
        with contextlib.suppress(KeyError):
            self._metrics.route_failure.remove(route, code)

    def answered_by(self, route: str, target: int) -> None:
        state = self._states.get(route) or self._state(route)  # made once, then one lookup
        if state is not None:
            state.target = target

    def track(self, routes: Iterable[str]) -> None:
        """Export the config's routes (NaN until known); forget routes a reload removed,
        so no series (and no alert) outlives its route."""
        keep = set(routes)
        before = self._served or frozenset()
        self._served = frozenset(keep)
        for name in keep - set(self._states):
            self._metrics.route_up.labels(name).set(math.nan)
        # every route gone: those with evidence, and those exported NaN that never had any
        for name in [n for n in {*self._states, *before} if n not in keep]:
            state = self._states.pop(name, None)
            if state is not None and state.code:
                self._clear_failure(name, state.code)
            # NaN ("not known") first: with gateway serve --workers N the workers' files keep the last
            # value whatever remove() does, and a 0 kept there would page for a route that is gone
            self._metrics.route_up.labels(name).set(math.nan)
            for gauge in (self._metrics.route_up, self._metrics.route_changed):
                with contextlib.suppress(KeyError):
                    gauge.remove(name)
