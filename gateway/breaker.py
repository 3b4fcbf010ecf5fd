"""A circuit breaker per upstream: after N consecutive failed exchanges it opens and calls fail
fast with a 503 (no socket touched); after the cool-down one probe goes through (half-open).
An opening is published through Redis (gateway.shared), so every process fails fast too.
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

    def _set(self, state: int) -> None:
        self.state = state
        if self.owner.metrics is not None:
            self.owner.metrics.circuit_state.labels(self.upstream).set(state)
            if state == OPEN:
                self.owner.metrics.circuit_opened.labels(self.upstream).inc()

    def admit(self, policy: BreakerPolicy, route: str) -> object | None:
        """Let a call through (a token if it is the half-open probe), or raise a fast 503."""
        if policy.failures == 0:
            if self.state != CLOSED:
                self.failures, self.probe = 0, None
                self._set(CLOSED)  # the breaker was switched off by a reload
            return None
        if self.state == CLOSED:
            shared = self.owner.shared
            if shared is not None and (remaining := shared.breaker_open(self.upstream)) > 0:
                raise self._reject(remaining, route)  # another process opened it: honour that here
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

    def _reject(self, remaining: float, route: str) -> ServiceUnavailable:
        wait = max(1, math.ceil(remaining))
        return ServiceUnavailable(
            f"upstream {self.upstream!r} is failing ({self.failures} consecutive failures): "
            f"circuit open, not calling it for {wait}s",
            kind="circuit_open",
            code="circuit_open",
            route=route,
            headers={"Retry-After": str(wait)},
        )
