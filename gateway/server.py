"""The aiohttp application: the gateway's own endpoints plus one catch-all dispatcher.

aiohttp's router is frozen once the app starts, but routes.yaml is hot-reloaded, so
stable routes are matched by ``gateway.routing`` against whatever ``Runtime`` is
current.  A request takes the runtime once, at its start, and keeps it to the end:
a reload never changes the config under an in-flight request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway import httpedge, jsonio, logs, status, trace, workers
from gateway.access import ANONYMOUS, CLIENT, Access
from gateway.auth import Credentials
from gateway.cache import CacheBackends
from gateway.cache.admin import purge_request
from gateway.cache.downstream import NO_STORE, mark_private
from gateway.config import Config, ConfigError, Problem, load_config, parse_config
from gateway.edge import HostGuard
from gateway.errors import (
    Conflict,
    GatewayError,
    HeadersTooLarge,
    PayloadTooLarge,
    Unauthorized,
    Unprocessable,
    UriTooLong,
)
from gateway.expiry import ExpiryCollector, expiries
from gateway.health import RouteHealth
from gateway.limits import Limits
from gateway.metrics import NO_ROUTE, Metrics, status_class
from gateway.openapi import DocumentCache
from gateway.peers import PeerAnswer, Peers
from gateway.pipeline.conventions import compress_large
from gateway.probes import Prober
from gateway.proxy import Proxy
from gateway.redact import Redactor, secret_values
from gateway.routing import Router
from gateway.session import SessionChecks
from gateway.upstream import UpstreamClient
from gateway.verdict import GoneCheck

log = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
#: request ids: a random per-process prefix and a counter (unique without a uuid4 per request)
_ids = itertools.count()
_id_prefix = os.urandom(8).hex()


def _reseed_ids() -> None:
    global _id_prefix, _ids
    _id_prefix, _ids = os.urandom(8).hex(), itertools.count()


os.register_at_fork(after_in_child=_reseed_ids)  # gateway serve --workers forks after this import


def new_request_id() -> str:
    return f"{_id_prefix}{next(_ids):016x}"


_OWN = frozenset({"/healthz", "/readyz", "/metrics", "/admin/reload", "/openapi.json", "/admin/cache/purge", "/status"})


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything built from one config; swapped whole on reload."""

    config: Config
    router: Router
    proxy: Proxy
    access: Access
    #: the Host allow-list and the cross-origin write check (gateway.edge)
    edge: HostGuard


