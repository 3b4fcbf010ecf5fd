"""A Redis client whose burst of concurrent calls waits for a connection instead of failing.

Why: redis-py's default asyncio pool raises ``MaxConnectionsError`` once 100 connections are in
use, and a caller that takes every Redis error for an outage (shared state, the cache) would then
fall back for a whole burst while Redis is healthy.  Here each call first takes one of ``POOL``
slots, waiting at most ``POOL_WAIT``, apart from (and before) the timeout that times Redis itself:
a caller told ``Busy`` knows Redis was never asked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

#: Redis calls one client runs at once; more wait for a free connection
POOL = 50
#: the longest a call waits for one before it is given up (``Busy``)
POOL_WAIT = 2.0


class Busy(Exception):
    """No connection came free within ``POOL_WAIT``: this process is busy, Redis is not down."""


def client(url: str, timeout: float) -> Any:
    """A client over a blocking pool (one try per command, ``timeout`` per socket operation)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL + 2,  # spares for the calls made without a slot (shutdown, clean-up)
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return aioredis.Redis.from_pool(pool)


class Slots:
    """At most ``POOL`` calls at once; the others wait for a slot, at most ``POOL_WAIT``."""

    def __init__(self) -> None:
        self._free = asyncio.Semaphore(POOL)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(POOL_WAIT):
                await self._free.acquire()
        except TimeoutError:
            raise Busy from None
        try:
            yield
        finally:
            self._free.release()
