"""Resilience toward upstreams: retries, a circuit breaker and outbound pacing.

All three wrap *one* HTTP exchange (one redirect hop) of ``UpstreamClient``:

- **Retries** with full-jitter exponential backoff, only where a second try cannot do
  harm: an idempotent method, or any method whose request never left the gateway
  (connection refused, connect timeout).  A POST that may have reached the upstream
  (read timeout, reset) is never sent twice.  Only connect errors, timeouts, resets and
  429/502/503/504 are retried; ``Retry-After`` (or PostHog's "Expected available in N
  seconds") sets the wait, and a retry budget (a share of the calls of the last 10 s)
  keeps retries from multiplying the load on an upstream that is already struggling.
- **A circuit breaker per upstream**: after N consecutive failed exchanges it opens and
  calls fail fast with a 503 (no socket touched); after the cool-down one probe goes
  through (half-open); its success closes the breaker, its failure opens it again.
- **Pacing per credential**: a sliding-window log of sends per (upstream, credential)
  keeps the gateway under the budgets declared in routes.yaml (PostHog: 480/min and
  4800/h per key).  A call waits for a slot up to ``max_wait``, else it is answered 503
  with Retry-After; an upstream 429 blocks the credential for as long as it said.

State lives for the process, keyed by upstream name, so a reload keeps open breakers
and the send history; policies are read from the config of each call.  Credentials are
told apart by a salted hash: secret values are never stored here.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from gateway import retry_after
from gateway.breaker import CLOSED, Breaker
from gateway.config import Upstream
from gateway.errors import ServiceUnavailable, UpstreamError
from gateway.methods import IDEMPOTENT
from gateway.metrics import Metrics
from gateway.redis_pool import Busy
from gateway.sends import Sends, credential_id, handover, local_slot, per_text
from gateway.shared import SharedState, busy_error, local_share


class Answer(Protocol):
    """What resilience reads of an upstream answer (gateway.upstream.UpstreamResponse is one)."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def body(self) -> bytes: ...


#: the answer type ``Resilience.run`` hands back as it was given (no import of gateway.upstream: no cycle)
A = TypeVar("A", bound=Answer)

#: upstream statuses worth a second try (idempotent methods only)
RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: error kinds raised before any byte of the request was written: safe to retry for any method
UNSENT = frozenset({"connect", "connect_timeout"})
#: error kinds that say the upstream is unhealthy (with 5xx answers): they count for the breaker
FAILURES = frozenset({"connect", "connect_timeout", "timeout", "reset"})
#: the retry budget's window and the retries it always allows in it, whatever the share
RETRY_WINDOW = 10.0
RETRY_FLOOR = 10



class _Guard:
    """Everything kept per upstream."""

    def __init__(self, upstream: str, owner: Resilience) -> None:
        self.breaker = Breaker(upstream, owner)
        self.sends: dict[str, Sends] = {}
        self.calls: deque[float] = deque()
        self.retries: deque[float] = deque()

    def note_call(self, now: float) -> None:
        """One more call in the window; only the calls' log is trimmed here (``retry_allowed`` trims both)."""
        calls = self.calls
        calls.append(now)
        edge = now - RETRY_WINDOW
        while calls[0] <= edge:
            calls.popleft()

    def retry_allowed(self, now: float, share: float) -> bool:
        """The retry budget: at most ``share`` of the calls of the window (and always the floor)."""
        self._trim(now)
        if len(self.retries) >= max(RETRY_FLOOR, share * len(self.calls)):
            return False
        self.retries.append(now)
        return True

    def _trim(self, now: float) -> None:
        for log in (self.calls, self.retries):
            while log and log[0] <= now - RETRY_WINDOW:
                log.popleft()


