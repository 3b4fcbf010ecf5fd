"""The upstream call of a route, as a call-level stack composed once per route (gateway.pipeline.calls).

``answered`` → ``shape`` → ``status`` → ``fallback`` → ``upstream``, each only where it applies:
the exchange itself (credentials on, with resilience); each target in order where
the route's ``fallback_on`` hands over to the next (migrations, gateway.fallback); the
answering target's status mapped once (gateway.proxy.status) and its declared shape checked.
Each exchange is timed and counted per upstream, and written on the request's record
(``trace``) for its access line.  Failures are raised, not counted: the route's pipeline
counts them once, in its ``account`` stage.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from multidict import MultiDict

from gateway.auth import Credentials
from gateway.config import Config, Route, Target, Upstream
from gateway.error_kinds import NOT_SENT  # refused before any request left the gateway: not counted
from gateway.errors import GatewayError, UpstreamError
from gateway.fastmetrics import CounterChild, HistogramChild
from gateway.health import RouteHealth
from gateway.mapping import ShapeDrift, fixed_request, parse_params, target_request
from gateway.metrics import Metrics, status_class
from gateway.pipeline import calls
from gateway.pipeline.calls import Call, CallPipeline, CallStage, Send
from gateway.proxy import status as statuses
from gateway.redact import Redactor
from gateway.trace import RequestTrace
from gateway.upstream import UpstreamClient, UpstreamResponse, release
from gateway.verdict import GoneCheck

JSON_TYPE = "application/json"


class Targets:
    """Calls the targets of the routes of one loaded config."""

    def __init__(
        self,
        config: Config,
        client: UpstreamClient,
        creds: Credentials,
        metrics: Metrics,
        health: RouteHealth,
        redact: Redactor,
        gone_check: GoneCheck | None,
        failed: Callable[[Route, UpstreamError], None],
        cached: Callable[[Route], bool] = lambda route: True,
    ) -> None:
        self.config = config
        self.client = client
        self.creds = creds
        self.metrics = metrics
        self.health = health
        self.redact = redact
        self.gone_check = gone_check
        #: counts a failure no pipeline sees (the gone check's own sample call)
        self.failed = failed
        #: whether a route's answers may fill the response cache (its fills ask for the answer's headers)
        self.cached = cached
        #: each route's call-level stack, composed once here
        self.pipelines: dict[str, CallPipeline] = {r.name: self._build(r) for r in config.routes}

    def headers(self, upstream: Upstream, route: Route, request_id: str) -> dict[str, str]:
        """A call's request headers; a Content-Type only where a body is sent (``send``): a bodyless call
        declaring JSON is refused by strict servers."""
        headers = dict(upstream.headers)
        headers["Accept"] = headers.get("Accept", "application/json, */*;q=0.5")
        headers["X-Request-ID"] = request_id
        if route.auth:
            headers.update(self.creds.headers_for(upstream, route.name))
        return headers

    def _build(self, route: Route) -> CallPipeline:
        """The route's call-level stack (gateway.pipeline.calls), outermost first; each stage only where it applies."""
        stages: list[tuple[str, CallStage]] = [
            ("answered", self.answered),
            ("shape", self.shape),
            ("status", self.status),
            ("fallback", calls.fallback),
        ]
        return calls.compose(route, self.upstream(route), stages, "upstream")

    def upstream(self, route: Route) -> Send:
        """The innermost step: one exchange with the target the call is at, credentials on, with resilience
        (gateway.upstream, gateway.resilience), timed and counted (and written on the call's ``trace``);
        the headers are made once per call, whichever targets it asks.  The exchange is this closure's own
        work, not a method it awaits: every await level is passed again at each resumption of the call."""
        upstream = self.config.upstreams[route.upstream]
        client = self.client
        fixed = [fixed_request(target) for target in route.targets]  # a path without parameters, made once
        count = _Exchanges(self.metrics, upstream.name, route.name).count

        async def send(call: Call) -> UpstreamResponse:
            headers = call.headers
            if headers is None:
                headers = call.headers = self.headers(upstream, route, call.request_id)
            target = route.targets[call.target]
            path, query = fixed[call.target] or target_request(target, call.params)
            if call.at is not None:
                path, query = _followed(upstream, route, target, call.params, call.at)
            mode = target.body.mode
            payload = target.body.const if mode == "const" else (call.body if mode == "passthrough" else None)
            if payload is not None and "Content-Type" not in headers:
                headers = {**headers, "Content-Type": JSON_TYPE}
            started = time.perf_counter()
            try:
                resp = await client.send(
                    upstream,
                    target.method,
                    path,
                    [*query, *call.extra_query],
                    headers,
                    payload,
                    follow=target.redirect == "follow",
                    route=route.name,
                    stream=call.stream,
                )
            except UpstreamError as exc:
                if exc.kind not in NOT_SENT:  # refused before sending (breaker, budget, ...): no call to time or count
                    count(call.trace, None, time.perf_counter() - started, exc.kind)
                raise
            count(call.trace, resp.status, resp.elapsed, resp.status)
            return resp

        return send

    def status(self, route: Route, inner: Send) -> Send:
        """The answering target's status mapped once (gateway.proxy.status): a 404/410's verdict, any failure;
        every route."""
        upstream = self.config.upstreams[route.upstream]

        async def judged(call: Call) -> UpstreamResponse:
            resp = await inner(call)
            if resp.status < 300:
                return resp  # a success: nothing to map (the common answer skips check_status)
            index = call.target
            target = route.targets[index]
            if resp.status in (404, 410):
                ask = functools.partial(self._sample_status, upstream, route, index, call.trace)
                raise await statuses.not_there(upstream, route, index, resp, self.redact, self.gone_check, ask)
            statuses.check_status(upstream, route, target, resp, self.redact)
            return resp

        return judged

    def shape(self, route: Route, inner: Send) -> Send | None:
        """The declared status and content type (``shape:``) of the answer the status stage passed; only
        where the route declares a shape.  Fallback judges each target's answer against it first
        (gateway.fallback.misfit), so drift reaching here is the answering target's own."""
        if route.shape is None:
            return None

        async def shaped(call: Call) -> UpstreamResponse:
            resp = await inner(call)
            try:
                statuses.check_shape(route, resp)
            except ShapeDrift:
                if resp.stream is not None:
                    await release(resp.stream)
                raise
            return resp

        return shaped

    def answered(self, route: Route, inner: Send) -> Send:
        """Once the answer is judged: which target gave it (/status, ``gateway_fallback_total``), and its
        Cache-Control/Expires for a cache fill asking; every route.  A route of one target only passes the
        headers on (its first target is the only one that can answer: /status shows target 0 for it), and
        where no cache can fill from it the stage is the next step itself."""

        async def noted(call: Call) -> UpstreamResponse:
            resp = await inner(call)
            if call.target > 0:
                self.metrics.fallbacks.labels(route.name, str(call.target)).inc()
            self.health.answered_by(route.name, call.target)
            if call.notes is not None:
                call.notes.append(resp.headers)
            return resp

        async def noted_one(call: Call) -> UpstreamResponse:
            resp = await inner(call)
            if call.notes is not None:
                call.notes.append(resp.headers)
            return resp

        if len(route.targets) > 1:
            return noted
        # one target and never a cache fill: nothing to note, so no step of its own to pass
        return noted_one if self.cached(route) else inner

    async def _sample_status(
        self,
        upstream: Upstream,
        route: Route,
        index: int,
        trace: RequestTrace | None,
        path_params: Mapping[str, str],
        query: Mapping[str, str],
    ) -> int | None:
        """What target ``index`` answers for the probe's sample (None: no answer to judge by); the call is on
        the request's record (``trace``) too: its access line counts every upstream call it caused."""
        try:
            params = parse_params(route, MultiDict(query), path_params)
            request_id = f"sample-{time.monotonic_ns()}"
            headers = self.headers(upstream, route, request_id)
        except GatewayError:
            return None
        call = Call(params, request_id, trace=trace, target=index, headers=headers)
        try:
            resp = await self.upstream(route)(call)
        except UpstreamError as exc:
            self.failed(route, exc)  # no pipeline sees this call's failure: it is counted here
            return None
        except GatewayError:
            return None
        return resp.status


