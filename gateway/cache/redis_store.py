"""The shared backend: entries and invalidation markers in Redis, seen by every replica.

Redis is an optimisation, never a dependency of serving: every operation has a short
timeout, a failure is counted and turns into "not cached", and after one the backend
stays out of the way for ``retry_after`` so a dead Redis costs no latency.  A burst that
finds every pooled connection busy is no failure (gateway.redis_pool): the calls wait a
bounded time, and one that finds none goes uncached alone.
Invalidations that could not be written are kept (bounded) and written first when
Redis answers again, so a replica never serves an entry a write made invalid.

Layout under ``{prefix}:``: ``e:{route}:{path}#{digest}`` entries (expiring with
their stale window), ``m:{marker}`` markers, ``seq`` the write sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.exceptions import RedisError

from gateway import redis_pool
from gateway.cache.policy import CacheKey, normalize_prefix
from gateway.cache.store import CacheUnavailable, Entry, Found

log = logging.getLogger("gateway.cache")

T = TypeVar("T")

#: INCR the sequence and stamp it on every marker, atomically: no fill can see half of it
_INVALIDATE = """
local seq = redis.call('INCR', KEYS[1])
for i = 2, #KEYS do redis.call('SET', KEYS[i], seq, 'PX', ARGV[1]) end
return seq
"""
#: more pending invalidations than this collapse into "everything is invalid"
_MAX_PENDING = 1000


async def _nothing() -> None:
    return None


def _glob(text: str) -> str:
    """Escape Redis MATCH wildcards in a literal."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisBackend:
    name = "redis"

    def __init__(
        self,
        url: str,
        prefix: str,
        timeout: float,
        retry_after: float,
        on_error: Callable[[str], None],
    ) -> None:
        # one try per command (the upstream is the fallback, not a retry loop), and a burst waits for a
        # pooled connection instead of being taken for Redis failing (gateway.redis_pool)
        self._redis = redis_pool.client(url, timeout)
        self._slots = redis_pool.Slots()
        self._p = prefix
        self._timeout = timeout
        self._retry_after = retry_after
        self._on_error = on_error
        self._down_until = 0.0
        self._pending: list[str] = []
        self._pending_keep_ms = 0
        self._invalidate = self._redis.register_script(_INVALIDATE)
        self._retry: asyncio.Task[None] | None = None

    def _entry_key(self, key: CacheKey) -> str:
        return f"{self._p}:e:{key.text}"

    async def _op(self, op: str, fn: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        if time.monotonic() < self._down_until:
            raise CacheUnavailable("redis is down")
        try:
            async with self._slots.slot():
                return await self._timed(op, fn, timeout)
        except redis_pool.Busy:
            # this process is busy, Redis is not down: only this call goes without the cache
            raise CacheUnavailable(f"redis {op}: no connection free in time") from None

    async def _timed(self, op: str, fn: Callable[[], Awaitable[T]], timeout: float | None) -> T:
        try:
            async with asyncio.timeout(timeout or self._timeout * 2):
                if self._pending:
                    await self._flush_pending()
                return await fn()
        except (RedisError, OSError, TimeoutError) as exc:
            if time.monotonic() >= self._down_until:
                # the type only: a connection error's text can carry the host, never log the URL
                log.warning("cache: redis %s failed (%s); serving from upstreams for now", op, type(exc).__name__)
            self._down_until = time.monotonic() + self._retry_after
            self._on_error(op)
            raise CacheUnavailable(f"redis {op} failed") from None

    async def _flush_pending(self) -> None:
        markers, keep = self._pending, self._pending_keep_ms
        await self._invalidate(keys=[f"{self._p}:seq", *(f"{self._p}:m:{m}" for m in markers)], args=[keep])
        self._pending = []
        log.info("cache: redis is back; wrote %d invalidation(s) held while it was down", len(markers))

    async def _retry_pending(self) -> None:
        """Held invalidations must reach Redis even if this replica serves nothing more."""
        while self._pending:
            await asyncio.sleep(self._retry_after)
            with contextlib.suppress(CacheUnavailable):
                await self._op("invalidate", _nothing)

    async def lookup(self, key: CacheKey, markers: Sequence[str]) -> Found:
        async def go() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(self._entry_key(key))
            pipe.mget([f"{self._p}:m:{m}" for m in markers])
            pipe.get(f"{self._p}:seq")
            result: list[Any] = await pipe.execute()
            return result

        raw, marks, seq = await self._op("lookup", go)
        entry = Entry.decode(raw) if raw is not None else None
        newest = max((int(m) for m in marks if m is not None), default=0)
        return Found(entry, newest, int(seq or 0))

    async def store(self, key: CacheKey, entry: Entry, lifetime: float) -> None:
        ms = max(1, int(lifetime * 1000))
        await self._op("store", lambda: self._redis.set(self._entry_key(key), entry.encode(), px=ms))

    async def discard(self, key: CacheKey) -> None:
        await self._op("discard", lambda: self._redis.unlink(self._entry_key(key)))

    async def invalidate(self, markers: Sequence[str], keep_for: float) -> None:
        ms = max(1000, int(keep_for * 1000))

        async def go() -> Any:
            return await self._invalidate(keys=[f"{self._p}:seq", *(f"{self._p}:m:{m}" for m in markers)], args=[ms])

        try:
            await self._op("invalidate", go)
        except CacheUnavailable:
            pending = [*self._pending, *markers]
            self._pending = ["t:/"] if len(pending) > _MAX_PENDING else list(dict.fromkeys(pending))
            self._pending_keep_ms = max(self._pending_keep_ms, ms)
            if self._retry is None or self._retry.done():
                self._retry = asyncio.get_running_loop().create_task(self._retry_pending())

    async def purge(self, route: str | None, prefix: str | None) -> int:
        base = f"{self._p}:e:"
        r = _glob(route) if route is not None else "*"
        if prefix is None or normalize_prefix(prefix) == "/":
            patterns = [f"{base}{r}:*"]
        else:
            p = _glob(normalize_prefix(prefix))
            patterns = [f"{base}{r}:{p}#*", f"{base}{r}:{p}/*"]

        async def go() -> int:
            deleted = 0
            for pattern in patterns:
                batch: list[Any] = []
                async for k in self._redis.scan_iter(match=pattern, count=500):
                    batch.append(k)
                    if len(batch) >= 500:
                        deleted += int(await self._redis.unlink(*batch))
                        batch = []
                if batch:
                    deleted += int(await self._redis.unlink(*batch))
            return deleted

        # a scan may take longer than one lookup: give it its own, wider bound
        return await self._op("purge", go, timeout=max(self._timeout * 2, 10.0))

    def usage(self) -> tuple[int, int] | None:
        return None

    async def close(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        await self._redis.aclose()
