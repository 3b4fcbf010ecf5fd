"""The per-route pipeline: stable request → upstream call(s) → stable response.

Order matters and is fixed: params and body are validated completely before any
upstream is contacted (a bad request is never forwarded); targets are tried in
order, what ``fallback_on`` names handing over to the next (migrations, gateway.fallback);
upstream statuses are mapped once, in ``_not_there`` (404/410) and ``_check_status``;
the response is rebuilt from declared fields.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict, MultiMapping

from gateway import buffers, fallback, jsonio, relay, retry_after, trace
from gateway.auth import Credentials, secrets_of
from gateway.cache import Notes, ResponseCache
from gateway.config import Config, Route, Target, Upstream
from gateway.errors import (
    BadGateway,
    GatewayError,
    NotFound,
    ServiceUnavailable,
    UpstreamError,
    client_error_for,
)
from gateway.health import RouteHealth
from gateway.mapping import ShapeDrift, apply_mapping, evaluate, parse_params, target_request
from gateway.methods import SAFE as _SAFE_METHODS
from gateway.metrics import Metrics, status_class
from gateway.pagination import derive_key
from gateway.pipeline import Exchange, Pipeline, Stage, build, collection, conventions, stages
from gateway.redact import Redactor, secret_values
from gateway.routing import Match
from gateway.session import SessionChecks
from gateway.shape import check_body, check_response
from gateway.upstream import UpstreamClient, UpstreamResponse, release
from gateway.verdict import GoneCheck

JSON_TYPE = "application/json"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: failures raised before any request left the gateway: not counted as upstream requests
_NOT_SENT = frozenset({"credentials", "budget", "throttled", "circuit_open", "config"})
#: the gateway holding itself back, not the route breaking
SELF_PACING = frozenset({"budget", "throttled", "circuit_open", buffers.KIND})
#: the stages around the proxy core, outermost first; each exists only on routes it applies to
STAGES: tuple[tuple[str, Stage], ...] = (
    ("validator", conventions.validator),
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
        #: tells a gone entity from a gone route on a 404 (None: such a 404 stays a 404)
        self.gone_check = gone_check
        #: signs next_cursor (gateway.pagination.cursor); never logged
        self.cursor_secret = _cursor_secret(config, creds)
        #: hides every configured secret in upstream-derived error text (the Gateway's, shared with the logs)
        self.redact = redactor if redactor is not None else Redactor(lambda: secret_values(config, creds))
        #: each route's handler, composed once here (gateway.pipeline), not decided per request
        self.pipelines: dict[str, Pipeline] = {r.name: self._build(r) for r in config.routes}

    async def handle(
        self, request: web.Request, match: Match, request_id: str, client: str | None = None
    ) -> web.StreamResponse:
        """Serve one stable request for ``client`` (a key name; None: its answers are not shared through
        the cache); every error leaving here has its message redacted."""
        try:
            return await self.pipelines[match.route.name].run(Exchange(request, match, request_id, client))
        except GatewayError as exc:
            self._scrub(exc)
            raise

    def _scrub(self, exc: GatewayError) -> None:
        """The one place error text is redacted: before a client, /status, a probe result or a log sees it."""
        exc.message = self.redact(exc.message, fresh=True)
        exc.args = (exc.message,)
        if exc.details is not None:
            exc.details = _scrub_details(exc.details, self.redact)

    def _build(self, route: Route) -> Pipeline:
        name, core = stages.core(self, route)
        return build(route, core, [*STAGES, *stages.stages_of(self)], core_name=name)

    async def single(
        self,
        request: web.Request | None,
        route: Route,
        params: dict[str, Any],
        request_id: str,
        body: bytes | None = None,
        *,
        relay: bool = False,
        notes: Notes | None = None,
    ) -> web.StreamResponse:
        """One entity's answer. ``relay``: a raw GET answer may be streamed to the caller (never for a
        cache fill: it stores it whole)."""
        stream = relay and request is not None and route.response.raw and request.method == "GET"
        resp = await self.call(route, params, body, [], request_id, stream=stream, notes=notes)
        if resp.stream is not None:
            assert request is not None
            return await self._relay(request, route, resp, params, request_id)
        return self._respond(route, resp, params)

    async def _relay(
        self, request: web.Request, route: Route, resp: UpstreamResponse, params: Mapping[str, Any], request_id: str
    ) -> web.StreamResponse:
        """A raw answer written as it arrives (gateway.relay): one chunk held, not the whole body."""
        assert resp.stream is not None
        upstream = self.config.upstreams[route.upstream]
        try:
            status, headers = self._head(route, resp, params)
            headers["Content-Type"] = resp.headers.get("Content-Type", "application/octet-stream")
            headers["X-Request-ID"] = request_id  # the response is on the wire before the middleware sees it
            out, failure = await relay.relay(request, resp.stream, status, headers, upstream, route.name)
        except UpstreamError as exc:
            self._record_error(upstream, route, exc)
            raise
        finally:
            await release(resp.stream)
        if failure is not None:
            self._record_error(upstream, route, failure)
            record = trace.current()
            if record is not None:
                record.error = failure.code  # the access line says why the body was cut
            del failure
        else:
            self.health.up(route.name)
        return out

    # ------------------------------------------------------------------ request side

    def _headers(self, upstream: Upstream, route: Route, request_id: str, body: bytes | None) -> dict[str, str]:
        headers = dict(upstream.headers)
        headers["Accept"] = headers.get("Accept", "application/json, */*;q=0.5")
        headers["X-Request-ID"] = request_id
        if body is not None:
            headers["Content-Type"] = JSON_TYPE
        if route.auth:
            headers.update(self.creds.headers_for(upstream, route.name))
        return headers

    async def call(
        self,
        route: Route,
        params: Mapping[str, Any],
        body: bytes | None,
        extra_query: list[tuple[str, str]],
        request_id: str,
        at: str | None = None,
        *,
        stream: bool = False,
        notes: Notes | None = None,
        only: int | None = None,
    ) -> UpstreamResponse:
        """Try each target in order; what the route's ``fallback_on`` names hands over to the next one.

        ``at`` (a ``next_url`` page) is a path and query below ``base_url`` to fetch instead
        of the target's own; its path must be the target's, else the route is not followed.
        ``stream``: a 2xx answer comes back unread (``resp.stream``), for the caller to relay and release.
        ``only``: ask that one target; where it hands over, ``fallback.HandOver`` says so (a collection
        whose targets page differently walks one target at a time, gateway.pipeline.collection).
        """
        upstream = self.config.upstreams[route.upstream]
        try:
            headers = self._headers(upstream, route, request_id, body)
        except UpstreamError as exc:
            self._record_error(upstream, route, exc)
            raise
        last = len(route.targets) - 1
        for index in range(len(route.targets)) if only is None else (only,):
            target = route.targets[index]
            resp = await self._send(upstream, route, target, params, body, extra_query, headers, at, stream)
            if index < last and fallback.hands_over(route, resp, index):
                if only is not None:
                    if resp.stream is not None:
                        await release(resp.stream)
                    raise fallback.HandOver(index)
                continue
            if resp.status in (404, 410):
                raise await self._not_there(upstream, route, index, resp)
            self._check_status(upstream, route, target, resp)
            if route.shape is not None:
                try:
                    self._check_shape(upstream, route, resp)
                except ShapeDrift:
                    if resp.stream is not None:
                        await release(resp.stream)
                    raise
            if index > 0:
                self.metrics.fallbacks.labels(route.name, str(index)).inc()
            self.health.answered_by(route.name, index)
            if notes is not None:
                notes.append(resp.headers)  # Cache-Control/Expires, for the cache fill asking
            return resp
        raise AssertionError("routes have at least one target")

    async def _send(
        self,
        upstream: Upstream,
        route: Route,
        target: Target,
        params: Mapping[str, Any],
        body: bytes | None,
        extra_query: list[tuple[str, str]],
        headers: dict[str, str],
        at: str | None = None,
        stream: bool = False,
    ) -> UpstreamResponse:
        path, query = target_request(target, params)
        if at is not None:
            path, query = _followed(upstream, route, path, at)
        payload = (
            target.body.const if target.body.mode == "const" else (body if target.body.mode == "passthrough" else None)
        )
        if payload is not None and "Content-Type" not in headers:
            headers = {**headers, "Content-Type": JSON_TYPE}
        started = time.perf_counter()
        try:
            resp = await self.client.send(
                upstream,
                target.method,
                path,
                [*query, *extra_query],
                headers,
                payload,
                follow=target.redirect == "follow",
                route=route.name,
                stream=stream,
            )
        except UpstreamError as exc:
            if exc.kind not in _NOT_SENT:  # refused before sending (breaker, budget, ...): no call to time or count
                seconds = time.perf_counter() - started
                self.metrics.upstream_seconds.labels(upstream.name, route.name).observe(seconds)
                trace.upstream(None, seconds)
                self.metrics.upstream_requests.labels(upstream.name, route.name, exc.kind).inc()
            self._record_error(upstream, route, exc)
            raise
        m = self.metrics
        m.child(m.upstream_seconds, upstream.name, route.name).observe(resp.elapsed)
        trace.upstream(resp.status, resp.elapsed)  # for the request's access-log line
        m.child(m.upstream_requests, upstream.name, route.name, status_class(resp.status)).inc()
        return resp

    def _record_error(self, upstream: Upstream, route: Route, exc: UpstreamError) -> None:
        """Count an upstream failure once (it may pass several layers) and mark the route down.

        The gateway pacing itself (budget, a 429 hold-off, an open breaker) is counted but
        is not the route breaking: alerts must not page for the gateway doing its job.
        """
        if exc.recorded:
            return
        exc.recorded = True
        self._scrub(exc)  # the route's down reason is shown on /status
        self.metrics.upstream_errors.labels(upstream.name, route.name, exc.kind).inc()
        if exc.kind not in SELF_PACING:
            self.health.down(route.name, exc.code, exc.message)

    def _check_shape(self, upstream: Upstream, route: Route, resp: UpstreamResponse) -> None:
        """The route's declared status and content type (``shape:``), on every successful answer."""
        assert route.shape is not None
        try:
            check_response(
                route.shape, resp.status, resp.headers.get("Content-Type", ""), resp.location is not None, route.name
            )
        except ShapeDrift as exc:
            self._record_error(upstream, route, exc)
            raise

    async def _not_there(self, upstream: Upstream, route: Route, index: int, resp: UpstreamResponse) -> GatewayError:
        """A 404/410: the entity the client named is missing, or the upstream route is gone.

        Only a target path carrying an id from the stable path can mean a missing entity, and
        even then only if the route's probe sample (a known-existing entity) is found (gateway.verdict).
        """
        target = route.targets[index]
        status = resp.status
        where = f"{target.method} {target.path.raw}"
        if target.path.names & route.path.names:
            why = None
            if self.gone_check is not None:
                ask = functools.partial(self._sample_status, upstream, route, target)
                why = await self.gone_check.route_gone(route.name, where, ask)
            if why is None:
                detail = self.redact(_upstream_message(resp.body), fresh=True)
                return NotFound(detail or "not found upstream", route=route.name)
            message = f"upstream {upstream.name!r} {why}: {where} is gone"
        else:
            # nothing the client named is in the path: no entity can be missing, the route is
            message = f"upstream {upstream.name!r} no longer serves {where} ({status})"
        exc = BadGateway(
            message + " - the upstream route may have moved; check routes.yaml",
            kind="4xx",
            code="upstream_route_gone",
            route=route.name,
        )
        self._record_error(upstream, route, exc)
        return exc

    async def _sample_status(
        self, upstream: Upstream, route: Route, target: Target, path_params: Mapping[str, str], query: Mapping[str, str]
    ) -> int | None:
        """What ``target`` answers for the probe's sample (None: no answer to judge by)."""
        try:
            params = parse_params(route, MultiDict(query), path_params)
            headers = self._headers(upstream, route, f"sample-{time.monotonic_ns()}", None)
            resp = await self._send(upstream, route, target, params, None, [], headers)
        except GatewayError:
            return None
        return resp.status

    def _check_status(self, upstream: Upstream, route: Route, target: Target, resp: UpstreamResponse) -> None:
        status = resp.status
        if status < 300 or status == 304 or (resp.location is not None and 300 <= status < 400):
            return
        detail = self.redact(_upstream_message(resp.body), fresh=True)
        name = upstream.name
        exc: Exception
        if status in (401, 403):
            exc = BadGateway(
                f"upstream {name!r} rejected the gateway's credentials ({status})"
                + (f": {detail}" if detail else "")
                + "; renew them",
                kind="credentials_rejected",
                code="upstream_auth_rejected",
                route=route.name,
            )
        elif status == 429:
            retry = retry_after.header_value(resp.headers, resp.body)
            exc = ServiceUnavailable(
                f"upstream {name!r} is rate limiting the gateway" + (f": {detail}" if detail else ""),
                kind="throttled",
                code="upstream_rate_limited",
                route=route.name,
                headers={"Retry-After": retry} if retry else None,
            )
        elif status in (400, 422) and route.method in _SAFE_METHODS:
            # every parameter of a read was built from validated input: the mapping no longer fits
            exc = BadGateway(
                f"upstream {name!r} rejected {target.method} {target.path.raw} ({status})"
                + (f": {detail}" if detail else "")
                + " - the gateway built every parameter from validated input, so the upstream API"
                " changed; check routes.yaml",
                kind="4xx",
                code="upstream_rejected",
                route=route.name,
            )
        elif status in (400, 409, 422):
            raise client_error_for(status)(
                detail or f"upstream {name!r} refused the request ({status})",
                code="upstream_rejected",
                route=route.name,
            )
        elif 300 <= status < 400:
            exc = BadGateway(
                f"upstream {name!r} answered an unexpected redirect ({status})",
                kind="redirect",
                code="bad_redirect",
                route=route.name,
            )
        elif status < 500:
            exc = BadGateway(
                f"upstream {name!r} refused {target.method} {target.path.raw} ({status})"
                + (f": {detail}" if detail else ""),
                kind="4xx",
                code="upstream_refused",
                route=route.name,
            )
        else:
            exc = BadGateway(
                f"upstream {name!r} failed with {status}" + (f": {detail}" if detail else ""),
                kind="5xx",
                code="upstream_failed",
                route=route.name,
            )
        assert isinstance(exc, UpstreamError)
        self._record_error(upstream, route, exc)
        try:
            raise exc
        finally:
            del exc  # the traceback holds this frame: a local naming the error would make a cycle keeping resp

    # ------------------------------------------------------------------ response side

    def _json(self, route: Route, resp: UpstreamResponse) -> Any:
        """The upstream body parsed; anything that is not JSON (NaN, too deep, cut off) is a counted 502."""
        try:
            return jsonio.loads(resp.body)
        except (ValueError, UnicodeDecodeError) as err:
            # the reason only where it helps (too deep, NaN); raised outside the handler: no chained
            # error holding (a copy of) the body
            why = f" ({err})" if isinstance(err, jsonio.TooDeep) or "is not JSON" in str(err) else ""
        exc = ShapeDrift(
            f"upstream {route.upstream!r} returned malformed JSON{why}", code="upstream_bad_json", route=route.name
        )
        self._record_error(self.config.upstreams[route.upstream], route, exc)
        try:
            raise exc
        finally:
            del exc  # no cycle error -> traceback -> this frame -> error (it would keep resp until a full gc)

    def _respond(self, route: Route, resp: UpstreamResponse, params: Mapping[str, Any]) -> web.StreamResponse:
        out = self._rebuild(route, resp, params)
        self.health.up(route.name)  # only a complete, well-shaped answer proves the route works
        return out

    def _head(self, route: Route, resp: UpstreamResponse, params: Mapping[str, Any]) -> tuple[int, dict[str, str]]:
        """The stable status and the declared response headers."""
        spec = route.response
        location = resp.location or resp.url
        headers: dict[str, str] = {}
        for name, expr in spec.headers:
            value = evaluate(expr, {}, params, location, route.name, name)
            if value is not None:
                headers[name] = str(value)
        return spec.status or (resp.status if resp.status < 300 else 200), headers

    def _rebuild(self, route: Route, resp: UpstreamResponse, params: Mapping[str, Any]) -> web.StreamResponse:
        spec = route.response
        location = resp.location or resp.url
        try:
            status, headers = self._head(route, resp, params)
            if status == 204 or resp.status == 304:
                return web.Response(status=status if resp.status != 304 else 304, headers=headers)
            if spec.raw:
                ctype = resp.headers.get("Content-Type", "application/octet-stream")
                headers["Content-Type"] = ctype
                return _holding(_Relayed(status=status, body=resp.body, headers=headers), resp)
            if spec.item is not None:
                src = self._json(route, resp) if resp.location is None else {}
                if route.shape is not None and resp.location is None:
                    check_body(route.shape, src, route.name)
                data = jsonio.dumps(apply_mapping(spec.item, src, params, location, route.name))
            else:
                src = self._json(route, resp)  # pass-through still must be JSON
                if route.shape is not None:
                    check_body(route.shape, src, route.name)
                data = resp.body
        except ShapeDrift as exc:
            self._record_error(self.config.upstreams[route.upstream], route, exc)
            raise
        if data is resp.body:
            return _holding(
                _Relayed(status=status, body=data, content_type=JSON_TYPE, charset="utf-8", headers=headers), resp
            )
        return web.Response(status=status, body=data, content_type=JSON_TYPE, charset="utf-8", headers=headers)

    async def collection(
        self,
        request: web.Request | None,
        route: Route,
        params: dict[str, Any],
        request_id: str,
        as_ndjson: bool = False,
        notes: Notes | None = None,
        *,
        query: MultiMapping[str] | None = None,
    ) -> web.StreamResponse:
        """A collection page (or ``all=true``): gateway.pipeline.collection."""
        return await collection.serve(self, request, route, params, request_id, as_ndjson, notes, query=query)

    def budget_short(self, route: Route) -> str | None:
        """Why a probe of ``route`` should not spend the upstream budget now (scripts come first), or None."""
        upstream = self.config.upstreams[route.upstream]
        try:
            headers = self._headers(upstream, route, "", None)
        except UpstreamError:
            return None  # no credential: the probe reports that itself
        return self.client.resilience.budget_short(upstream, headers)

    async def probe(
        self, route: Route, query: Mapping[str, str], path_params: Mapping[str, str], request_id: str
    ) -> web.Response:
        """A GET of ``route`` without an HTTP request, for contract probes.

        The same upstream calls, status mapping, shape checks and field mapping as live
        traffic (never the response cache); a collection answers its first ``limit`` items.
        Errors are redacted as live traffic's are: probe results are shown on /status.
        """
        try:
            return await self._probe(route, query, path_params, request_id)
        except GatewayError as exc:
            self._scrub(exc)
            raise

    async def _probe(
        self, route: Route, query: Mapping[str, str], path_params: Mapping[str, str], request_id: str
    ) -> web.Response:
        """The route's own core stage (gateway.pipeline.stages.core), without a request or the cache."""
        params = parse_params(route, MultiDict(query), path_params)
        if route.pagination is None:
            out = await self.single(None, route, params, request_id)
        else:
            out = await self.collection(None, route, params, request_id, query=MultiDict(query))
        assert isinstance(out, web.Response)
        return out


