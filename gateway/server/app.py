"""The aiohttp application: the gateway's own endpoints plus one catch-all dispatcher for stable routes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.config import Config, load_config
from gateway.reload import FileWatcher
from gateway.server import admin, endpoints, framing, stable
from gateway.server.state import GATEWAY, Gateway

log = logging.getLogger("gateway.reload")


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
        client_max_size=max(cfg.server.max_body_bytes * 2, 1 << 20),
        # aiohttp closes a connection whose request headers are not complete (or that sits idle)
        # this long after connecting or answering: slowloris clients do not hold sockets forever
        handler_args={
            "keepalive_timeout": cfg.server.header_timeout,
            # the parser's own limits are the outer guard (its errors are plain text); the
            # tighter limits below, checked in _frame, answer in JSON like every other error
            "max_line_size": framing.PARSER_LIMIT,
            "max_field_size": framing.PARSER_LIMIT,
            "max_headers": 1024,
            # what the parser rejects is one info line (rate-limited), never a traceback
            "logger": gateway.rejects,
        },
    )
    app[GATEWAY] = gateway
    # no aiohttp middleware: each handler is framed (request id, checks, JSON errors) by gateway.server.framing
    own = functools.partial(framing.own, gateway)
    app.router.add_get("/healthz", own(endpoints.healthz))
    app.router.add_get("/readyz", own(endpoints.readyz))
    app.router.add_get("/metrics", own(endpoints.metrics))
    app.router.add_post("/admin/reload", own(admin.reload))
    app.router.add_post("/admin/cache/purge", own(admin.cache_purge))
    app.router.add_get("/openapi.json", own(endpoints.openapi))
    app.router.add_get("/status", own(endpoints.status_page))
    if probes:
        app.cleanup_ctx.append(endpoints.background_probes)
    if watch is not None:
        app.cleanup_ctx.append(watch_routes(gateway, watch))
    # every other path: matched without a regular expression, after the own paths (aiohttp's index);
    # an own path with another method is told what it allows, as aiohttp registered it just above
    registered: dict[str, set[str]] = {}
    for route in app.router.routes():
        registered.setdefault(route.resource.canonical if route.resource else "", set()).add(route.method)
    own_allow = {path: ", ".join(sorted(methods)) for path, methods in registered.items()}
    app.router.register_resource(stable.StableResource(framing.stable(gateway, stable.dispatcher(gateway), own_allow)))

    async def _start_shared(_app: web.Application) -> None:
        await gateway.shared.start()  # the shared-state heartbeat, for as long as the app runs

    app.on_startup.append(_start_shared)

    async def _close(_app: web.Application) -> None:
        gateway.rejects.flush()  # the count of rejects not yet summarized
        await gateway.close()

    app.on_cleanup.append(_close)
    return app


def watch_routes(gateway: Gateway, interval: float) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp ``cleanup_ctx`` that watches the served routes file while the app runs.

    Here rather than in gateway.reload, which so needs no Gateway (no reload ↔ server cycle).
    """

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        path = gateway.runtime.config.path
        watcher = FileWatcher(
            path,
            lambda text: gateway.reload(path, text=text),
            lambda: gateway.runtime.config.digest,
            interval=interval,
            failing=lambda: gateway.refused is not None,
            reread=lambda: gateway.reload(path),
        )
        task = asyncio.create_task(watcher.run(), name="routegate-watch")
        log.info("watching %s for changes every %gs", path, interval)
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx
