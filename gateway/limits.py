"""Admission control: per-client-key rate limits and a global cap on requests in flight.

Both answer 429 with ``Retry-After`` *before* anything is forwarded, so a runaway
script spends its own budget, not the upstream's or the other teams'.  The state
lives as long as the process (on ``Gateway``, not on the per-config ``Runtime``):
a reload must neither hand every key a fresh bucket nor forget the requests that
are still running.  Everything here runs on the event loop without awaiting, so a
check-then-take is atomic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from gateway.config import Config, RateLimit
from gateway.errors import TooManyRequests
from gateway.metrics import Metrics
from gateway.redis_pool import Busy
from gateway.shared import SharedState, busy_error


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; one request takes one token."""

    __slots__ = ("limit", "stamp", "tokens")

    def __init__(self, limit: RateLimit, now: float, tokens: float | None = None) -> None:
        self.limit = limit
        self.tokens = float(limit.burst) if tokens is None else tokens
        self.stamp = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 if one was there, else the seconds until one will be."""
        elapsed = max(0.0, now - self.stamp)
        self.stamp = now
        self.tokens = min(float(self.limit.burst), self.tokens + elapsed * self.limit.rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.limit.rate


class Limits:
    """The rate-limit buckets of every client key and the in-flight counter."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self.clock = clock
        self.max_in_flight: int | None = None
        self.in_flight = 0
        self._limits: dict[str, RateLimit] = {}
        self._buckets: dict[str, TokenBucket] = {}
        #: buckets shared through Redis (None: this process only); ``_fallback`` holds the
        #: local shares used while Redis is down
        self.shared: SharedState | None = None
        self._fallback: dict[str, TokenBucket] = {}
        #: per client, until when (``clock``) the shared bucket surely has no token: Redis said so
        self._empty_until: dict[str, float] = {}

    def configure(self, config: Config) -> None:
        """Adopt a (re)loaded config; buckets of keys whose limit is unchanged keep their state."""
        self.max_in_flight = config.server.max_concurrency
        self._limits = {k.name: k.rate_limit for k in config.access.clients if k.rate_limit is not None}
        self._buckets = {
            name: bucket
            for name, bucket in self._buckets.items()
            if self._limits.get(name) == bucket.limit  # a changed limit starts a full bucket
        }
        self._fallback = {}
        self._empty_until = {}

    @property
    def configured(self) -> bool:
        """Any limit to admit requests by (else no route runs the limits stage, gateway.pipeline.admission)."""
        return self.max_in_flight is not None or bool(self._limits)

    async def admit(self, client: str, route: str) -> None:
        """``enter``, with the client's rate limit taken from the bucket every process shares.

        No Redis round trip for a client without a limit, nor for one Redis said is over its limit,
        until its bucket can hold a token again (``_empty_until``); while Redis is down the key gets
        a local bucket of its share (rate and burst divided by the live process count), which
        starts empty and fills at that share.
        """
        shared = self.shared
        limit = self._limits.get(client)
        if limit is None or shared is None or not shared.configured:
            self.enter(client, route)
            return
        self._capacity(route)
        asked = self.clock()
        if (empty := self._empty_until.get(client, 0.0) - asked) > 0.0:
            raise self._rate_limited(client, limit, route, empty)  # no Redis round trip for a client over its limit
        try:
            wait = await shared.take(client, limit.rate, limit.burst) if shared.active else None
        except Busy:
            raise busy_error(route) from None  # this process is busy, Redis is not down: no fallback
        if wait is not None and wait > 0.0:
            # the shared bucket refills at a fixed rate from when Redis answered (after ``asked``) and the
            # other processes only take from it: until asked + wait it has no token for anyone
            self._empty_until[client] = max(self._empty_until.get(client, 0.0), asked + wait)
        if wait is None:
            n = max(1, shared.instances)
            bucket = self._fallback.get(client)
            if bucket is None or bucket.limit.rate != limit.rate / n:
                share = RateLimit(limit.rate / n, max(1, limit.burst // n), limit.text)
                # empty at first: the shared bucket may have just been drained, and a full local
                # share in every process would hand the client one more burst than its limit
                bucket = self._fallback[client] = TokenBucket(share, self.clock(), tokens=0.0)
            wait = bucket.take(self.clock())
        elif self._fallback:
            self._fallback.pop(client, None)  # Redis is back: a later outage starts empty again
        if wait > 0.0:
            raise self._rate_limited(client, limit, route, wait)
        self._capacity(route)  # others may have entered while Redis answered
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)

    def _capacity(self, route: str) -> None:
        cap = self.max_in_flight
        if cap is not None and self.in_flight >= cap:
            self.metrics.limited.labels("concurrency").inc()
            raise TooManyRequests(
                f"the gateway is at its limit of {cap} requests in flight; retry shortly",
                code="over_capacity",
                route=route,
                headers={"Retry-After": "1"},
            )

    def _rate_limited(self, client: str, limit: RateLimit, route: str, wait: float) -> TooManyRequests:
        self.metrics.limited.labels("rate_limit").inc()
        retry = max(1, math.ceil(wait))
        return TooManyRequests(
            f"key {client!r} is over its rate limit of {limit.text}; retry in {retry} s",
            code="rate_limited",
            route=route,
            headers={"Retry-After": str(retry)},
        )

    def enter(self, client: str, route: str) -> None:
        """Take one in-flight slot for the request (``leave`` gives it back), or raise 429 (nothing is forwarded)."""
        self._capacity(route)
        limit = self._limits.get(client)
        if limit is not None:
            now = self.clock()
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = TokenBucket(limit, now)
            wait = bucket.take(now)
            if wait > 0.0:
                raise self._rate_limited(client, limit, route, wait)
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)

    def leave(self) -> None:
        self.in_flight -= 1
        self.metrics.in_flight.set(self.in_flight)
