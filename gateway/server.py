"""The aiohttp application: the gateway's own endpoints plus one catch-all dispatcher.

aiohttp's router is frozen once the app starts, but routes.yaml is hot-reloaded, so
stable routes are matched by ``gateway.routing`` against whatever ``Runtime`` is
current.  A request takes the runtime once, at its start, and keeps it to the end:
a reload never changes the config under an in-flight request.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.access import Access
from gateway.auth import Credentials
from gateway.config import Config, ConfigError, load_config
from gateway.errors import GatewayError, PayloadTooLarge, Unprocessable
from gateway.metrics import NO_ROUTE, Metrics, status_class
from gateway.proxy import Proxy, dumps
from gateway.routing import Router
from gateway.upstream import UpstreamClient

log = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_OWN = frozenset({"/healthz", "/readyz", "/metrics", "/admin/reload"})


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything built from one config; swapped whole on reload."""

    config: Config
    router: Router
    proxy: Proxy
    access: Access


class Gateway:
    """Process-wide state: the current runtime, the client pool, credentials, metrics."""

    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.client = UpstreamClient()
        #: where ${VAR}s and secrets are read (os.environ unless a test gives its own)
        self.env = env
        self.credentials = Credentials(env)
        self.runtime = self._build(config)
        self.metrics.reloads.labels("success").inc()

    def _build(self, config: Config) -> Runtime:
        self.metrics.config_info.info({"digest": config.digest, "path": config.path})
        self.metrics.config_loaded.set_to_current_time()
        for route in config.routes:
            self.metrics.route_up.labels(route.name)  # export every route from the start
        return Runtime(
            config,
            Router(config.routes),
            Proxy(config, self.client, self.credentials, self.metrics),
            Access(config.access, self.credentials),
        )

    def reload(self, path: str | Path | None = None) -> Config:
        """Load and validate the file completely; only then swap.  Raises ConfigError."""
        target = path or self.runtime.config.path
        try:
            config = load_config(target, env=self.env)
        except ConfigError as exc:
            self.metrics.reloads.labels("failure").inc()
            log.error("config reload failed, still serving %s: %s", self.runtime.config.digest, exc)
            raise
        self.runtime = self._build(config)
        self.metrics.reloads.labels("success").inc()
        log.info("config reloaded from %s (%s, %d routes)", target, config.digest, len(config.routes))
        return config

    async def close(self) -> None:
        await self.client.close()


GATEWAY = web.AppKey("gateway", Gateway)
REQUEST_ID = web.RequestKey("request_id", str)
ROUTE = web.RequestKey("route", str)
CLIENT = web.RequestKey("client", str)
ERROR = web.RequestKey("error", GatewayError)


def error_response(exc: GatewayError) -> web.Response:
    return web.Response(
        status=exc.status,
        body=dumps(exc.body()),
        content_type="application/json",
        charset="utf-8",
        headers=exc.headers,
    )


@web.middleware
async def _frame(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, JSON errors, stable-side metrics and the access log, for every request."""
    incoming = request.headers.get("X-Request-ID", "")
    rid = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    try:
        resp = await handler(request)
    except GatewayError as exc:
        if exc.route is None:
            exc.route = request.get(ROUTE)
        request[ERROR] = exc
        resp = error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        resp = error_response(PayloadTooLarge("the body is too large"))
    except web.HTTPException as exc:
        err = GatewayError(exc.reason, code=exc.reason.lower().replace(" ", "_"))
        err.status = exc.status
        resp = error_response(err)
    except Exception:
        log.exception("internal error handling %s %s (request %s)", request.method, request.path, rid)
        resp = error_response(GatewayError("internal gateway error; see the gateway log", route=request.get(ROUTE)))
    resp.headers["X-Request-ID"] = rid
    if request.path not in _OWN:
        gw = request.app[GATEWAY]
        route = request.get(ROUTE) or NO_ROUTE
        elapsed = time.perf_counter() - started
        gw.metrics.requests.labels(route, request.method, status_class(resp.status)).inc()
        gw.metrics.request_seconds.labels(route, request.method).observe(elapsed)
        if access_log.isEnabledFor(logging.INFO):
            failure = request.get(ERROR)
            access_log.info(
                json.dumps(
                    {
                        "request_id": rid,
                        "method": request.method,
                        "route": route,
                        "client": request.get(CLIENT),
                        "status": resp.status,
                        "duration_ms": round(elapsed * 1000, 3),
                        **({"error": failure.code} if failure is not None else {}),
                    }
                )
            )
    return resp


async def _dispatch(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    runtime = gw.runtime  # pinned for the whole request
    match = runtime.router.match(request.method, request.raw_path)
    request[ROUTE] = match.route.name
    request[CLIENT] = runtime.access.client_for(request, match.route)
    return await runtime.proxy.handle(request, match, request[REQUEST_ID])


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    cfg = request.app[GATEWAY].runtime.config
    return web.json_response({"status": "ready", "config": cfg.path, "digest": cfg.digest, "routes": len(cfg.routes)})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[GATEWAY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _admin_reload(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    who = gw.runtime.access.require_admin(request)
    try:
        cfg = gw.reload()
    except ConfigError as exc:
        raise Unprocessable(
            f"{len(exc.problems)} problem(s) in {gw.runtime.config.path}; still serving the previous config",
            code="invalid_config",
            details=[str(p) for p in exc.problems],
        ) from None
    log.info("config reloaded by admin key %r", who)
    return web.json_response({"status": "reloaded", "digest": cfg.digest, "routes": len(cfg.routes)})


def build_app(
    config: Config | str | Path,
    *,
    registry: CollectorRegistry | None = None,
    env: Mapping[str, str] | None = None,
) -> web.Application:
    """The gateway app.  Raises ConfigError if ``config`` is a path to an invalid file."""
    cfg = config if isinstance(config, Config) else load_config(config, env=env)
    gateway = Gateway(cfg, registry=registry, env=env)
    # the body limit is enforced per route by the proxy; aiohttp's own cap is the outer guard
    app = web.Application(middlewares=[_frame], client_max_size=max(cfg.server.max_body_bytes * 2, 1 << 20))
    app[GATEWAY] = gateway
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/admin/reload", _admin_reload)
    app.router.add_route("*", "/{tail:.*}", _dispatch)

    async def _close(_app: web.Application) -> None:
        await gateway.close()

    app.on_cleanup.append(_close)
    return app
