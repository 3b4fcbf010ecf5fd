"""A circuit breaker per upstream: after N consecutive failed exchanges it opens and calls fail
fast with a 503 (no socket touched); after the cool-down one probe goes through (half-open).
An opening is published through Redis (gateway.shared), so every process fails fast too; one
honouring another's open breaker says so in its 503 and exports its gauge as open meanwhile.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from gateway.config import BreakerPolicy
from gateway.errors import ServiceUnavailable
from gateway.metrics import Metrics
from gateway.shared import SharedState

CLOSED, HALF_OPEN, OPEN = 0, 1, 2


class Owner(Protocol):
    """What a breaker reads of the process-wide resilience state (gateway.resilience.Resilience)."""

    metrics: Metrics | None
    shared: SharedState | None
    clock: Callable[[], float]


class Breaker:
    """Closed → (N consecutive failures) → open → (cool-down) → half-open: one probe decides."""

    def __init__(self, upstream: str, owner: Owner) -> None:
        self.upstream = upstream
        self.owner = owner
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        #: the token of the probe in flight while half-open
        self.probe: object | None = None
        #: closed here, but failing fast because another process opened it (the gauge says open)
        self.remote = False
        #: the policy lets the breaker open at all (as of the last call): a switched-off one follows nobody
        self.enabled = True

    def _set(self, state: int) -> None:
        self.state, self.remote = state, False
        if self.owner.metrics is not None:
            self.owner.metrics.circuit_state.labels(self.upstream).set(state)
            if state == OPEN:
                self.owner.metrics.circuit_opened.labels(self.upstream).inc()

    def admit(self, policy: BreakerPolicy, route: str) -> object | None:
        """Let a call through (a token if it is the half-open probe), or raise a fast 503."""
        self.enabled = policy.failures != 0
        if not self.enabled:
            if self.state != CLOSED or self.remote:
                self.failures, self.probe = 0, None
                self._set(CLOSED)  # the breaker was switched off by a reload
            return None
        if self.state == CLOSED:
            if (remaining := self.follow()) > 0:
                raise self._reject(remaining, route, remote=True)  # another process opened it: honour that here
            return None
        if self.state == OPEN:
            remaining = self.opened_at + policy.cooldown - self.owner.clock()
            if remaining > 0:
                raise self._reject(remaining, route)
            self._set(HALF_OPEN)
        if self.probe is not None:
            raise self._reject(1.0, route)  # one probe at a time; the rest still fail fast
        self.probe = object()
        return self.probe

    def follow(self) -> float:
        """Seconds left of a breaker another process opened (0.0: none), while this one is closed;
        the gauge says open (2) for as long as this process fails fast for it, closed again after.

        Called on each call and after each refresh of the shared state (so the gauge goes back
        even when no call comes)."""
        shared = self.owner.shared
        remaining = shared.breaker_open(self.upstream) if shared is not None and self.enabled else 0.0
        if self.state == CLOSED and (remaining > 0) != self.remote:
            self.remote = remaining > 0
            if self.owner.metrics is not None:
                self.owner.metrics.circuit_state.labels(self.upstream).set(OPEN if self.remote else CLOSED)
        return remaining

    def record(self, policy: BreakerPolicy, token: object | None, ok: bool) -> None:
        """The outcome of an exchange; while not closed only the probe's outcome counts."""
        if token is not None and token is self.probe:
            self.probe = None
            if ok:
                self.failures = 0
                self._set(CLOSED)
                if self.owner.shared is not None:
                    self.owner.shared.publish_breaker(self.upstream, None)
            else:
                self._open(policy)
            return
        if self.state != CLOSED or policy.failures == 0:
            return
        if ok:
            self.failures = 0
            return
        self.failures += 1
        if self.failures >= policy.failures:
            self._open(policy)

    def release(self, token: object | None) -> None:
        """A probe that ended without an outcome (paced out, cancelled): let the next call probe."""
        if token is not None and token is self.probe:
            self.probe = None

    def _open(self, policy: BreakerPolicy) -> None:
        self.opened_at = self.owner.clock()
        self._set(OPEN)
        if self.owner.shared is not None:
            self.owner.shared.publish_breaker(self.upstream, policy.cooldown)  # every process fails fast too

    def _reject(self, remaining: float, route: str, remote: bool = False) -> ServiceUnavailable:
        wait = max(1, math.ceil(remaining))
        why = (
            "another gateway process opened its circuit (shared through Redis)"
            if remote
            else f"{self.failures} consecutive failures"
        )
        return ServiceUnavailable(
            f"upstream {self.upstream!r} is failing ({why}): circuit open, not calling it for {wait}s",
            kind="circuit_open",
            code="circuit_open",
            route=route,
            headers={"Retry-After": str(wait)},
        )