class Gateway:
    """Process-wide state: the current runtime, the client pool, credentials, metrics."""

    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        env: Mapping[str, str] | None = None,
        host: str | None = None,
    ) -> None:
        #: the address served (``gateway serve --host``); None: a loopback test server
        self.host = host
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.client = UpstreamClient(self.metrics)
        #: where ${VAR}s and secrets are read (os.environ unless a test gives its own)
        self.env = env
        self.credentials = Credentials(env)
        #: the one redactor for upstream-derived error text (``gateway serve`` gives its logs the same secrets)
        self.redactor = Redactor(lambda: secret_values(self.runtime.config, self.credentials))
        #: requests the HTTP parser refuses: logged briefly and rate-limited (stands in for aiohttp.server)
        self.rejects = httpedge.RejectLog()
        #: route health and probe results outlive reloads; credential expiry is read at each scrape
        self.health = RouteHealth(self.metrics)
        #: the upstreams' session checks (auth.check): memo and credential metric outlive reloads
        self.sessions = SessionChecks(self.client, self.credentials, self.metrics)
        self.prober = Prober(
            lambda: (self.runtime.config, self.runtime.proxy), self.health, self.metrics, sessions=self.sessions
        )
        #: a 404 for an id is checked against the route's probe sample (gone entity or gone route?)
        self.gone_check = GoneCheck(self.prober.sample_for)
        #: whether the background prober runs (``build_app(probes=True)``, ``gateway serve``)
        self.probing = False
        self.registry.register(ExpiryCollector(lambda: self.runtime.config, self.credentials))
        #: rate-limit buckets and the in-flight count outlive reloads
        self.limits = Limits(self.metrics)
        #: set when serving a non-loopback address: a reload may not drop every client key
        self.requires_client_keys: str | None = None
        self.openapi = DocumentCache()
        #: the response cache's backend (memory or Redis) outlives reloads that keep its settings
        self.caches = CacheBackends(self.credentials, self.metrics)
        #: the other workers of ``gateway serve --workers N``, which admin calls are relayed to
        self.peers: Peers | None = None
        #: when the last reload was refused, and why: the routes file on disk is not what is served
        #: (shown on /status until a reload succeeds)
        self.refused: tuple[float, ConfigError] | None = None
        self.runtime = self._build(config)
        self.metrics.reloads.labels("success").inc()

    def _build(self, config: Config) -> Runtime:
        self.metrics.config_info.info({"digest": config.digest, "path": config.path})
        self.metrics.config_loaded.set_to_current_time()
        self.health.track(r.name for r in config.routes)  # NaN until known; a removed route's series go
        self.metrics.probes_configured.set(sum(1 for r in config.routes if r.probe is not None))
        self.client.resilience.register(config.upstreams.values())  # and every circuit breaker
        self.client.buffers.limit = config.server.max_buffered_bytes
        self.limits.configure(config)
        access = Access(config.access, self.credentials)
        for problem in access.without_value():  # a lockout must not be a mystery (a 401 says nothing more)
            log.error("%s: %s", config.path, problem)
        return Runtime(
            config,
            Router(config.routes),
            Proxy(
                config,
                self.client,
                self.credentials,
                self.metrics,
                health=self.health,
                cache=self.caches.for_config(config),
                sessions=self.sessions,
                gone_check=self.gone_check,
                redactor=self.redactor,
            ),
            access,
            HostGuard(config.server.allowed_hosts, self.host),
        )

    def reload(self, path: str | Path | None = None, *, text: str | None = None) -> Config:
        """Load and validate the file (or its already-read ``text``) completely; only then swap.

        Raises ConfigError, counted and logged; the old config keeps serving.
        """
        target = path or self.runtime.config.path
        try:
            config = load_config(target, env=self.env) if text is None else parse_config(text, str(target), self.env)
            if self.requires_client_keys and not config.access.clients:
                raise ConfigError(
                    [Problem(str(target), 0, "clients.keys", f"no client keys, but {self.requires_client_keys}")]
                )
        except ConfigError as exc:
            self.refused = (time.time(), exc)
            self.metrics.reloads.labels("failure").inc()
            self.metrics.config_failed.set_to_current_time()
            log.error("config reload failed, still serving %s: %s", self.runtime.config.digest, exc)
            raise
        self.runtime = self._build(config)
        self.refused = None
        self.metrics.reloads.labels("success").inc()
        if self.peers is not None:
            self.peers.remember(config)  # what a replacement worker serves if the file breaks later
        self.prober.wake()  # confirm at once what the new config fixed (or broke)
        log.info("config reloaded from %s (%s, %d routes)", target, config.digest, len(config.routes))
        return config

    async def close(self) -> None:
        await self.client.close()
        await self.caches.close()


GATEWAY = web.AppKey("gateway", Gateway)
REQUEST_ID = web.RequestKey("request_id", str)
ROUTE = web.RequestKey("route", str)


def error_response(exc: GatewayError) -> web.Response:
    return web.Response(
        status=exc.status,
        body=jsonio.dumps(exc.body()),
        content_type="application/json",
        charset="utf-8",
        headers=exc.headers,
    )


#: what aiohttp's parser accepts; beyond it a client gets the parser's plain-text 400
_PARSER_LIMIT = 65536
MAX_URL_BYTES = 8192
MAX_HEADER_BYTES = 8192
MAX_HEADERS = 100


def _check_sizes(request: web.Request) -> None:
    """nginx-like limits (414/431), answered in JSON before anything is routed or forwarded."""
    if len(request.raw_path) > MAX_URL_BYTES:
        raise UriTooLong(f"the URL is longer than {MAX_URL_BYTES} bytes")
    if len(request.raw_headers) > MAX_HEADERS:
        raise HeadersTooLarge(f"more than {MAX_HEADERS} request headers")
    for name, value in request.raw_headers:
        if len(name) + len(value) > MAX_HEADER_BYTES:
            raise HeadersTooLarge(f"a request header is longer than {MAX_HEADER_BYTES} bytes")


