"""``python -m bench.ceiling``: the fastest an aiohttp gateway could be here, for reference.

Two deliberately featureless servers on uvloop, forked into N workers sharing the port
(SO_REUSEPORT) like ``gateway serve --workers N``:

* ``static``: answers the page from memory (the ceiling for a cache hit);
* ``proxy``: fetches the page from the upstream with ``gateway.http1`` and returns the
  body (the ceiling for pass-through: no routing, validation, metrics or logs);
* ``proxy-aiohttp``: the same with one shared ``aiohttp.ClientSession`` (the "naive aiohttp
  proxy"), to show what the lean client is worth.

The gaps gateway → ceiling (what the gateway's features cost) and ceiling → nginx
(what aiohttp and Python cost) are reported separately.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import aiohttp
from aiohttp import web
from yarl import URL

from gateway import http1


def build(mode: str, upstream: str, page: bytes) -> web.Application:
    app = web.Application()
    if mode == "static":

        async def static(request: web.Request) -> web.Response:
            return web.Response(body=page, content_type="application/json")

        app.router.add_get("/", static)
        return app
    url = URL(upstream)
    if mode == "proxy-aiohttp":  # the same, on aiohttp's own client: what gateway.http1 replaced
        sessions: list[aiohttp.ClientSession] = []

        async def naive(request: web.Request) -> web.Response:
            if not sessions:
                sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)))
            async with sessions[0].get(url, headers={"Accept": "application/json"}) as r:
                body = await r.read()
            return web.Response(body=body, content_type="application/json")

        app.router.add_get("/", naive)
        return app
    pools: list[http1.Pool] = []
    head = http1.render("GET", url.raw_path_qs, url.host_port_subcomponent or "", {"Accept": "application/json"}, None)

    async def proxy(request: web.Request) -> web.Response:
        if not pools:
            pools.append(http1.Pool("http", url.raw_host or "", url.port or 80, limit=256))
        r = await pools[0].request(
            head, None, is_head=False, connect_timeout=5, read_timeout=30, total_timeout=60, max_body=1 << 24
        )
        return web.Response(body=r.body, content_type="application/json")

    app.router.add_get("/", proxy)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    p.add_argument("mode", choices=["static", "proxy", "proxy-aiohttp"])
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
    web.run_app(
        build(args.mode, args.upstream, page),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        reuse_port=args.workers > 1,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