def _cursor_secret(config: Config, creds: Credentials) -> bytes:
    """The deployment's cursor key: ``server.cursor_key``, else derived (gateway.pagination.cursor)."""
    spec = config.server.cursor_key
    configured = creds.resolve(spec) if spec is not None else None
    shared = [v for u in config.upstreams.values() for v in secrets_of(u.auth, creds)]
    return derive_key(configured, shared)


def _followed(upstream: Upstream, route: Route, target_path: str, at: str) -> tuple[str, list[tuple[str, str]]]:
    """A next link's path and query, once its path is checked to be the target's own."""
    path, _, query = at.partition("?")
    if path.rstrip("/") != target_path.rstrip("/"):
        exc = ShapeDrift(
            f"upstream {upstream.name!r} gave a next link off the route's target path; it is not followed",
            code="pagination_bad_link",
            route=route.name,
        )
        raise exc
    return path, parse_qsl(query, keep_blank_values=True)


#: the upstream answer whose body a response sends as it is
_ANSWER = web.ResponseKey("routegate_upstream_answer", UpstreamResponse)


class _Relayed(web.Response):
    """A response sending an upstream answer's body as it is.

    The answer (and so its count in server.max_buffered_bytes) lives until the body is
    written, then both are dropped: aiohttp keeps a keep-alive connection's last response
    until that connection's next request, which would hold the body long after it was sent.
    """

    async def write_eof(self, data: bytes = b"") -> None:
        try:
            await super().write_eof(data)
        finally:
            self.pop(_ANSWER, None)
            self._body = None


def _holding(out: web.Response, answer: UpstreamResponse) -> web.Response:
    out[_ANSWER] = answer
    return out


def _scrub_details(details: Any, redact: Redactor) -> Any:
    """Error details (lists of problem strings, dicts of them) with every string redacted."""
    if isinstance(details, str):
        return redact(details)
    if isinstance(details, list):
        return [_scrub_details(d, redact) for d in details]
    if isinstance(details, dict):
        return {k: _scrub_details(v, redact) for k, v in details.items()}
    return details


def _upstream_message(body: bytes) -> str:
    """The human part of an upstream error body (PostHog ``detail``, Observable ``errors``)."""
    try:
        data = jsonio.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return ""
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            if isinstance(data.get(key), str):
                return str(data[key])[:500]
        errors = data.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            msg = errors[0].get("message")
            if isinstance(msg, str):
                return msg[:500]
    return ""
