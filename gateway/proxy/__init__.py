"""The per-route pipelines of one loaded config, and the proxy core their innermost stage calls.

Each route's handler is composed once, here, from the stages it configures (gateway.pipeline),
outermost first: client auth and limits, the HTTP conventions, the cache, ``account`` (upstream
failures counted once), params, body, write invalidation, then a collection or one call.
Params and body are validated completely before any upstream is contacted (a bad request is
never forwarded).  Each upstream call passes the route's call-level stack, composed once too
(gateway.pipeline.calls, built by ``targets``): which target answered, its shape, its status
mapped once (``status``), fallback between targets, the exchange itself.  A one-call route's
answer is then relayed, mapped or passed through (``answer``, ``respond``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from multidict import MultiDict

from gateway import buffers
from gateway.access import ANONYMOUS, Access
from gateway.auth import Credentials, secrets_of
from gateway.cache import ResponseCache
from gateway.config import Config, Route
from gateway.errors import GatewayError, UpstreamError
from gateway.health import RouteHealth
from gateway.limits import Limits
from gateway.metrics import Metrics
from gateway.pagination import derive_key
from gateway.pipeline import Exchange, Handler, Pipeline, Stage, admission, build, conventions, stages
from gateway.pipeline.calls import CallPipeline
from gateway.proxy import answer, respond
from gateway.proxy.targets import Targets
from gateway.redact import Redactor, secret_values
from gateway.routing import Match
from gateway.session import SessionChecks
from gateway.trace import RequestTrace
from gateway.upstream import UpstreamClient, UpstreamResponse
from gateway.verdict import GoneCheck

#: the gateway holding itself back, not the route breaking
SELF_PACING = frozenset({"budget", "held_off", "throttled", "circuit_open", buffers.KIND})
#: counted, but not the route breaking: a walk cut by a target switch (gateway.pipeline.collection), a
#: cursor that cannot carry a long run of tied items (gateway.pagination.cursor), or a list that moved under
#: a walk (gateway.pagination.shifts); new walks work
NOT_DOWN = SELF_PACING | {"switched", "ties", "shifted"}
#: the stages a contract probe runs (gateway.proxy.Proxy.probe), besides the core
PROBE_STAGES = frozenset({"account", "params"})
#: the HTTP conventions around the proxy's own stages; each exists only on routes it applies to
STAGES: tuple[tuple[str, Stage], ...] = (
    ("validator", conventions.validator),
    ("preconditions", conventions.preconditions),
    ("compress", conventions.compress),
)


class Proxy:
    """Serves the routes of one loaded config; a reload builds a new Proxy."""

    def __init__(
        self,
        config: Config,
        client: UpstreamClient,
        creds: Credentials,
        metrics: Metrics,
        health: RouteHealth | None = None,
        cache: ResponseCache | None = None,
        sessions: SessionChecks | None = None,
        gone_check: GoneCheck | None = None,
        redactor: Redactor | None = None,
        access: Access | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.creds = creds
        self.metrics = metrics
        #: up/down per route; the Gateway's, so it outlives reloads
        self.health = health if health is not None else RouteHealth(metrics)
        #: the response cache (None when no route caches); its backend is the Gateway's
        self.cache = cache
        #: the upstreams' session checks (gateway.session); the Gateway's, so they outlive reloads
        self.sessions = sessions
        #: signs next_cursor (gateway.pagination.cursor); never logged
        self.cursor_secret = _cursor_secret(config, creds)
        #: hides every configured secret in upstream-derived error text (the Gateway's, shared with the logs)
        self.redact = redactor if redactor is not None else Redactor(lambda: secret_values(config, creds))
        self.targets = Targets(
            config, client, creds, metrics, self.health, self.redact, gone_check, self.failed, self._may_fill
        )
        #: each route's call-level stack (gateway.pipeline.calls), composed once by ``targets``
        self.calls: dict[str, CallPipeline] = self.targets.pipelines
        #: client auth and admission, the outermost stages (None: an open gateway / no limits)
        self.access = access
        self.limits = limits
        #: who a request is before any key is checked: anonymous on an open gateway, else unknown
        self.anonymous = ANONYMOUS if access is None or access.open else None
        #: each route's handler, composed once here (gateway.pipeline), not decided per request
        self.pipelines: dict[str, Pipeline] = {r.name: self._build(r) for r in config.routes}
        #: what a contract probe runs: the route's stages, less those of an HTTP exchange
        self.probes: dict[str, Pipeline] = {r.name: self._build_probe(r) for r in config.routes}

    async def handle(
        self, request: web.Request, match: Match, request_id: str, trace: RequestTrace | None = None
    ) -> web.StreamResponse:
        """Serve one stable request through its route's pipeline, writing what it did on ``trace``;
        every error leaving here has its message redacted."""
        record = trace if trace is not None else RequestTrace(route=match.route.name)
        record.client = self.anonymous
        try:
            return await self.pipelines[match.route.name].run(
                Exchange(request, match, request_id, record, self.anonymous, request.query)
            )
        except GatewayError as exc:
            self.scrub(exc)
            raise

    def scrub(self, exc: GatewayError) -> None:
        """The one place error text is redacted: before a client, /status, a probe result or a log sees it."""
        exc.message = self.redact(exc.message, fresh=True)
        exc.args = (exc.message,)
        if exc.details is not None:
            exc.details = _scrub_details(exc.details, self.redact)

    def _build(self, route: Route) -> Pipeline:
        outer: list[tuple[str, Stage]] = []
        if self.access is not None:
            outer.append(("auth", admission.client_auth(self.access)))
        if self.limits is not None:
            outer.append(("limits", admission.limits(self.limits)))
        name, core, calls = self._core(route)
        return build(route, core, [*outer, *STAGES, *stages.stages_of(self)], name, calls)

    def _build_probe(self, route: Route) -> Pipeline:
        """A probe is the gateway's own call: no client auth or limits, no HTTP conventions, never the cache."""
        name, core, calls = self._core(route)
        return build(route, core, [(n, s) for n, s in stages.stages_of(self) if n in PROBE_STAGES], name, calls)

    def _core(self, route: Route) -> tuple[str, Handler, tuple[str, ...]]:
        """The innermost endpoint stage (a collection, or one call and its answer step) and the names of the
        call-level stack it runs, outermost first."""
        calls = self.calls[route.name].stages
        if route.pagination is not None:
            return "collection", stages.collection(self, route), calls
        step, core = answer.single(self, route)
        return "call", core, (step, *calls)

    def _may_fill(self, route: Route) -> bool:
        """Whether the response cache may fill from ``route`` (a superset of where the ``cache`` stage runs)."""
        return self.cache is not None and self.cache.caches(route)

    def failed(self, route: Route, exc: UpstreamError) -> None:
        """Count an upstream failure and mark the route down; called once per failure, by the ``account`` stage.

        The gateway pacing itself (budget, a 429 hold-off, an open breaker) is counted but
        is not the route breaking: alerts must not page for the gateway doing its job.
        """
        self.scrub(exc)  # the route's down reason is shown on /status
        self.metrics.upstream_errors.labels(route.upstream, route.name, exc.kind).inc()
        if exc.kind not in NOT_DOWN:
            self.health.down(route.name, exc.code, exc.message)

    def _json(self, route: Route, resp: UpstreamResponse) -> Any:
        """The upstream body parsed (gateway.proxy.respond.parse_json)."""
        return respond.parse_json(route, resp)

    def budget_short(self, route: Route) -> str | None:
        """Why a probe of ``route`` should not spend the upstream budget now (scripts come first), or None."""
        upstream = self.config.upstreams[route.upstream]
        try:
            headers = self.targets.headers(upstream, route, "")
        except UpstreamError:
            return None  # no credential: the probe reports that itself
        return self.client.resilience.budget_short(upstream, headers)

    async def probe(
        self, route: Route, query: Mapping[str, str], path_params: Mapping[str, str], request_id: str
    ) -> web.Response:
        """A GET of ``route`` without an HTTP request, for contract probes.

        The route's own ``account``, ``params`` and core stages (``probes``): the same upstream
        calls, status mapping, shape checks and field mapping as live traffic, failures counted
        alike; never the response cache.  A collection answers its first ``limit`` items.
        Errors are redacted as live traffic's are: probe results are shown on /status.
        """
        ex = Exchange(
            None, Match(route, dict(path_params)), request_id, RequestTrace(route.name), query=MultiDict(query)
        )
        try:
            out = await self.probes[route.name].run(ex)
        except GatewayError as exc:
            self.scrub(exc)
            raise
        assert isinstance(out, web.Response)
        return out


def _cursor_secret(config: Config, creds: Credentials) -> bytes:
    """The deployment's cursor key: ``server.cursor_key``, else derived (gateway.pagination.cursor)."""
    spec = config.server.cursor_key
    configured = creds.resolve(spec) if spec is not None else None
    shared = [v for u in config.upstreams.values() for v in secrets_of(u.auth, creds)]
    return derive_key(configured, shared)


def _scrub_details(details: Any, redact: Redactor) -> Any:
    """Error details (lists of problem strings, dicts of them) with every string redacted."""
    if isinstance(details, str):
        return redact(details)
    if isinstance(details, list):
        return [_scrub_details(d, redact) for d in details]
    if isinstance(details, dict):
        return {k: _scrub_details(v, redact) for k, v in details.items()}
    return details