def _tcp_host(request: web.Request) -> str | None:
    """The Host header of a TCP request; None over the workers' Unix sockets, which no browser reaches."""
    transport = request.transport
    if transport is None or not isinstance(transport.get_extra_info("peername"), tuple):
        return None
    return request.headers.get("Host")


@web.middleware
async def _frame(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, JSON errors, stable-side metrics and the access log, for every request."""
    incoming = request.headers.get("X-Request-ID", "")
    rid = incoming if incoming and _REQUEST_ID.match(incoming) else new_request_id()
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    record, token = trace.begin()
    try:
        httpedge.check_request_line(request)
        _check_sizes(request)
        request.app[GATEWAY].runtime.edge.check(request.method, _tcp_host(request), request.headers.get("Origin"))
        resp = await handler(request)
    except GatewayError as exc:
        if exc.route is None:
            exc.route = request.get(ROUTE)
        resp = _failed(record, exc)
    except web.HTTPRequestEntityTooLarge:
        resp = _failed(record, PayloadTooLarge("the body is too large"))
    except web.HTTPException as exc:
        err = GatewayError(exc.reason, code=exc.reason.lower().replace(" ", "_"))
        err.status = exc.status
        resp = _failed(record, err)
    except Exception:
        log.exception("internal error handling %s %s (request %s)", request.method, request.path, rid)
        resp = _failed(record, GatewayError("internal gateway error; see the gateway log", route=request.get(ROUTE)))
    finally:
        trace.end(token)
    resp.headers["X-Request-ID"] = rid
    if request.path not in _OWN:
        # counted and logged once the answer is on the wire, as nginx's log phase does: the
        # client does not wait for the bookkeeping (aiohttp writes the response in this same
        # turn of the loop, before any callback queued now runs)
        elapsed = time.perf_counter() - started
        asyncio.get_running_loop().call_soon(_account, request, rid, resp.status, elapsed, record)
    return resp


def _failed(record: trace.RequestTrace, exc: GatewayError) -> web.Response:
    """The JSON error answer, its code noted for the access line."""
    record.error = exc.code
    return error_response(exc)


def _account(request: web.Request, rid: str, status: int, elapsed: float, record: trace.RequestTrace) -> None:
    """The stable-side metrics and the access line of one answered request."""
    route = request.get(ROUTE) or NO_ROUTE
    m = request.app[GATEWAY].metrics
    m.child(m.requests, route, request.method, status_class(status)).inc()
    m.child(m.request_seconds, route, request.method).observe(elapsed)
    if access_log.isEnabledFor(logging.INFO):
        _log_access(request, rid, route, status, elapsed, record)


def _log_access(
    request: web.Request, rid: str, route: str, status: int, elapsed: float, record: trace.RequestTrace
) -> None:
    """One JSON line per stable request.  No query string, headers or key values: they may carry secrets."""
    fields = {
        "event": "request",
        "request_id": rid,
        "method": request.method,
        "path": request.path[:256],
        "route": route,
        "client": request.get(CLIENT),
        "status": status,
        "upstream_status": record.upstream_status,
        "upstream_calls": record.upstream_calls,
        "duration_ms": round(elapsed * 1000, 3),
        "upstream_ms": round(record.upstream_seconds * 1000, 3),
        "cache": record.cache,
        "error": record.error,
    }
    fast = logs.access_lines()
    if fast is not None:  # gateway serve's own JSON logging: the same line without a LogRecord
        fast.write(fields)
    else:
        access_log.info("%s", _AsJson(fields), extra={"fields": fields})  # the JSON formatter uses fields as they are


class _AsJson:
    """A log argument serialized only if a handler formats the plain message (the JSON one does not)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return json.dumps(self.value)


async def _dispatch(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    runtime = gw.runtime  # pinned for the whole request
    match = runtime.router.match(request.method, request.raw_path)
    request[ROUTE] = match.route.name
    if match.route.no_store:
        request[NO_STORE] = True
    key = runtime.access.identify(request)  # 401 without a valid key
    request[CLIENT] = key.name if key is not None else ANONYMOUS  # logged even when refused below
    runtime.access.authorize(key, match.route, request.method)  # 403 outside the key's grants
    limits = gw.limits
    limits.enter(request[CLIENT], match.route.name)  # 429 before anything is forwarded
    try:
        return await runtime.proxy.handle(request, match, request[REQUEST_ID], request[CLIENT])
    finally:
        limits.leave()


async def _downstream_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """Stable routes' answers (streams too, errors too) are never for a shared cache in front."""
    if request.get(ROUTE) is not None:
        mark_private(request, resp, keyed=not request.app[GATEWAY].runtime.access.open)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    cfg = request.app[GATEWAY].runtime.config
    return web.json_response(
        # pid: which worker answered, with gateway serve --workers N
        {"status": "ready", "config": cfg.path, "digest": cfg.digest, "routes": len(cfg.routes), "pid": os.getpid()}
    )


async def _metrics(request: web.Request) -> web.Response:
    registry = request.app[GATEWAY].registry
    # gateway serve --workers N: every worker's values, whichever worker answers
    body = workers.scrape(registry) if workers.multiprocess_enabled() else generate_latest(registry)
    resp = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
    compress_large(resp)  # as Accept-Encoding allows (gateway.pipeline.conventions)
    return resp


async def _status(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    if not gw.runtime.access.open:
        # route health, upstream errors and credential expiry are for operators once scripts need keys
        try:
            gw.runtime.access.require_admin(request)
        except Unauthorized as exc:
            exc.headers = {"WWW-Authenticate": 'Basic realm="routegate status", charset="UTF-8"'}
            raise
    page = status.render_page(
        gw.runtime.config,
        gw.health,
        gw.prober.results,
        expiries(gw.runtime.config, gw.credentials),
        prober_running=gw.probing,
        last_round=gw.prober.last_round,
        refused=gw.refused,
    )
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=status.HEADERS)


async def _background_probes(app: web.Application) -> AsyncIterator[None]:
    """The contract prober runs for as long as the app does."""
    gw = app[GATEWAY]
    task = asyncio.create_task(gw.prober.run_forever(), name="routegate-prober")
    gw.probing = True
    yield
    gw.probing = False
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    gw.prober.stopped()


async def _openapi(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    body = gw.openapi.get(gw.runtime.config)
    resp = web.Response(body=body, content_type="application/json", charset="utf-8")
    compress_large(resp)
    return resp


_RELAYED_NOTE = {False: "", True: " (relayed by another worker)"}


def _relayed(request: web.Request) -> bool:
    """True for an admin call another worker relayed here (applied here only, not relayed on)."""
    peers = request.app[GATEWAY].peers
    return peers is not None and peers.relayed(request)


async def _relay(
    request: web.Request, body: bytes, content_type: str | None, agree: Callable[[PeerAnswer], bool]
) -> list[PeerAnswer]:
    """An admin call this worker has applied, applied by every other worker too (``--workers``).

    Raises a 500 ``worker_failed`` naming each worker that did not answer 200 or whose
    answer does not ``agree`` with this worker's.
    """
    peers = request.app[GATEWAY].peers
    if peers is None:
        return []
    answers = await peers.relay(request, request[REQUEST_ID], body, content_type)
    failed = [a for a in answers if a.status != 200 or not agree(a)]
    if failed:
        raise GatewayError(
            f"worker {peers.pid} applied it, but {len(failed)} other worker(s) did not; see details",
            code="worker_failed",
            details=[{"pid": a.pid, "status": a.status, "error": a.body.get("error")} for a in failed],
        )
    return answers


async def _admin_cache_purge(request: web.Request) -> web.Response:
    runtime = request.app[GATEWAY].runtime
    who = runtime.access.require_admin(request)
    relayed = _relayed(request)
    result = await purge_request(request, runtime.proxy.cache, runtime.config)
    log.info("cache purge by admin key %r%s: %s", who, _RELAYED_NOTE[relayed], json.dumps(result))
    others: list[PeerAnswer] = []
    if not relayed:
        body, ctype = await request.read(), request.headers.get("Content-Type")
        others = await _relay(request, body, ctype, lambda a: isinstance(a.body.get("deleted"), int))
    result["deleted"] += sum(a.body["deleted"] for a in others)
    result["workers"] = 1 + len(others)
    return web.json_response(result)


async def _admin_reload(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    who = gw.runtime.access.require_admin(request)
    relayed = _relayed(request)
    text = None
    if relayed:
        # the text the worker that took the call accepted, not the file again; unless a newer one
        # was accepted since (this call waited in the socket's backlog while the worker started)
        text = await request.text()
        if gw.peers is not None and gw.peers.last_good() != text:
            raise Conflict("a newer routes text was accepted since this reload was relayed", code="stale_relay")
    try:
        cfg = gw.reload(text=text)
    except ConfigError as exc:
        raise Unprocessable(
            f"{len(exc.problems)} problem(s) in {gw.runtime.config.path}; still serving the previous config",
            code="invalid_config",
            details=[str(p) for p in exc.problems],
        ) from None
    log.info("config reloaded by admin key %r%s", who, _RELAYED_NOTE[relayed])
    others: list[PeerAnswer] = []
    if not relayed:

        def agree(answer: PeerAnswer) -> bool:
            return answer.body.get("digest") == cfg.digest  # every worker on the same text

        others = await _relay(request, cfg.source.encode(), "application/yaml", agree)
    return web.json_response(
        {"status": "reloaded", "digest": cfg.digest, "routes": len(cfg.routes), "workers": 1 + len(others)}
    )


def build_app(
    config: Config | str | Path,
    *,
    registry: CollectorRegistry | None = None,
    env: Mapping[str, str] | None = None,
    watch: float | None = None,
    probes: bool = False,
    host: str | None = None,
) -> web.Application:
    """The gateway app.  Raises ConfigError if ``config`` is a path to an invalid file.

    ``probes``: run the routes' contract probes in the background (``gateway serve`` does).

    ``host``: the address ``gateway serve`` binds, which clients may name in ``Host``.

    ``watch``: poll the routes file every that many seconds and reload it when it changes.
    """
    cfg = config if isinstance(config, Config) else load_config(config, env=env)
    gateway = Gateway(cfg, registry=registry, env=env, host=host)
    # the body limit is enforced per route by the proxy; aiohttp's own cap is the outer guard
    app = web.Application(
        middlewares=[_frame],
        client_max_size=max(cfg.server.max_body_bytes * 2, 1 << 20),
        # aiohttp closes a connection whose request headers are not complete (or that sits idle)
        # this long after connecting or answering: slowloris clients do not hold sockets forever
        handler_args={
            "keepalive_timeout": cfg.server.header_timeout,
            # the parser's own limits are the outer guard (its errors are plain text); the
            # tighter limits below, checked in _frame, answer in JSON like every other error
            "max_line_size": _PARSER_LIMIT,
            "max_field_size": _PARSER_LIMIT,
            "max_headers": 1024,
            # what the parser rejects is one info line (rate-limited), never a traceback
            "logger": gateway.rejects,
        },
    )
    app[GATEWAY] = gateway
    app.on_response_prepare.append(_downstream_headers)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/admin/reload", _admin_reload)
    app.router.add_post("/admin/cache/purge", _admin_cache_purge)
    app.router.add_get("/openapi.json", _openapi)
    app.router.add_get("/status", _status)
    if probes:
        app.cleanup_ctx.append(_background_probes)
    if watch is not None:
        from gateway.reload import watch_routes

        app.cleanup_ctx.append(watch_routes(gateway, watch))
    app.router.add_route("*", "/{tail:.*}", _dispatch)

    async def _close(_app: web.Application) -> None:
        gateway.rejects.flush()  # the count of rejects not yet summarized
        await gateway.close()

    app.on_cleanup.append(_close)
    return app