class Resilience:
    """Process-wide retry, breaker and pacing state for every upstream.

    ``clock``, ``sleep`` and ``rand`` are attributes so tests can make time and jitter exact.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.rand: Callable[[], float] = random.random
        self._guards: dict[str, _Guard] = {}
        #: budgets, hold-offs and breakers shared through Redis (None: this process only)
        self.shared: SharedState | None = None

    def register(self, upstreams: Iterable[Upstream]) -> None:
        """Export every upstream's breaker state from the start (and whether its policy lets it open)."""
        for up in upstreams:
            self.breaker(up.name).enabled = up.breaker.failures != 0

    def follow_shared(self) -> None:
        """After a refresh of the shared state: each breaker's gauge follows the ones other processes opened."""
        for guard in self._guards.values():
            guard.breaker.follow()

    def breaker(self, upstream: str) -> Breaker:
        return self._guard(upstream).breaker

    def _guard(self, upstream: str) -> _Guard:
        guard = self._guards.get(upstream)
        if guard is None:
            guard = self._guards[upstream] = _Guard(upstream, self)
            if self.metrics is not None:
                self.metrics.circuit_state.labels(upstream).set(CLOSED)
        return guard

    async def run(
        self,
        upstream: Upstream,
        method: str,
        route: str,
        headers: Mapping[str, str],
        send: Callable[[], Awaitable[A]],
    ) -> A:
        """One exchange with retries, the breaker and pacing; the last answer or error wins."""
        guard = self._guards.get(upstream.name) or self._guard(upstream.name)
        policy = upstream.retries
        # pacing needs the credential only where something is kept per credential: a budget, shared
        # state, or a 429 hold-off seen on this upstream; elsewhere ``_pace`` would return at once
        budgeted = bool(upstream.budget.limits) or (self.shared is not None and self.shared.configured)
        cred: str | None = None
        scred: str | None = None
        idempotent = method in IDEMPOTENT
        started = self.clock()
        guard.note_call(started)
        attempt = 1
        while True:
            token = guard.breaker.admit(upstream.breaker, route)
            try:
                if budgeted or guard.sends:
                    if cred is None:
                        cred, scred = self._credential(upstream, headers)
                    await self._pace(guard, upstream, cred, route, scred)
                resp = await send()
            except UpstreamError as exc:
                if exc.kind in ("circuit_open", "budget", "held_off"):
                    raise  # raised here, before anything was sent
                guard.breaker.record(upstream.breaker, token, exc.kind not in FAILURES)
                if exc.kind not in FAILURES or not (idempotent or exc.kind in UNSENT):
                    raise
                failure: UpstreamError | None = exc
                reason, after = exc.kind, None
            else:
                guard.breaker.record(upstream.breaker, token, resp.status < 500)
                if resp.status not in RETRY_STATUSES:
                    return resp
                after = retry_after.seconds(resp.headers, resp.body)
                if resp.status == 429 and after is not None:
                    if cred is None:
                        cred, scred = self._credential(upstream, headers)
                    self._block(guard, cred, after)
                    if scred is not None and self.shared is not None:
                        self.shared.publish_hold(upstream.name, scred, after)  # binds every process
                if not idempotent:
                    return resp
                failure, reason = None, str(resp.status)
            finally:
                if token is not None:  # only the half-open probe holds a token
                    guard.breaker.release(token)
            delay = self._backoff(policy.backoff, policy.max_backoff, attempt)
            if after is not None:
                delay = max(delay, after)
            now = self.clock()
            if (
                attempt >= policy.attempts
                or (after is not None and after > policy.max_wait)
                or now - started + delay > upstream.timeouts.total
                or not guard.retry_allowed(now, policy.budget)
            ):
                if failure is not None:
                    try:
                        raise failure
                    finally:
                        del failure  # no cycle through this frame keeping the error (and what it holds)
                return resp
            if self.metrics is not None:
                self.metrics.upstream_retries.labels(upstream.name, route, reason).inc()
            await self.sleep(delay)
            attempt += 1

    def budget_short(self, upstream: Upstream, headers: Mapping[str, str]) -> str | None:
        """Why a background call (a probe) should leave the credential's budget to scripts now, or None.

        Short means a 429 hold-off is running, or fewer than a tenth (at least one) of a
        window's slots are free: probes get what scripts leave, never the last slots.  With
        shared state the window is judged by what every process used (as last read from
        Redis) and by this process's own sends against its share while that share binds
        (Redis down, or just back); without, by this process's own sends.
        """
        cred = credential_id(upstream, headers)
        sends = self._guard(upstream.name).sends.get(cred)
        shared = self.shared if self.shared is not None and self.shared.configured else None
        scred = self._shared_credential(upstream, cred) if shared is not None else None
        now = self.clock()
        held = shared.held(upstream.name, scred) if shared is not None and scred is not None else 0.0
        held = max(held, sends.blocked_until - now if sends is not None else 0.0)
        if held > 0:
            return f"upstream {upstream.name!r} told the gateway to hold off for {held:.0f}s"
        limits = upstream.budget.limits
        if not limits:
            return None
        views: list[tuple[str, Sequence[tuple[int, float]], Sequence[int]]] = []
        if shared is not None and scred is not None and (used := shared.used(upstream.name, scred, limits)):
            views.append(("by all processes", limits, used))
        if sends is not None:
            local = shared is not None and (not shared.active or now < sends.grace_until)
            own = [sum(1 for t in sends.times if t > now - per) for _, per in limits]
            views.append(("", local_share(limits, shared.instances) if local and shared else limits, own))
        for who, windows, counts in views:
            for (count, per), used_ in zip(windows, counts, strict=True):
                if count - used_ <= max(1, math.ceil(count / 10)):
                    # min: a handed-over window counts as full (its padding is no send)
                    said = f"{min(used_, count)} of {count}/{per_text(per)} used{' ' + who if who else ''}"
                    return f"the request budget for upstream {upstream.name!r} is short ({said})"
        return None

    def _backoff(self, base: float, cap: float, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base·2^(attempt-1))]."""
        return self.rand() * min(cap, base * 2.0 ** (attempt - 1))

    def _block(self, guard: _Guard, cred: str, seconds: float) -> None:
        sends = guard.sends.setdefault(cred, Sends())
        sends.blocked_until = max(sends.blocked_until, self.clock() + seconds)

    def _credential(self, upstream: Upstream, headers: Mapping[str, str]) -> tuple[str, str | None]:
        """The call's credential (its fingerprint) and its id in Redis (None: nothing shared)."""
        cred = credential_id(upstream, headers)
        return cred, self._shared_credential(upstream, cred)

    def _shared_credential(self, upstream: Upstream, cred: str) -> str | None:
        """The credential's id in Redis (its fingerprint, hashed again with Redis's salt); None when
        nothing is shared."""
        shared = self.shared
        if shared is None or not shared.configured:
            return None
        if upstream.auth is None:
            return "-"
        return shared.credential(cred.encode())

    async def _pace(self, guard: _Guard, upstream: Upstream, cred: str, route: str, scred: str | None = None) -> None:
        """Wait for a send slot of this credential, or raise 503 with Retry-After if it is too far.

        With shared state the slot is taken in Redis; while Redis is down, in this process's
        share of the budget (divided by the live process count last seen).
        """
        budget = upstream.budget
        shared = self.shared if self.shared is not None and self.shared.configured else None
        held = shared.held(upstream.name, scred) if shared is not None and scred is not None else 0.0
        sends = guard.sends.get(cred)
        if sends is None:
            if not budget.limits and held <= 0:
                return
            sends = guard.sends[cred] = Sends()
        now = self.clock()
        blocked = max(sends.blocked_until, now + held)
        at = max(now, blocked)
        if at - now > upstream.retries.max_wait:
            raise self._paced_out(upstream, route, at - now, "upstream_rate_limited")
        if budget.limits:
            now, at = await self._slot(sends, upstream, route, shared, scred, now, at, blocked)
        wait = at - now
        if wait > 0:
            if self.metrics is not None:
                self.metrics.paced.labels(upstream.name, "waited").inc()
            await self.sleep(wait)

    async def _slot(
        self,
        sends: Sends,
        upstream: Upstream,
        route: str,
        shared: SharedState | None,
        scred: str | None,
        now: float,
        at: float,
        blocked: float,
    ) -> tuple[float, float]:
        """(now, send time) of a budget slot: taken in Redis, or in this process's share of the budget.

        Across a change the windows are handed over (``handover``): nothing sent just before
        Redis went away or came back is forgotten, so the combined calls stay under the budget.
        """
        budget = upstream.budget
        limit = max(budget.max_wait, blocked - now)
        longest = max(per for _, per in budget.limits)
        times = sends.times
        while times and times[0] <= now - longest:
            times.popleft()
        for _ in range(2):  # a second round if Redis fails during this very call
            if shared is not None:
                handover(sends, shared, budget.limits, now, limit)
            remote = shared is not None and scred is not None and shared.active
            if not remote or now < sends.grace_until:
                share = local_share(budget.limits, shared.instances) if shared is not None else budget.limits
                at = local_slot(sends.times, share, at)
                if at - now > limit:
                    raise self._paced_out(upstream, route, at - now, "upstream_budget_exhausted", local=True)
            if not remote:
                break
            assert shared is not None and scred is not None
            # one call writes the seeds (the script writes them even when it refuses the slot): were every
            # concurrent call to write them again, the window would fill with copies
            seeding, sends.seed = sends.seed, False
            seeds = sends.seeds(now, longest) if seeding else []
            held = at
            bisect.insort(sends.times, held)  # the local slot is held while Redis is asked (others run meanwhile)
            sends.phantom.append(held)
            try:
                slot = await shared.reserve(upstream.name, scred, budget.limits, limit, at - now, seeds)
            except Busy:
                sends.seed = sends.seed or seeding  # Redis was not asked: the next call writes them
                raise busy_error(route) from None  # this process is busy, Redis is not down: no fallback
            finally:
                sends.times.remove(held)
                sends.phantom.remove(held)
            if slot is None:
                now = self.clock()  # the failed call took time: hand over as of now
                continue
            taken, wait = slot
            if not taken:
                raise self._paced_out(upstream, route, wait, "upstream_budget_exhausted")
            now = self.clock()
            at = sends.shared_at = now + wait
            break
        bisect.insort(sends.times, at)
        return now, at

    def _paced_out(
        self, upstream: Upstream, route: str, wait: float, code: str, local: bool = False
    ) -> ServiceUnavailable:
        """The 503 of a call paced out; ``local``: refused by this process's share of a shared budget."""
        if self.metrics is not None:
            self.metrics.paced.labels(upstream.name, "rejected").inc()
        seconds = max(1, math.ceil(wait))
        if code == "upstream_rate_limited":
            message = f"upstream {upstream.name!r} is rate limiting the gateway's credential (told to hold off)"
            kind = "held_off"  # never sent: not the upstream's 429 (kind throttled), which it answered
        else:
            limits = ", ".join(f"{n}/{per_text(p)}" for n, p in upstream.budget.limits)
            message = f"the gateway's request budget for upstream {upstream.name!r} ({limits}) is used up"
            shared = self.shared
            if shared is not None and shared.configured and (local or not shared.active):
                # not this caller's doing: the other processes' share is unknown while Redis is away, and
                # for one window after it is back (they may not have written their sends yet)
                was = "is unreachable"
                if shared.active:  # the grace runs from when sharing resumed: say when that was
                    ago = self.clock() - shared.resumed
                    was = f"was unreachable until {max(1, round(ago))}s ago" if math.isfinite(ago) else "was down"
                message = (
                    f"the request budget for upstream {upstream.name!r} ({limits}) is shared through Redis, which"
                    f" {was}: this process keeps to its share, counting the shared window as used"
                    " until it has passed (docs/scale-out.md)"
                )
            kind = "budget"
        return ServiceUnavailable(
            f"{message}; retry in {seconds}s", kind=kind, code=code, route=route, headers={"Retry-After": str(seconds)}
        )
