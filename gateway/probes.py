"""Contract probes: a safe GET per route, with sample params, checked like live traffic.

A probe goes through ``Proxy.probe``, i.e. the same targets, status mapping, ``shape``
checks and field mapping a script's request goes through, so "the probe is broken"
and "scripts are getting 502s" always mean the same thing.  Sample params are fixed
values or taken from another route's probe answer (``{from: ROUTE, field: id}``): a
route that needs an id probes after the list that provides one.  A route whose
sample could not be had is *skipped*, not broken: its provider's result says why.

The ``Prober`` runs one round on demand (``gateway probe``) or forever in the
background (``gateway serve``): every ``interval`` ± ``jitter``, at most
``concurrency`` probes at once, and at once again after a reload.  With the cache's
Redis configured, only the holder of the probe lease (gateway.probe_lease) runs the
rounds; every other instance takes its results from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gateway.config import Config, ProbeSample, Route
from gateway.errors import GatewayError, UpstreamError
from gateway.health import RouteHealth
from gateway.metrics import Metrics
from gateway.probe_lease import Leases, ProbeLease, instance_id, lease_tick
from gateway.proxy import SELF_PACING, Proxy
from gateway.session import SessionChecks

log = logging.getLogger("gateway.probes")

Outcome = Literal["ok", "broken", "skipped"]
#: the config and proxy being served now (a reload swaps both)
Current = Callable[[], tuple[Config, Proxy]]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    route: str
    outcome: Outcome
    #: the error code (empty when ok) and a human message
    code: str
    message: str
    duration: float
    #: wall-clock time the probe finished
    at: float


class Prober:
    """Runs the config's probes and records the results in health, metrics and ``results``."""

    def __init__(
        self,
        current: Current,
        health: RouteHealth,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sessions: SessionChecks | None = None,
        leases: Leases | None = None,
    ) -> None:
        self._current = current
        self._health = health
        self._metrics = metrics
        self._clock = clock
        self._rng = rng or random.Random()
        self._sessions = sessions
        self._wake = asyncio.Event()
        #: the latest result per route name
        self.results: dict[str, ProbeResult] = {}
        #: wall-clock end of the last complete round (None: never)
        self.last_round: float | None = None
        #: the latest ok answer per route: where dependent samples come from (gateway.verdict)
        self._answers: dict[str, Any] = {}
        #: who probes: the lease (None: this instance, alone) and who ran the round in ``results``
        self._leases = leases
        self.instance = leases.instance if leases is not None else instance_id()
        self.ran_by: str | None = None

    # ------------------------------------------------------------------ one round

    async def run_round(self, only: Collection[str] | None = None) -> list[ProbeResult]:
        """Probe every route that has a probe (or those in ``only``, plus what they take samples from)."""
        config, proxy = self._current()
        await self.check_sessions(config)  # first: an empty list probed below then reads a fresh verdict
        routes = {r.name: r for r in config.routes if r.probe is not None}
        wanted = set(routes) if only is None else _with_providers(routes, set(only))
        semaphore = asyncio.Semaphore(config.probes.concurrency)
        answers: dict[str, asyncio.Future[tuple[ProbeResult, Any]]] = {
            name: asyncio.get_running_loop().create_future() for name in wanted
        }

        async def one(route: Route) -> None:
            try:
                result, answer = await self._probe_after_providers(route, answers, semaphore, config, proxy)
            except BaseException:
                answers[route.name].cancel()
                raise
            answers[route.name].set_result((result, answer))
            if result.outcome == "ok":
                self._answers[route.name] = answer

        async with asyncio.TaskGroup() as group:
            for name in sorted(wanted):
                group.create_task(one(routes[name]))
        results = [answers[name].result()[0] for name in sorted(wanted)]
        self.last_round = self._clock()
        for name in [n for n in self.results if n not in routes]:
            del self.results[name]  # a reload removed the route or its probe
            self._answers.pop(name, None)
            with contextlib.suppress(KeyError):
                self._metrics.probe_last_success.remove(name)
        return results

    async def _probe_after_providers(
        self,
        route: Route,
        answers: Mapping[str, asyncio.Future[tuple[ProbeResult, Any]]],
        semaphore: asyncio.Semaphore,
        config: Config,
        proxy: Proxy,
    ) -> tuple[ProbeResult, Any]:
        assert route.probe is not None
        path_params: dict[str, str] = {}
        query: dict[str, str] = {}
        for target, pairs in ((path_params, route.probe.path_params), (query, route.probe.query)):
            for name, value in pairs:
                if not isinstance(value, ProbeSample):
                    target[name] = value
                    continue
                provider, answer = await answers[value.route]
                sample, why = _sample(provider, answer, value)
                if sample is None:
                    return self._record(route, "skipped", "probe_no_sample", why, 0.0), None
                target[name] = sample
        async with semaphore:
            return await self._probe(route, path_params, query, config, proxy)

    async def _probe(
        self, route: Route, path_params: dict[str, str], query: dict[str, str], config: Config, proxy: Proxy
    ) -> tuple[ProbeResult, Any]:
        timeout = config.probes.timeout
        # the gateway's own pacing says nothing about the route: probes yield the budget to scripts
        short = proxy.budget_short(route)
        if short is not None:
            return self._record(route, "skipped", "probe_budget_short", f"not probed: {short}", 0.0), None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                resp = await proxy.probe(route, query, path_params, f"probe-{uuid.uuid4().hex[:16]}")
        except UpstreamError as exc:
            if exc.kind in SELF_PACING:
                message = f"not probed, the gateway is pacing itself: {exc.message}"
                return self._record(route, "skipped", "probe_paced", message, time.perf_counter() - started), None
            return self._broken(route, exc.code, exc.message, started), None
        except GatewayError as exc:
            # the upstream refused the sample (a 404 for an id its own list just returned, a 400, ...)
            message = f"the probe's GET was answered {exc.status}: {exc.message}"
            return self._broken(route, f"probe_{exc.code}", message, started), None
        except TimeoutError:
            return self._broken(route, "probe_timeout", f"no complete answer within {timeout:g}s", started), None
        except Exception as exc:
            log.exception("probe of route %s failed unexpectedly", route.name)
            return self._broken(route, "probe_error", f"the probe failed: {type(exc).__name__}", started), None
        expected = route.response.status or 200
        if resp.status != expected:
            message = f"the probe's GET was answered {resp.status}, expected {expected}"
            return self._broken(route, "probe_unexpected_status", message, started), None
        answer = _parse(resp.body, resp.content_type)
        self._health.up(route.name, source="probe")
        self._metrics.probe_last_success.labels(route.name).set(self._clock())
        return self._record(route, "ok", "", "", time.perf_counter() - started), answer

    def _broken(self, route: Route, code: str, message: str, started: float) -> ProbeResult:
        self._health.down(route.name, code, message, source="probe")
        return self._record(route, "broken", code, message, time.perf_counter() - started)

    def _record(self, route: Route, outcome: Outcome, code: str, message: str, duration: float) -> ProbeResult:
        result = ProbeResult(route.name, outcome, code, message, duration, self._clock())
        self.results[route.name] = result
        self._metrics.probe_runs.labels(route.name, outcome).inc()
        if outcome != "skipped":
            self._metrics.probe_seconds.labels(route.name).observe(duration)
        log.log(
            logging.WARNING if outcome == "broken" else logging.DEBUG,
            "probe %s %s%s",
            route.name,
            outcome,
            f": {code}: {message}" if message else "",
        )
        return result

    async def check_sessions(self, config: Config) -> None:
        """The upstreams' session checks (gateway.session), bounded by the probe timeout."""
        if self._sessions is None:
            return
        try:
            async with asyncio.timeout(config.probes.timeout):
                await self._sessions.check_all(config)
        except TimeoutError:
            log.warning("the session checks did not finish within %gs", config.probes.timeout)

    async def sample_for(self, name: str, fresh: bool = False) -> tuple[dict[str, str], dict[str, str]] | None:
        """The params a probe of route ``name`` sends: a known-existing entity (gateway.verdict).

        Samples taken from other routes come from their latest ok probe answers; those missing
        (or all of them, ``fresh``) are probed first.  None when the route has no probe or a
        provider gave no sample.
        """
        config, _ = self._current()
        route = next((r for r in config.routes if r.name == name), None)
        if route is None or route.probe is None:
            return None
        wanted = route.probe.depends_on if fresh else route.probe.depends_on - set(self._answers)
        if wanted:
            await self.run_round(wanted)
        out: tuple[dict[str, str], dict[str, str]] = ({}, {})
        for target, pairs in zip(out, (route.probe.path_params, route.probe.query), strict=True):
            for key, value in pairs:
                if isinstance(value, ProbeSample):
                    provider = self.results.get(value.route)
                    if provider is None:
                        return None
                    sample, _why = _sample(provider, self._answers.get(value.route), value)
                    if sample is None:
                        return None
                    value = sample
                target[key] = value
        return out

    # ------------------------------------------------------------------ in the background

    def wake(self) -> None:
        """Start the next round now (after a reload, so a fixed route is confirmed at once)."""
        self._wake.set()

    async def run_forever(self) -> None:
        """Rounds until cancelled; the interval, jitter and on/off switch are re-read from each config."""
        config = self._current()[0]
        settings = config.probes
        self._metrics.probe_interval.set(settings.interval if settings.enabled else 0)
        await self.check_sessions(config)  # at start, before the jitter: a dead session shows at once
        await self._sleep(self._rng.uniform(0, settings.jitter))  # replicas started together spread out
        try:
            while True:
                self._wake.clear()
                config = self._current()[0]
                settings = config.probes
                lease = await self._lease(config)
                if settings.enabled and lease is not None and lease.role == "follower":
                    self._metrics.probe_interval.set(settings.interval)
                    self._follow(await lease.shared())
                    await self._sleep(lease_tick(settings.interval))
                    continue
                if settings.enabled:
                    self._metrics.probe_interval.set(settings.interval)
                    try:
                        await self.run_round()
                    except Exception:
                        log.exception("a probe round failed")
                    else:
                        self.ran_by = self.instance
                        self._metrics.probe_round.set(self.last_round or self._clock())
                        if lease is not None:
                            await lease.publish(self._shareable(), settings.interval)
                else:
                    self._metrics.probe_interval.set(0)
                await self._sleep(settings.interval + self._rng.uniform(-settings.jitter, settings.jitter))
        finally:
            if self._leases is not None:
                await self._leases.close()

    async def _lease(self, config: Config) -> ProbeLease | None:
        if self._leases is None:
            return None
        lease = await self._leases.for_config(config)
        if lease is not None and lease.role == "local":
            await lease.step(config.probes.interval)  # the first round waits for the first election
            lease.start(lambda: self._current()[0].probes.interval)
        return lease

    def _shareable(self) -> dict[str, Any]:
        results = [dataclasses.asdict(r) for r in self.results.values()]
        return {"by": self.instance, "last_round": self.last_round, "results": results}

    def _follow(self, shared: Mapping[str, Any] | None) -> None:
        """The holder's results, as if this instance had probed: status, health and metrics."""
        if not shared:
            return
        routes = {r.name for r in self._current()[0].routes if r.probe is not None}
        try:
            fresh = [ProbeResult(**item) for item in shared["results"]]
            by, last_round = str(shared["by"]), shared["last_round"]
            fresh = [r for r in fresh if isinstance(r.at, int | float) and r.outcome in ("ok", "broken", "skipped")]
        except (KeyError, TypeError):
            return  # written by another version: ignore
        for result in fresh:
            known = self.results.get(result.route)
            if result.route not in routes or (known is not None and known.at >= result.at):
                continue
            self.results[result.route] = result
            if result.outcome == "ok":
                self._health.up(result.route, source="probe")
                self._metrics.probe_last_success.labels(result.route).set(result.at)
            elif result.outcome == "broken":
                self._health.down(result.route, result.code, result.message, source="probe")
        if isinstance(last_round, int | float) and last_round != self.last_round:
            self.last_round = float(last_round)
            self._metrics.probe_round.set(last_round)
        self.ran_by = by

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await self._wake.wait()

    def stopped(self) -> None:
        """The background loop ended: the 'probe not running' alert must not fire for a stopped gateway."""
        self._metrics.probe_interval.set(0)


