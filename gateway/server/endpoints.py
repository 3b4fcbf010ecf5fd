"""The gateway's own read-only endpoints: /healthz, /readyz, /metrics, /status, /openapi.json."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import status, workers
from gateway.errors import Unauthorized
from gateway.expiry import expiries
from gateway.pipeline.conventions import compress_large
from gateway.server.state import GATEWAY


async def healthz(request: web.Request, rid: str) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request, rid: str) -> web.Response:
    cfg = request.app[GATEWAY].runtime.config
    return web.json_response(
        # pid: which worker answered, with gateway serve --workers N
        {"status": "ready", "config": cfg.path, "digest": cfg.digest, "routes": len(cfg.routes), "pid": os.getpid()}
    )


async def metrics(request: web.Request, rid: str) -> web.Response:
    registry = request.app[GATEWAY].registry
    # gateway serve --workers N: every worker's values, whichever worker answers
    body = workers.scrape(registry) if workers.multiprocess_enabled() else generate_latest(registry)
    resp = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
    compress_large(request, resp)  # as Accept-Encoding prefers (gateway.pipeline.conventions)
    return resp


async def status_page(request: web.Request, rid: str) -> web.Response:
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
        shared=gw.shared.describe(),
        probed_by=(gw.prober.ran_by, gw.prober.instance),
    )
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=status.HEADERS)


async def background_probes(app: web.Application) -> AsyncIterator[None]:
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


async def openapi(request: web.Request, rid: str) -> web.Response:
    gw = request.app[GATEWAY]
    body = gw.openapi.get(gw.runtime.config)
    resp = web.Response(body=body, content_type="application/json", charset="utf-8")
    compress_large(request, resp)
    return resp
