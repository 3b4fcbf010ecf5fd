"""``python -m bench.breakdown``: where a gateway request's CPU goes, by taking parts away.

The same gateway (one worker, uvloop, metrics and access log on, the bench's
routes) is served in variants that differ in one part, and each is loaded with
wrk; the differences in CPU µs per request are the parts' costs:

* ``aiohttp``: a bare aiohttp server answering the page from memory (no gateway);
* ``aiohttp-basics``: the same plus only a request id, the two request metrics and the
  access line, made as the gateway makes them (``bench.ceiling basics``): the least any
  gateway request can cost;
* ``cache-hit``: the gateway answering the cached route from its cache;
* ``no-upstream``: the pass-through route with the upstream exchange replaced by
  the page in memory (routing, keys, limits, mapping, validation, resilience,
  metrics, the access line: everything else);
* ``pass-through``: the real thing, through aiohttp's ``ClientSession`` to nginx;
* ``naive-proxy``: ``bench.ceiling proxy``, the same exchange in a featureless app.

Rounds are interleaved and the median is printed, because a shared VM's CPU
speed drifts by ±20% from minute to minute.

``--instructions`` counts instead of timing: each variant runs once under
valgrind's callgrind, and the instructions it executes per request are printed.
That count hardly moves between runs (±1%), so it can tell a change of a few
percent that CPU time on this VM cannot; it does not see cache misses or branch
mispredictions, so compare it with the CPU figures, not instead of them.

``--ablate PART`` (or ``all``) measures the chosen variants again with one part of the
gateway taken out each time (``bench.ablate``) and prints what each part cost.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench import ablate, http, nginx
from bench.procs import Procs, free_port, wait_http
from bench.wrk import Load, Sample, run

VARIANTS = ("aiohttp", "aiohttp-basics", "cache-hit", "no-upstream", "pass-through", "naive-proxy")


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
    ablate.apply(os.environ.get(ablate.ENV, ""))
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
    p.add_argument(
        "--instructions", action="store_true", help="count instructions per request under callgrind (needs valgrind)"
    )
    p.add_argument(
        "--only",
        action="append",
        choices=VARIANTS,
        help="run only this variant (repeatable); the floors hardly move, so a change can be measured on its own",
    )
    p.add_argument(
        "--ablate",
        action="append",
        choices=[*ablate.PARTS, "all"],
        help="also measure with this part of the gateway taken out (repeatable; all: each in turn) and print its cost",
    )
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
            setup = Setup(procs, workdir, upstream, routes, page, env)
            variants = tuple(v for v in VARIANTS if not args.only or v in args.only)
            cost = instructions(setup, args, variants) if args.instructions else cpu_time(setup, args, variants)
            unit = "k instructions" if args.instructions else "CPU µs"
            parts = [
                ("a request id, 2 metrics, the access line", "aiohttp-basics", "aiohttp"),
                ("a cache hit's gateway work", "cache-hit", "aiohttp"),
                ("pass-through without the exchange", "no-upstream", "aiohttp"),
                ("the upstream exchange, in the gateway", "pass-through", "no-upstream"),
                ("the same exchange, featureless", "naive-proxy", "aiohttp"),
            ]
            print(f"so, roughly ({unit} per request):")
            for label, more, less in parts:
                if more not in cost or less not in cost:
                    continue
                print(f"  {label:38s} {cost[more] - cost[less]:7.1f}  ({more} - {less})")
            if args.ablate:
                ablated(setup, args, variants, cost, unit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def ablated(
    setup: Setup, args: argparse.Namespace, variants: tuple[str, ...], cost: dict[str, float], unit: str
) -> None:
    """Each chosen part taken out in turn (``bench.ablate``): what the gateway variants cost without it."""
    names = list(ablate.PARTS) if "all" in args.ablate else list(dict.fromkeys(args.ablate))
    gateway_variants = tuple(v for v in variants if v in ("cache-hit", "no-upstream", "pass-through"))
    measure = instructions if args.instructions else cpu_time
    for name in names:
        print(f"without {name} ({ablate.PARTS[name][0]}):")
        without = measure(replace(setup, env={**setup.env, ablate.ENV: name}), args, gateway_variants)
        for v in gateway_variants:
            print(f"  {name} costs {v} {cost[v] - without[v]:7.1f} {unit}")


@dataclass(frozen=True)
class Setup:
    """What every variant is started with: the static upstream, the bench's routes and page."""

    procs: Procs
    workdir: Path
    upstream: str
    routes: Path
    page: Path
    env: dict[str, str]

    def start(self, variant: str, wrap: list[str]) -> tuple[subprocess.Popen[bytes], str]:
        """One variant's server, ``wrap`` (a valgrind command line, say) in front: (process, URL to load)."""
        port = free_port()
        page = str(self.page)
        if variant in ("aiohttp", "aiohttp-basics"):
            mode = "static" if variant == "aiohttp" else "basics"
            argv = ["-m", "bench.ceiling", mode, "--page", page, "--port", str(port)]
        elif variant == "naive-proxy":
            argv = ["-m", "bench.ceiling", "proxy", "--page", page, "--port", str(port)]
            argv += ["--upstream", self.upstream + nginx.UPSTREAM_PATH]
        else:
            argv = ["-m", "bench.breakdown", "--serve", variant, str(self.routes), str(port), page]
        proc = self.procs.start(variant, [*wrap, sys.executable, *argv], self.env)
        paths = {"cache-hit": http.CACHE_PATH, "aiohttp": "/", "aiohttp-basics": "/", "naive-proxy": "/"}
        path = paths.get(variant, http.PASS_PATH)
        url = f"http://127.0.0.1:{port}{path}"
        wait_http(url, timeout=300 if wrap else 30, proc=proc)
        return proc, url


