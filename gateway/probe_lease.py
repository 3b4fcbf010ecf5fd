"""Probes run once per deployment: a Redis lease elects the instance that runs them.

N replicas (and their ``--workers``) probing the same upstreams multiply probe traffic
by N and can each see a slightly different answer.  With the cache's Redis configured
(``cache.redis.url``), every instance competes for one key, ``{prefix}:probes:lease``
(``SET NX PX`` with its instance id); the holder renews it while it lives, runs the
rounds and writes the results to ``{prefix}:probes:results``; the others read those
and feed them into their own health and metrics, so ``/status`` and
``gateway_route_up`` agree everywhere and name the instance that probed.

Timings come from ``probes.interval``: the lease lives 60% of it and is tried every
20%, so a dead holder's lease expires and another instance takes over within one
interval.  Redis is never a dependency: with no URL, or while Redis does not answer,
an instance probes for itself, as a lone gateway does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Literal

from gateway.auth import Credentials
from gateway.config import Config

log = logging.getLogger("gateway.probes")

#: extend the lease only if this instance still holds it (a paused holder must not take back a lost one)
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

#: "local": no lease (no Redis, or it is not answering): probe for yourself
Role = Literal["holder", "follower", "local"]


def instance_id() -> str:
    """Who this process is, as /status names it: the host (the pod's name on Kubernetes) and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def lease_ttl(interval: float) -> float:
    """How long a lease lasts unrenewed: expiry plus one retry stays within one probe interval."""
    return max(interval * 0.6, 0.3)


def lease_tick(interval: float) -> float:
    """How often the lease is renewed (by its holder) or tried for (by the others)."""
    return max(interval * 0.2, 0.1)


class ProbeLease:
    """One instance's side of the lease: its role now, and the shared results."""

    def __init__(self, url: str, prefix: str, timeout: float, instance: str) -> None:
        import redis.asyncio as aioredis  # the redis package is optional (routegate[redis])
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        #: what a Redis that is down or slow raises
        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)
        self._read_errors: tuple[type[Exception], ...] = (RedisError, OSError, ValueError)
        self._redis = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self._lease_key = f"{prefix}:probes:lease"
        self._results_key = f"{prefix}:probes:results"
        self._renew = self._redis.register_script(_RENEW)
        self._release = self._redis.register_script(_RELEASE)
        self.instance = instance
        self.role: Role = "local"
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def step(self, interval: float) -> Role:
        """Renew the lease (holder) or try to take it (others); "local" while Redis fails."""
        ttl_ms = int(lease_ttl(interval) * 1000)
        try:
            if self.role == "holder" and await self._renew(keys=[self._lease_key], args=[self.instance, ttl_ms]):
                role: Role = "holder"
            elif await self._redis.set(self._lease_key, self.instance, nx=True, px=ttl_ms):
                role = "holder"
            else:
                role = "follower"
        except self._errors as exc:
            if not self._failing:
                log.warning("probe lease: Redis is not answering (%s); probing for this instance", type(exc).__name__)
            self._failing, role = True, "local"
        else:
            if self._failing:
                log.info("probe lease: Redis answers again")
            self._failing = False
        if role != self.role and role != "local":
            log.info("probe lease: instance %s is now the %s", self.instance, role)
        self.role = role
        return role

    def start(self, interval: Callable[[], float]) -> None:
        """Keep the lease in the background; ``interval()`` gives the current probe interval."""

        async def keep() -> None:
            while True:
                seconds = interval()
                await self.step(seconds)
                await asyncio.sleep(lease_tick(seconds))

        if self._task is None:
            self._task = asyncio.create_task(keep(), name="routegate-probe-lease")

    async def publish(self, payload: dict[str, Any], interval: float) -> None:
        """The holder's results, for every other instance; they expire if no holder writes any more."""
        if self.role != "holder":
            return
        with contextlib.suppress(*self._errors):
            await self._redis.set(self._results_key, json.dumps(payload), px=int(max(interval * 5, 10) * 1000))

    async def shared(self) -> dict[str, Any] | None:
        """The latest results the holder wrote (None: none yet, or Redis did not answer)."""
        try:
            raw = await self._redis.get(self._results_key)
            return None if raw is None else dict(json.loads(raw))
        except self._read_errors:
            return None

    async def close(self) -> None:
        """Stop, and hand the lease over at once rather than when it expires."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.role == "holder":
            with contextlib.suppress(*self._errors):
                await self._release(keys=[self._lease_key], args=[self.instance])
        self.role = "local"
        with contextlib.suppress(*self._errors):
            await self._redis.aclose()


class Leases:
    """The lease for the config being served: the cache's Redis URL and prefix (a reload may change them)."""

    def __init__(self, credentials: Credentials, instance: str) -> None:
        self._credentials = credentials
        self.instance = instance
        self._current: tuple[tuple[str, str], ProbeLease] | None = None

    async def for_config(self, config: Config) -> ProbeLease | None:
        s = config.cache
        url = self._credentials.resolve(s.redis_url) if s.redis_url is not None else None
        ident = (url or "", s.redis_prefix)
        if self._current is not None and self._current[0] == ident:
            return self._current[1]
        await self.close()
        if not url:
            return None
        try:
            lease = ProbeLease(url, s.redis_prefix, s.redis_timeout, self.instance)
        except ImportError:
            log.error("probe lease: needs the redis package (pip install 'routegate[redis]'); probing alone")
            return None
        self._current = (ident, lease)
        return lease

    async def close(self) -> None:
        if self._current is not None:
            lease, self._current = self._current[1], None
            await lease.close()
