"""``python -m bench.breakdown``: where a gateway request's CPU goes, by taking parts away.

The same gateway (one worker, uvloop, metrics and access log on, the bench's
routes) is served in variants that differ in one part, and each is loaded with
wrk; the differences in CPU µs per request are the parts' costs:

* ``aiohttp``: a bare aiohttp server answering the page from memory (no gateway);
* ``cache-hit``: the gateway answering the cached route from its cache;
* ``no-upstream``: the pass-through route with the upstream exchange replaced by
  the page in memory (routing, keys, limits, mapping, validation, resilience,
  metrics, the access line: everything else);
* ``pass-through``: the real thing, through aiohttp's ``ClientSession`` to nginx;
* ``naive-proxy``: ``bench.ceiling proxy``, the same exchange in a featureless app.

Rounds are interleaved and the median is printed, because a shared VM's CPU
speed drifts by ±20% from minute to minute.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import http, nginx
from bench.procs import Procs, free_port, wait_http
from bench.wrk import Load, run

VARIANTS = ("aiohttp", "cache-hit", "no-upstream", "pass-through", "naive-proxy")


def serve(variant: str, routes: Path, port: int, page: Path) -> None:
    """The gateway in one process, with the upstream exchange stubbed out for ``no-upstream``."""
    import uvloop
    from aiohttp import web
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    from gateway import logs, workers
    from gateway.server import build_app
    from gateway.upstream import UpstreamClient, UpstreamResponse

    logs.setup("info")
    if variant == "no-upstream":
        body = page.read_bytes()
        headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json", "Content-Length": str(len(body))}))

        async def send(self: UpstreamClient, upstream: Any, *args: Any, **kwargs: Any) -> UpstreamResponse:
            return UpstreamResponse(200, headers, body, URL(str(upstream.base_url)), None, 0.0)

        UpstreamClient.send = send  # type: ignore[method-assign]
    uvloop.install()
    app = build_app(routes)
    workers.settle_gc()  # as gateway serve does
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--serve", nargs=4, metavar=("VARIANT", "ROUTES", "PORT", "PAGE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        variant, routes, port, page = args.serve
        serve(variant, Path(routes), int(port), Path(page))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="routegate-breakdown-"))
    try:
        with Procs(workdir) as procs:
            upstream, _ = nginx.start_upstream(procs, workdir)
            page = workdir / "page.json"
            page.write_bytes(nginx.page_json())
            routes = workdir / "routes.yaml"
            env = {"BENCH_UPSTREAM_URL": upstream}
            missing = http.write_routes(routes, env)
            if missing:
                raise RuntimeError(f"the gateway does not take the bench's cached route: {missing}")
            cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
            load = Load(2, args.connections, args.seconds)
            for _ in range(args.rounds):
                for variant in VARIANTS:
                    port = free_port()
                    if variant == "aiohttp":
                        argv_ = ["-m", "bench.ceiling", "static", "--page", str(page)]
                    elif variant == "naive-proxy":
                        argv_ = ["-m", "bench.ceiling", "proxy", "--page", str(page)]
                        argv_ += ["--upstream", upstream + nginx.UPSTREAM_PATH]
                    else:
                        argv_ = ["-m", "bench.breakdown", "--serve", variant, str(routes), str(port), str(page)]
                    if variant in ("aiohttp", "naive-proxy"):
                        argv_ += ["--port", str(port)]
                    proc = procs.start(variant, [sys.executable, *argv_], env)
                    path = {"cache-hit": http.CACHE_PATH, "aiohttp": "/", "naive-proxy": "/"}.get(
                        variant, http.PASS_PATH
                    )
                    url = f"http://127.0.0.1:{port}{path}"
                    wait_http(url, proc=proc)
                    run(url, Load(2, args.connections, 1))  # warm-up (and the cache fill)
                    before = http.tree_cpu(proc.pid)
                    sample = run(url, load)
                    if sample.errors or not sample.requests:
                        raise RuntimeError(f"{variant}: {sample.errors} errors in {sample.requests} requests")
                    cpu[variant].append(1e6 * (http.tree_cpu(proc.pid) - before) / sample.requests)
                    procs.stop(proc)
            med = {v: statistics.median(xs) for v, xs in cpu.items()}
            print(f"CPU µs per request, median of {args.rounds} rounds (wrk -t2 -c{args.connections}):")
            for v in VARIANTS:
                print(f"  {v:14s} {med[v]:7.1f}   ({', '.join(f'{x:.0f}' for x in cpu[v])})")
            parts = [
                ("a cache hit's gateway work", "cache-hit", "aiohttp"),
                ("pass-through without the exchange", "no-upstream", "aiohttp"),
                ("the upstream exchange, in the gateway", "pass-through", "no-upstream"),
                ("the same exchange, featureless", "naive-proxy", "aiohttp"),
            ]
            print("so, roughly:")
            for label, more, less in parts:
                print(f"  {label:38s} {med[more] - med[less]:7.1f}  ({more} - {less})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
