"""The gateway's stable API over HTTP: pacing as the gateway says, retrying what may go away by itself."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from .codes import FATAL_CODES, FINAL_CODES, FORBIDDEN_CODES, RETRY_STATUSES
from .console import log, one_line
from .settings import BACKOFF_BASE, BACKOFF_CAP, PACED_LIMIT, PAGE, PAUSE_CAP


class ApiError(Exception):
    """A final (non-retried, or retried in vain) answer from the gateway."""

    def __init__(self, status: int, code: str, message: str, route: str | None = None) -> None:
        where = f" (route {route})" if route else ""
        super().__init__(f"{status} {code}{where}: {message}")
        self.status = status
        self.code = code
        self.route = route


class Fatal(Exception):
    """Nothing else can succeed either (refused credentials, a broken route): stop the run."""


Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class Pacer:
    """The gateway's "wait" (a 429, or a 503 with ``Retry-After``), shared by every worker.

    When one request is told to wait, the others hold off too instead of racing into the same
    limit, and no retry is spent: a rate limit slows the run down, it never fails a notebook.
    Being told to wait for ``limit`` seconds with no request getting through stops the run.
    """

    def __init__(self, sleep: Sleep, clock: Clock, limit: float = PACED_LIMIT) -> None:
        self.sleep = sleep
        self.clock = clock
        self.limit = limit
        self.until = 0.0
        self.stalled_since: float | None = None
        self.pauses = 0
        self._said_at: float | None = None

    async def ready(self) -> None:
        """Returns once no pause is in force; each waiter adds its own jitter, so they do not resume in lockstep."""
        while (left := self.until - self.clock()) > 0:
            await self.sleep(left * (1 + random.random() * 0.2))

    def hold(self, seconds: float, error: ApiError) -> float:
        """Start (or extend) the shared pause; the seconds to wait from now."""
        seconds = max(seconds, 0.1)  # "Retry-After: 0" again and again must not become a busy loop
        t = self.clock()
        if self.stalled_since is None:
            self.stalled_since = t
        elif t - self.stalled_since >= self.limit:
            raise Fatal(
                f"the gateway has said to wait for {t - self.stalled_since:.0f}s with no request getting "
                f"through (last: {one_line(str(error))}); stopping"
            )
        if t + seconds > self.until:
            self.until = t + seconds
            self.pauses += 1
            if self._said_at is None or t - self._said_at >= 30:  # a steady rate limit is one line per 30s
                self._said_at = t
                log(
                    f"the gateway says wait {seconds:.1f}s ({error.status} {error.code}): every worker pauses "
                    f"({self.pauses} pause(s) so far; waiting spends no retries)"
                )
        return self.until - t

    def passed(self) -> None:
        """A request got through: whatever pausing there was, the run is moving."""
        self.stalled_since = None


class Gateway:
    """GETs against the stable API: pacing as the gateway says, retrying what may go away by itself."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base: str,
        retries: int,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.retries = retries
        self.retried = 0
        self.sleep = sleep
        self.pacer = Pacer(sleep, clock)

    async def get(self, path: str, params: dict[str, str] | None = None) -> Any:
        fetched = await self.fetch(path, params)
        assert fetched is not None
        return fetched[0]

    async def fetch(
        self, path: str, params: dict[str, str] | None = None, etag: str | None = None
    ) -> tuple[Any, str | None] | None:
        """(body, its ETag), or None: the gateway answered 304, the body is still the one ``etag`` names."""
        conditional = {"If-None-Match": etag} if etag else None
        attempt = 0
        while True:
            await self.pacer.ready()
            retry_after: float | None = None
            try:
                async with self.session.get(self.base + path, params=params, headers=conditional) as resp:
                    if resp.status == 304 and etag:
                        self.pacer.passed()
                        return None
                    if resp.status == 200:
                        body = await resp.json(content_type=None)
                        self.pacer.passed()
                        return body, resp.headers.get("ETag")
                    error = await _error_of(resp)
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
            except aiohttp.ClientConnectorError as exc:  # nothing listens: the gateway itself is down
                error = ApiError(0, "unreachable", str(exc))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                error = ApiError(0, "connection", str(exc) or type(exc).__name__)
            except ValueError as exc:  # a 200 whose body is not JSON: truncated, or not the gateway
                error = ApiError(0, "bad_json", str(exc))
            if error.status in (401, 403):
                raise Fatal(f"the gateway refused the request ({one_line(str(error))}); check --api-key") from None
            if error.code in FATAL_CODES:
                raise Fatal(
                    f"{error.code} on route {error.route or path}: {one_line(str(error))}; no request can "
                    "succeed until the gateway's upstream credentials are renewed; stopping"
                ) from None
            if error.status == 429 or (error.status == 503 and retry_after is not None):
                self.pacer.hold(retry_after if retry_after is not None else 1.0, error)
                continue  # pacing, not failing: no retry is spent
            if (
                (error.status not in RETRY_STATUSES and error.status != 0)
                or error.code in FINAL_CODES
                or error.code in FORBIDDEN_CODES
            ):
                raise error
            if attempt >= self.retries:
                if error.code == "unreachable":
                    raise Fatal(f"the gateway at {self.base} is unreachable: {one_line(str(error))}") from None
                raise error
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempt, 10))
            delay *= 1 + random.random() * 0.2  # jitter: parallel workers do not retry in lockstep
            attempt += 1
            self.retried += 1
            log(f"retry {attempt}/{self.retries} of GET {path} in {delay:.1f}s: {one_line(str(error))}")
            await self.sleep(delay)

    async def pages(self, path: str, params: dict[str, str]) -> AsyncIterator[list[dict[str, Any]]]:
        """Each page of a stable collection, following ``next_cursor``."""
        query = {**params, "limit": str(PAGE)}
        while True:
            body = await self.get(path, query)
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list) or not all(isinstance(it, dict) for it in items):
                # not the gateway's collection: nothing in it can be trusted (nor said to be gone)
                raise ApiError(200, "bad_listing", f"{path} did not answer {{items: [objects], next_cursor}}")
            yield items
            cursor = body.get("next_cursor")
            if not cursor:
                return
            query = {**params, "limit": str(PAGE), "cursor": str(cursor)}


async def _error_of(resp: aiohttp.ClientResponse) -> ApiError:
    try:
        body = await resp.json(content_type=None)
        err = body["error"]
        route = err.get("route")
        return ApiError(
            resp.status, str(err.get("code")), str(err.get("message")), route if isinstance(route, str) else None
        )
    except (ValueError, KeyError, TypeError, AttributeError, aiohttp.ContentTypeError):
        return ApiError(resp.status, "http_error", resp.reason or "")


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(PAUSE_CAP, max(0.0, seconds)) if seconds == seconds else None  # NaN is no answer
