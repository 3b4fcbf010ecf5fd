"""The process-wide side of the cache: which backend (memory or Redis) a config asks for, kept
across reloads that keep it, and retired (closed at shutdown) when a reload changes it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from gateway.auth import Credentials
from gateway.cache.core import ResponseCache
from gateway.cache.policy import CacheKey
from gateway.cache.store import Backend, CacheUnavailable, Entry, Found, MemoryBackend
from gateway.config import CacheSettings, Config
from gateway.metrics import Metrics

log = logging.getLogger("gateway.cache")


class CacheBackends:
    """Process-wide: opens the backend a config asks for and keeps it across reloads that keep it."""

    def __init__(self, credentials: Credentials, metrics: Metrics) -> None:
        self.credentials = credentials
        self.metrics = metrics
        #: wall clock for freshness; tests may replace it
        self.clock: Callable[[], float] = time.time
        self._current: tuple[tuple[object, ...], Backend] | None = None
        self._retired: list[Backend] = []

    def for_config(self, config: Config) -> ResponseCache | None:
        """None when the cache is off or no route caches (writes then have nothing to invalidate)."""
        if not config.cache.enabled or not any(r.cache is not None and r.method == "GET" for r in config.routes):
            self._retire()
            return None
        backend = self._backend(config.cache)
        return ResponseCache(config, backend, self)

    def _backend(self, s: CacheSettings) -> Backend:
        if s.backend == "auto":  # redis when its URL is set (ROUTEGATE_REDIS_URL), else this process's memory
            found = self.credentials.resolve(s.redis_url) if s.redis_url is not None else None
            s = replace(s, backend="redis" if found else "memory")
        if s.backend == "redis":
            url = self.credentials.resolve(s.redis_url) if s.redis_url is not None else None
            ident: tuple[object, ...] = ("redis", url, s.redis_prefix, s.redis_timeout, s.redis_retry_after)
        else:
            url = None
            ident = ("memory", s.max_bytes)
        if self._current is not None and self._current[0] == ident:
            return self._current[1]
        self._retire()
        backend: Backend
        if s.backend == "redis":
            if url is None:
                hint = s.redis_url.hint() if s.redis_url is not None else "cache.redis.url"
                log.error("cache: backend redis has no URL (set %s); every request goes to the upstream", hint)
                backend = _Unavailable(lambda: self.metrics.cache_backend_errors.labels("redis", "connect").inc())
            else:
                try:
                    from gateway.cache.redis_store import RedisBackend  # the redis package is only needed here
                except ImportError:
                    log.error("cache: backend redis needs the redis package (pip install 'routegate[redis]')")
                    backend = _Unavailable(lambda: self.metrics.cache_backend_errors.labels("redis", "connect").inc())
                else:
                    backend = RedisBackend(
                        url,
                        s.redis_prefix,
                        s.redis_timeout,
                        s.redis_retry_after,
                        lambda op: self.metrics.cache_backend_errors.labels("redis", op).inc(),
                    )
        else:
            backend = MemoryBackend(s.max_bytes)
        self._current = (ident, backend)
        return backend

    def _retire(self) -> None:
        if self._current is not None:
            self._retired.append(self._current[1])
            self._current = None
            self.metrics.cache_entries.set(0)
            self.metrics.cache_bytes.set(0)

    async def close(self) -> None:
        backends = [*self._retired, *([self._current[1]] if self._current else [])]
        self._retired, self._current = [], None
        for b in backends:
            await b.close()


class _Unavailable:
    """A Redis backend without a URL: every operation is a counted miss."""

    name = "redis"

    def __init__(self, on_error: Callable[[], None]) -> None:
        self._on_error = on_error

    def _fail(self) -> CacheUnavailable:
        self._on_error()
        return CacheUnavailable("no redis URL")

    async def lookup(self, key: CacheKey, markers: Sequence[str]) -> Found:
        raise self._fail()

    async def store(self, key: CacheKey, entry: Entry, lifetime: float) -> None:
        raise self._fail()

    async def discard(self, key: CacheKey) -> None:
        raise self._fail()

    async def invalidate(self, markers: Sequence[str], keep_for: float) -> None:
        self._on_error()

    async def purge(self, route: str | None, prefix: str | None) -> int:
        raise self._fail()

    def usage(self) -> tuple[int, int] | None:
        return None

    async def close(self) -> None:
        return None
