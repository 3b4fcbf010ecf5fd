"""``python -m bench.ceiling``: the fastest an aiohttp gateway could be here, for reference.

Two deliberately featureless servers on uvloop, forked into N workers sharing the port
(SO_REUSEPORT) like ``gateway serve --workers N``:

* ``static``: answers the page from memory (the ceiling for a cache hit);
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ceiling", description=__doc__)
    p.add_argument("mode", choices=["static", "proxy"])
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
