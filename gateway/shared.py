"""State every worker and replica shares through Redis: upstream budgets, client rate limits,
429 hold-offs and open breakers.

Why: behind an autoscaler the number of gateway processes moves, so a per-process budget is
spent N times over and one replica keeps calling an upstream that told another to wait.

- Budgets (sliding windows with reservations) and client token buckets are atomic Lua
  scripts (EVALSHA) that read Redis ``TIME``: replicas with skewed clocks agree, and there
  is no read-modify-write race.
- A 429 hold-off or an opened breaker is written at once; every process re-reads them
  every ``REFRESH`` seconds, so checking them costs no Redis round trip per request.
- The same refresh is a heartbeat: each process keeps an entry in a sorted set, and the
  live count is the number of fresh entries.  While Redis is unreachable, each process
  falls back to a local share (the limit divided by that count) and sharing resumes on
  the first refresh that succeeds.

The Redis URL is the one the cache uses (``cache.redis.url``).  Credentials are told apart
by a hash salted with a random value kept in Redis: secret values never reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from gateway import redis_pool
from gateway.config import Config
from gateway.errors import ServiceUnavailable
from gateway.redis_pool import Busy
from gateway.shared_lua import SCRIPTS

log = logging.getLogger("gateway.shared")

#: how often each process beats and re-reads the hold-offs and breakers
REFRESH = 0.5
#: a process whose heartbeat is older than this is no longer counted live
HEARTBEAT_TTL_MS = 3000
#: a budget whose shared use someone asked about (``used``) is re-read at each refresh for this long
WATCH_FOR = 3600.0
def busy_error(route: str) -> ServiceUnavailable:
    """The 503 a request gets when no Redis connection came free in time (``Busy``): nothing falls
    back to local shares, only this request is refused."""
    return ServiceUnavailable(
        f"the gateway is too busy to reach its shared state (Redis) within {redis_pool.POOL_WAIT:g}s; retry in 1s",
        kind="budget",  # refused before anything was sent, like a paced-out call (no breaker failure)
        code="shared_state_busy",
        route=route,
        headers={"Retry-After": "1"},
    )


def failure_reason(exc: BaseException) -> str:
    """How a Redis call failed, for ``gateway_shared_state_failures_total{reason}``."""
    if isinstance(exc, TimeoutError | RedisTimeout):
        return "timeout"
    if isinstance(exc, ConnectionError | OSError | RedisConnectionError):
        return "connection"
    return "error"


class SharedState:
    """One process's view of the shared state; ``active`` while Redis answers."""

    def __init__(
        self,
        on_change: Callable[[bool, int], None] | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.on_change = on_change
        #: told each failed Redis call's reason (``failure_reason``, or ``busy``)
        self.on_failure = on_failure
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.url: str | None = None
        self.prefix = "routegate"
        self.timeout = 0.25
        self.retry_after = 1.0
        #: Redis answered the last operation (and the salt is known)
        self.up = False
        #: changes each time sharing stops or resumes (pacing hands its windows over then)
        self.epoch = 0
        #: live processes, as last counted in Redis (1 until the first heartbeat)
        self.instances = 1
        #: when Redis last answered (wall clock), for /status
        self.last_ok: float | None = None
        self._redis: Any = None
        self._scripts: dict[str, Any] = {}
        self._slots = redis_pool.Slots()
        self._salt: bytes | None = None
        self._holds: dict[str, float] = {}
        self._breakers: dict[str, float] = {}
        #: when Redis last answered (monotonic): slots taken before may fill the window
        self.answered = -math.inf
        #: when this process last saw sharing stop (monotonic): no slot is reserved after it
        self.lost = -math.inf
        #: when sharing last resumed after Redis failed (monotonic): the local shares bind for one
        #: window more (-inf: Redis never failed here, this process sent nothing unshared)
        self.resumed = -math.inf
        self._fell_back = False
        self._down_until = 0.0
        self._resumed = -math.inf
        self._seq = 0
        #: budgets' shared use: {send log key: (windows ms, when last asked)} to re-read, and
        #: {send log key: (when read, windows ms, slots used per window)} as last read
        self._watch: dict[str, tuple[tuple[int, ...], float]] = {}
        self._used: dict[str, tuple[float, tuple[int, ...], tuple[int, ...]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def configured(self) -> bool:
        return self._redis is not None

    @property
    def active(self) -> bool:
        return self._redis is not None and self.up and time.monotonic() >= self._down_until

    def configure(self, config: Config, resolve: Callable[[Any], str | None]) -> None:
        """Share through the cache's Redis (``cache.backend: redis`` or ``auto``) when its URL resolves."""
        s = config.cache
        url = resolve(s.redis_url) if s.backend != "memory" and s.redis_url is not None else None
        if url == self.url and (s.redis_prefix, s.redis_timeout) == (self.prefix, self.timeout):
            return
        old = self._redis
        self.url, self.prefix, self.timeout, self.retry_after = (
            url,
            s.redis_prefix,
            s.redis_timeout,
            s.redis_retry_after,
        )
        self._redis, self._salt, self.up = None, None, False
        if old is not None:
            self._spawn(old.aclose())
        if url is None:
            self._report()
            return
        # a burst waits for a pooled connection (bounded, apart from Redis's own timeout): a busy
        # process is never taken for a Redis outage
        self._redis = redis_pool.client(url, self.timeout)
        self._slots = redis_pool.Slots()
        self._scripts = {name: self._redis.register_script(src) for name, src in SCRIPTS.items()}
        self._report()

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, "s", *parts))

    def _report(self) -> None:
        if self.on_change is not None:
            self.on_change(self.active, self.instances)

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, name: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        """One script run; a failure of Redis marks it down (the callers fall back to local shares).

        Waiting for one of this process's connections is not Redis failing: past
        ``redis_pool.POOL_WAIT`` it raises ``Busy`` and nothing else changes.
        """
        if self._redis is None or time.monotonic() < self._down_until:
            raise ConnectionError("shared state unavailable")
        try:
            async with self._slots.slot():
                return await self._run(name, keys, args)
        except Busy:
            self._failed("busy")
            raise

    async def _run(self, name: str, keys: Sequence[str], args: Sequence[object]) -> Any:
        try:
            async with asyncio.timeout(self.timeout * 2):
                result = await self._scripts[name](keys=list(keys), args=list(args))
            self.answered = time.monotonic()
            return result
        except Exception as exc:
            self._failed(failure_reason(exc))
            if self.up:
                self.lost = time.monotonic()
                # the type only: a connection error's text can carry the host, never log the URL
                log.warning(
                    "shared state: redis failed (%s); local shares of every budget and limit for now",
                    type(exc).__name__,
                )
                self.epoch += 1
            self.up, self._fell_back = False, True
            self._down_until = time.monotonic() + self.retry_after
            self._report()
            raise ConnectionError("shared state unavailable") from None

    def _failed(self, reason: str) -> None:
        if self.on_failure is not None:
            self.on_failure(reason)

    async def refresh(self) -> None:
        """Heartbeat, live count, and the hold-offs and breakers everyone must honour."""
        if self._redis is None:
            return
        keys = [self._key("instances"), self._key("holds"), self._key("breakers"), self._key("salt")]
        self._down_until = 0.0  # the heartbeat is how a down Redis is found back
        try:
            now_ms, n, salt, holds, breakers = await self._call(
                "beat", keys, [self.id, HEARTBEAT_TTL_MS, os.urandom(16).hex()]
            )
        except (ConnectionError, Busy):
            return  # Busy: the next beat comes in REFRESH
        mono = time.monotonic()
        self._salt = salt if isinstance(salt, bytes) else str(salt).encode()
        self._holds = _mirror(holds, int(now_ms), mono)
        self._breakers = _mirror(breakers, int(now_ms), mono)
        if not self.up:
            self._resumed = mono
            if self._fell_back:
                self.resumed = mono
        if mono - self._resumed < HEARTBEAT_TTL_MS / 1000:
            # a restarted Redis has not heard every heartbeat yet: never count fewer than before
            self.instances = max(self.instances, int(n))
        else:
            self.instances = max(1, int(n))
        self.last_ok = time.time()
        if not self.up:
            self.epoch += 1
            log.info("shared state: redis answers; budgets and limits are shared by %d processes", self.instances)
        self.up = True
        self._report()
        await self._count(list(self._watch))

    async def run(self) -> None:
        """Refresh until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(REFRESH)

    async def start(self) -> None:
        if self._task is None:
            self.id = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"  # after any fork: one entry per process
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._tasks):  # hold-offs and breakers still being written
            with contextlib.suppress(Exception):
                await task
        if self._redis is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout * 2):
                    await self._redis.zrem(self._key("instances"), self.id)  # leave the live count at once
            await self._redis.aclose()

    def describe(self) -> tuple[str, str]:
        """(state, text) for /status: shared, fallback (local shares) or local (no Redis configured)."""
        if not self.configured:
            return "local", "no Redis configured: budgets, client limits, hold-offs and breakers are this process's own"
        if self.active:
            return "shared", (
                f"budgets, client limits, 429 hold-offs and breakers are shared through Redis "
                f"by {self.instances} live process(es)"
            )
        return "fallback", (
            f"Redis is unreachable: each process keeps 1/{self.instances} of every budget and client limit "
            f"({self.instances} live process(es) when last seen); sharing resumes when Redis answers"
        )

    # --- credentials, hold-offs and breakers ---------------------------------------------

    def credential(self, material: bytes) -> str | None:
        """A credential's shared id (salted with Redis's salt), or None before the salt is known."""
        if self._salt is None:
            return None
        return hashlib.blake2b(material, key=self._salt[:64], digest_size=12).hexdigest()

    def held(self, upstream: str, cred: str) -> float:
        """Seconds left of a 429 hold-off any process saw for this credential."""
        return max(0.0, self._holds.get(f"{upstream}|{cred}", 0.0) - time.monotonic())

    def breaker_open(self, upstream: str) -> float:
        """Seconds left of a breaker some process opened for this upstream."""
        return max(0.0, self._breakers.get(upstream, 0.0) - time.monotonic())

    def publish_hold(self, upstream: str, cred: str, seconds: float) -> None:
        field = f"{upstream}|{cred}"
        self._holds[field] = max(self._holds.get(field, 0.0), time.monotonic() + seconds)
        self._spawn(self._publish("holds", field, seconds))

    def publish_breaker(self, upstream: str, seconds: float | None) -> None:
        """An opened breaker (for ``seconds``), or None: it closed, nobody need hold off any longer."""
        if seconds is None:
            self._breakers.pop(upstream, None)
            if self.active:
                self._spawn(self._unpublish(upstream))
            return
        self._breakers[upstream] = time.monotonic() + seconds
        self._spawn(self._publish("breakers", upstream, seconds))

    async def _publish(self, table: str, field: str, seconds: float) -> None:
        with contextlib.suppress(ConnectionError, Busy):
            await self._call("hold", [self._key(table)], [field, max(1, int(seconds * 1000))])

    async def _unpublish(self, upstream: str) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout * 2):
                await self._redis.hdel(self._key("breakers"), upstream)

    # --- budgets and client limits -------------------------------------------------------

    async def reserve(
        self,
        upstream: str,
        cred: str,
        limits: Sequence[tuple[int, float]],
        max_wait: float,
        earliest: float,
        seeds: Sequence[float] = (),
    ) -> tuple[bool, float] | None:
        """A send slot in the shared window: (taken, seconds to wait), or None if Redis is down;
        raises ``Busy`` when no connection came free in time.

        ``seeds``: this process's sends while Redis was down (seconds from now, negative),
        written first so the window counts them.
        """
        self._seq += 1
        args: list[object] = [
            int(max(per for _, per in limits) * 1000),
            int(max_wait * 1000),
            f"{self.id}:{self._seq}",
            int(earliest * 1000),
            len(seeds),
            *(int(t * 1000) for t in seeds),
        ]
        for count, per in limits:
            args += [count, int(per * 1000)]
        key = self._key("b", upstream, cred or "-")
        try:
            taken, wait_ms, *used = await self._call("reserve", [key], args)
        except ConnectionError:
            return None
        self._used[key] = (time.monotonic(), _windows(limits), tuple(int(n) for n in used))
        return bool(taken), int(wait_ms) / 1000

    def used(self, upstream: str, cred: str, limits: Sequence[tuple[int, float]]) -> tuple[int, ...] | None:
        """The slots every process used in each window of a budget, as read at most about
        ``REFRESH`` ago; None while Redis is down or before the first read.

        Why: a probe should leave the budget to scripts by what all processes used, yet asking
        must cost no Redis round trip.  Asking starts a read at once and puts the budget on the
        list the refresh re-reads (for ``WATCH_FOR`` seconds after the last time it was asked).
        """
        key = self._key("b", upstream, cred or "-")
        windows = _windows(limits)
        mono = time.monotonic()
        known = self._watch.get(key)
        self._watch[key] = (windows, mono)
        if known is None or known[0] != windows:
            self._spawn(self._count([key]))
        seen = self._used.get(key)
        if not self.active or seen is None or seen[1] != windows or mono - seen[0] > REFRESH * 2 + self.timeout * 2:
            return None
        return seen[2]

    async def _count(self, keys: list[str]) -> None:
        """Re-read the shared use of watched budgets (one read-only script run for all of them)."""
        mono = time.monotonic()
        for key in [k for k, (_, asked) in self._watch.items() if mono - asked > WATCH_FOR]:
            del self._watch[key]
        for key in [k for k, (read, _, _) in self._used.items() if k not in self._watch and mono - read > WATCH_FOR]:
            del self._used[key]  # credentials no longer in use
        asked = [(k, self._watch[k][0]) for k in keys if k in self._watch]
        if not asked:
            return
        args: list[object] = []
        for _key, windows in asked:
            args += [len(windows), *windows]
        try:
            flat = await self._call("count", [k for k, _ in asked], args)
        except (ConnectionError, Busy):
            return
        mono, i = time.monotonic(), 0
        for key, windows in asked:
            self._used[key] = (mono, windows, tuple(int(n) for n in flat[i : i + len(windows)]))
            i += len(windows)

    async def take(self, client: str, rate: float, burst: int) -> float | None:
        """A token of the client's shared bucket: 0.0, seconds until one, or None if Redis is down;
        raises ``Busy`` when no connection came free in time."""
        try:
            wait_ms = await self._call("take", [self._key("r", client)], [repr(rate / 1000), burst])
        except ConnectionError:
            return None
        return int(wait_ms) / 1000


def _mirror(flat: Sequence[Any], now_ms: int, mono: float) -> dict[str, float]:
    """Redis's {field: until (server ms)} as {field: until (this process's monotonic clock)}."""
    out: dict[str, float] = {}
    for i in range(0, len(flat) - 1, 2):
        name = flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])
        out[name] = mono + (int(flat[i + 1]) - now_ms) / 1000
    return out


def _windows(limits: Sequence[tuple[int, float]]) -> tuple[int, ...]:
    return tuple(int(per * 1000) for _, per in limits)


def local_share(limits: Sequence[tuple[int, float]], instances: int) -> tuple[tuple[int, float], ...]:
    """Each of ``instances`` processes' part of a budget (at least one call per window)."""
    return tuple((max(1, count // max(1, instances)), per) for count, per in limits)
