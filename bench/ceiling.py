"""``python -m bench.ceiling``: the fastest an aiohttp gateway could be here, for reference.

Two deliberately featureless servers on uvloop, forked into N workers sharing the port
(SO_REUSEPORT) like ``gateway serve --workers N``:

* ``static``: answers the page from memory (the ceiling for a cache hit);
* ``basics``: ``static`` plus only what every gateway request must have, done the
  gateway's own way: a request id (``X-Request-ID``), the two request metrics
  (``gateway.fastmetrics``) and one JSON access line (``gateway.logs``).  What it costs
  over ``static`` is the least any request can cost over aiohttp; ``bench.breakdown``
  reports it beside a cache hit;
* ``proxy``: fetches the page from the upstream with one shared ``aiohttp.ClientSession``
  and returns the body (the "naive aiohttp proxy", the ceiling for pass-through: no
  routing, validation, metrics or logs).

The gaps gateway → ceiling (what the gateway's features cost) and ceiling → nginx
(what aiohttp and Python cost) are reported separately.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

from gateway import workers


def build(mode: str, upstream: str, page: bytes) -> web.Application:
    app = web.Application()
    if mode == "static":

        async def static(request: web.Request) -> web.Response:
            return web.Response(body=page, content_type="application/json")

        app.router.add_get("/", static)
        return app
    if mode == "basics":
        app.router.add_get("/", _basics(page))
        return app
    url = URL(upstream)
    sessions: list[aiohttp.ClientSession] = []

    async def naive(request: web.Request) -> web.Response:
        if not sessions:
            sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)))
        async with sessions[0].get(url, headers={"Accept": "application/json"}) as r:
            body = await r.read()
        return web.Response(body=body, content_type="application/json")

    app.router.add_get("/", naive)
    return app


def _basics(page: bytes) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The static page with a request id, the two request metrics and the access line, as the gateway makes them."""
    from prometheus_client import CollectorRegistry

    from gateway import logs
    from gateway.metrics import Metrics
    from gateway.server.framing import new_request_id
    from gateway.trace import RequestTrace

    logs.setup("info")
    metrics = Metrics(CollectorRegistry())
    clock = time.perf_counter

    async def basics(request: web.Request) -> web.Response:
        started = clock()
        rid = new_request_id()
        resp = web.Response(body=page, content_type="application/json", headers={"X-Request-ID": rid})
        elapsed = clock() - started
        method = request.method
        metrics.requests.labels("basics", method, "2xx").inc()
        metrics.request_seconds.labels("basics", method).observe(elapsed)
        lines = logs.access_lines()
        assert lines is not None
        lines.write_request(rid, method, request.path[:256], "basics", 200, round(elapsed * 1000, 3), RequestTrace())
        return resp

    return basics


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    p.add_argument("mode", choices=["static", "basics", "proxy"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--upstream", default="", help="the page's URL (proxy mode)")
    p.add_argument("--page", required=True, help="file with the page (static mode)")
    args = p.parse_args(argv)
    page = Path(args.page).read_bytes()
    for _ in range(args.workers - 1):
        if os.fork() == 0:
            break
    import uvloop

    uvloop.install()
    app = build(args.mode, args.upstream, page)
    workers.settle_gc()  # the process tuning gateway serve does too
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        reuse_port=args.workers > 1,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