def _checked(variant: str, sample: Sample) -> Sample:
    if sample.errors or not sample.requests:
        raise RuntimeError(f"{variant}: {sample.errors} errors in {sample.requests} requests")
    return sample


def cpu_time(setup: Setup, args: argparse.Namespace, variants: tuple[str, ...]) -> dict[str, float]:
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    load = Load(2, args.connections, args.seconds)
    for _ in range(args.rounds):
        for variant in variants:
            proc, url = setup.start(variant, [])
            run(url, Load(2, args.connections, 1))  # warm-up (and the cache fill)
            before = http.tree_cpu(proc.pid)
            sample = _checked(variant, run(url, load))
            cpu[variant].append(1e6 * (http.tree_cpu(proc.pid) - before) / sample.requests)
            setup.procs.stop(proc)
    med = {v: statistics.median(xs) for v, xs in cpu.items()}
    print(f"CPU µs per request, median of {args.rounds} rounds (wrk -t2 -c{args.connections}):")
    for v in variants:
        print(f"  {v:14s} {med[v]:7.1f}   ({', '.join(f'{x:.0f}' for x in cpu[v])})")
    return med


def instructions(setup: Setup, args: argparse.Namespace, variants: tuple[str, ...]) -> dict[str, float]:
    """Instructions per request under callgrind: counters zeroed after the warm-up, dumped after the load."""
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("--instructions needs valgrind (Debian: apt-get install valgrind)")
    connections = min(args.connections, 8)  # under valgrind the server is ~50x slower: keep wrk's timeouts away
    out: dict[str, float] = {}
    print(f"thousands of instructions per request, under callgrind (wrk -t1 -c{connections}):")
    for variant in variants:
        stats = setup.workdir / f"callgrind-{variant}.out"
        wrap = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={stats}"]
        proc, url = setup.start(variant, wrap)
        run(url, Load(1, connections, 3))  # warm-up (and the cache fill)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        sample = _checked(variant, run(url, Load(1, connections, args.seconds)))
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
        setup.procs.stop(proc)
        dump = stats.with_name(stats.name + ".1")  # the -d dump; the exit dump is the bare name
        found = re.search(r"^(?:summary|totals):\s*(\d+)", dump.read_text(errors="replace"), re.MULTILINE)
        if found is None:
            raise RuntimeError(f"{variant}: no instruction count in {dump}")
        out[variant] = int(found.group(1)) / sample.requests / 1000
        print(f"  {variant:14s} {out[variant]:7.1f}   ({sample.requests} requests)")
    return out


if __name__ == "__main__":
    sys.exit(main())
