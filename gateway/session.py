"""Session checks: a dead session is an auth failure, never empty data.

Observable answers a signed-out visitor with 200: ``GET /user`` is ``null`` and the
signed-in lists are simply ``[]`` (/work/shared/upstream-facts.md), so without a check
an expired cookie is served, and cached, as "you have no notebooks".  An upstream's
``auth.check`` names a safe GET and a field its JSON answer holds only while signed in.

The check runs when the prober starts, with every probe round, and whenever a signed-in
collection comes back empty, or a paged walk finds the list moved under it (a stream that went
empty mid-walk, a head that changed: a dead session's ``[]`` looks just so).  One answer stands
for ``memo`` seconds per upstream and credential value (a renewed cookie is checked afresh), and
concurrent callers share one request, so a burst of empty lists costs one check.

Verdicts: ``live`` (the field is there), ``dead`` (a 200 without it, or 401) and
``unknown`` (the check itself failed: transport error, timeout, another status, not
JSON; a 403 too: the upstream knows the credential but it may not read the check's
path, which says nothing about the session, and "renew it" would be the wrong fix).
An empty collection is then a 502 ``upstream_auth_rejected`` (dead), or served but never
cached (unknown); a list that moved under a walk is the same 502 (dead), else the walk's 409
or restart as it was (live, unknown).  ``gateway_upstream_credential_valid`` follows live (1) and
dead (0); an unknown verdict leaves it as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from gateway import jsonio
from gateway.auth import Credentials
from gateway.cache.policy import credential_id
from gateway.config import Config, SessionCheck, Upstream
from gateway.errors import BadGateway, CollectionChanged, UpstreamError
from gateway.metrics import Metrics
from gateway.upstream import UpstreamClient, UpstreamResponse

log = logging.getLogger("gateway.session")

Verdict = Literal["live", "dead", "unknown"]
#: the route label of the check's own upstream calls (retries, budget): not a routes.yaml route
CHECK_ROUTE = "(session_check)"


@dataclass(frozen=True, slots=True)
class CheckResult:
    verdict: Verdict
    #: why, for logs and error messages (never a credential value)
    reason: str
    #: ``clock()`` when the check was sent: it says nothing of the session after that
    at: float


class SessionChecks:
    """Runs and remembers the upstreams' session checks; the Gateway's, so it outlives reloads."""

    def __init__(
        self,
        client: UpstreamClient,
        creds: Credentials,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._creds = creds
        self._metrics = metrics
        self._clock = clock
        self._memo: dict[tuple[str, str], CheckResult] = {}
        #: the check in flight per credential, and when it was sent
        self._running: dict[tuple[str, str], tuple[float, asyncio.Task[CheckResult]]] = {}

    def now(self) -> float:
        return self._clock()

    async def check(self, upstream: Upstream, newer_than: float | None = None) -> CheckResult | None:
        """The session's state (memoised); None when the upstream declares no check.

        ``newer_than``: only a check sent at or after that moment answers (an empty list fetched
        then must not be vouched for by a check from before it: the session may have died between).
        """
        spec = upstream.auth.check if upstream.auth is not None else None
        if spec is None:
            return None
        try:
            auth = self._creds.headers_for(upstream, CHECK_ROUTE)
        except UpstreamError as exc:  # nothing configured: the requests themselves say so
            return CheckResult("unknown", exc.message, self._clock())
        key = (upstream.name, credential_id(auth))
        floor = -math.inf if newer_than is None else newer_than
        memo = self._memo.get(key)
        # a dead session stays dead for the memo; only "live" needs a check sent after the fetch
        if memo is not None and self._clock() - memo.at < spec.memo and (memo.at >= floor or memo.verdict == "dead"):
            return memo
        while True:
            running = self._running.get(key)
            if running is None:
                sent = self._clock()
                running = (sent, asyncio.ensure_future(self._run(upstream, spec, auth, key, sent)))
                self._running[key] = running
            result = await asyncio.shield(running[1])  # a caller going away does not cancel it for the others
            if running[0] >= floor or result.verdict == "dead":
                return result

    async def check_all(self, config: Config) -> dict[str, CheckResult]:
        """Every declared check (at start and with each probe round)."""
        ups = [u for u in config.upstreams.values() if u.auth is not None and u.auth.check is not None]
        results = await asyncio.gather(*(self.check(u) for u in ups))
        return {u.name: r for u, r in zip(ups, results, strict=True) if r is not None}

    async def confirm_empty(self, upstream: Upstream, route: str, fetched_at: float | None = None) -> bool:
        """A signed-in collection fetched from ``fetched_at`` on came back empty: raise if the session
        is dead; False if unknown (the empty answer is served but must not be cached).  Only a check
        sent after the fetch began vouches for it."""
        result = await self.check(upstream, newer_than=fetched_at)
        if result is None or result.verdict == "live":
            return True
        if result.verdict == "unknown":
            return False
        spec = upstream.auth.check if upstream.auth is not None else None
        assert spec is not None
        raise BadGateway(
            f"upstream {upstream.name!r} answered an empty list, but its session check shows the gateway"
            f" signed out ({result.reason}): credential {spec.credential} is no longer valid; renew it",
            kind="credentials_rejected",
            code="upstream_auth_rejected",
            route=route,
        )

    async def _run(
        self, upstream: Upstream, spec: SessionCheck, auth: dict[str, str], key: tuple[str, str], sent: float
    ) -> CheckResult:
        headers = {**dict(upstream.headers), "Accept": "application/json", **auth}
        try:
            resp = await self._client.send(
                upstream, "GET", spec.path, [], headers, None, follow=False, route=CHECK_ROUTE
            )
            result = self._judge(spec, resp, sent)
        except UpstreamError as exc:
            result = CheckResult("unknown", f"GET {spec.path} failed: {exc.message}", sent)
        except Exception as exc:  # the check must never take a request or a probe round down with it
            log.exception("the session check of upstream %s failed unexpectedly", upstream.name)
            result = CheckResult("unknown", f"GET {spec.path} failed: {type(exc).__name__}", sent)
        finally:
            self._running.pop(key, None)
        self._remember(upstream, spec, key, result)
        return result

    def _judge(self, spec: SessionCheck, resp: UpstreamResponse, now: float) -> CheckResult:
        request = f"GET {spec.path}"
        field = ".".join(spec.expect)
        if resp.status == 401:
            return CheckResult("dead", f"{request} was answered 401", now)
        if resp.status == 403:  # signed in, not allowed to read it: no verdict on the session
            return CheckResult("unknown", f"{request} was answered 403: the credential may not read it", now)
        if resp.status != 200:
            return CheckResult("unknown", f"{request} was answered {resp.status}", now)
        try:
            data: Any = jsonio.loads(resp.body)
        except (ValueError, UnicodeDecodeError):
            return CheckResult("unknown", f"{request} did not answer JSON", now)
        for part in spec.expect:
            data = data.get(part) if isinstance(data, dict) else None
        if data is None:
            return CheckResult("dead", f"{request} answered 200 without {field!r}, as it does when signed out", now)
        return CheckResult("live", f"{request} answered with {field!r}", now)

    def _remember(self, upstream: Upstream, spec: SessionCheck, key: tuple[str, str], result: CheckResult) -> None:
        for old in [k for k in self._memo if k[0] == upstream.name and k != key]:
            del self._memo[old]  # a renewed credential: the old one's verdict is history
        previous = self._memo.get(key)
        self._memo[key] = result
        if result.verdict != "unknown":
            self._metrics.credential_valid.labels(upstream.name, spec.credential).set(result.verdict == "live")
        changed = previous is None or previous.verdict != result.verdict
        level = logging.WARNING if result.verdict != "live" else (logging.INFO if changed else logging.DEBUG)
        log.log(
            level,
            "session check of upstream %s (%s): %s: %s",
            upstream.name,
            spec.credential,
            result.verdict,
            result.reason,
        )


async def unless_signed_out(
    pages: AsyncGenerator[list[Any], None],
    confirm: Callable[[], Awaitable[None]],
    moved: Callable[[], Awaitable[None]] | None = None,
) -> AsyncGenerator[list[Any], None]:
    """A collection's pages with empty ones held back; when not one item came, ``confirm()``
    runs before the collection ends (it raises for a dead session, before anything is sent).

    Where the walk finds the list moved (``CollectionChanged``), ``moved()`` runs first: a session
    that died mid-walk answers ``[]``, which ends a stream early and changes its head, and must be
    the auth failure it is (it raises), not a 409 "start again" (or a restart) that cannot help."""
    seen = False
    try:
        try:
            async for page in pages:
                if page:
                    seen = True
                    yield page
        except CollectionChanged:
            if moved is not None:
                await moved()
            raise
        if not seen:
            await confirm()
    finally:
        with contextlib.suppress(Exception):
            await pages.aclose()