class _Exchanges:
    """A route's upstream series, each child looked up once (made at its first use, as ``labels`` makes it),
    not per exchange: the duration histogram and the request counter per outcome."""

    __slots__ = ("_labels", "_metrics", "_outcomes", "_seconds")

    def __init__(self, metrics: Metrics, upstream: str, route: str) -> None:
        self._metrics = metrics
        self._labels = (upstream, route)
        self._seconds: HistogramChild | None = None
        #: by the answer's status (its class is the label) or the failure's kind
        self._outcomes: dict[int | str, CounterChild] = {}

    def count(self, trace: RequestTrace | None, status: int | None, seconds: float, outcome: int | str) -> None:
        """One exchange timed and counted, and written on the request's record (``trace``) for its access line."""
        timed = self._seconds
        if timed is None:
            timed = self._seconds = self._metrics.upstream_seconds.labels(*self._labels)
        timed.observe(seconds)
        if trace is not None:
            trace.upstream(status, seconds)
        counted = self._outcomes.get(outcome)
        if counted is None:
            label = status_class(outcome) if isinstance(outcome, int) else outcome
            counted = self._outcomes[outcome] = self._metrics.upstream_requests.labels(*self._labels, label)
        counted.inc()


def _followed(
    upstream: Upstream, route: Route, target: Target, params: Mapping[str, Any], at: str
) -> tuple[str, list[tuple[str, str]]]:
    """A next link's path and query, once its path is checked to be the target's own."""
    if not calls.link_below(at, target, params):
        raise ShapeDrift(
            f"upstream {upstream.name!r} gave a next link off the route's target path; it is not followed",
            code="pagination_bad_link",
            route=route.name,
        )
    path, _, query = at.partition("?")
    return path, parse_qsl(query, keep_blank_values=True)