def _with_providers(routes: Mapping[str, Route], names: set[str]) -> set[str]:
    out: set[str] = set()
    todo = [n for n in names if n in routes]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out.add(name)
        probe = routes[name].probe
        todo.extend(probe.depends_on if probe else ())
    return out


def _parse(body: Any, content_type: str) -> Any:
    if not isinstance(body, bytes) or not (content_type == "application/json" or content_type.endswith("+json")):
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


def _sample(provider: ProbeResult, answer: Any, wanted: ProbeSample) -> tuple[str | None, str]:
    """A value for a dependent probe: ``field`` of the provider's first item (or of its object)."""
    field = ".".join(wanted.field)
    if provider.outcome != "ok":
        return None, f"needs {field!r} from route {provider.route!r}, whose probe is {provider.outcome}"
    value: Any = answer
    if isinstance(answer, dict) and isinstance(answer.get("items"), list):
        if not answer["items"]:
            return None, f"route {provider.route!r} returned no items to take {field!r} from"
        value = answer["items"][0]
    for part in wanted.field:
        value = value.get(part) if isinstance(value, dict) else None
    if value is None or isinstance(value, dict | list):
        return None, f"route {provider.route!r} answered without a usable {field!r}"
    if isinstance(value, bool):
        return ("true" if value else "false"), ""
    return str(value), ""
