"""Requests/s and latency: direct upstream, nginx proxy_pass / proxy_cache, the gateway.

Every case is checked for the right answer before it is measured (a fast 404 is no
result), rounds are interleaved so drift hits every case alike, and the median of
the rounds is reported.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import nginx
from bench.procs import Procs, free_port, start_gateway, wait_http
from bench.wrk import Load, Sample, run

ROUTES = Path(__file__).with_name("routes.yaml")
PASS_PATH = "/v1/bench/notebook"
CACHE_PATH = "/v1/bench/notebook-cached"

#: appended to bench/routes.yaml when the gateway's config accepts it (the cache issue)
CACHE_ROUTE = """
  bench_cached:
    description: The same page, answered from the gateway's cache after the first call.
    stable: GET /v1/bench/notebook-cached
    upstream: static
    auth: none
    cache: {ttl: 10m}
    targets:
      - GET /api/notebook.json
"""


class CacheMissing(RuntimeError):
    """The config took the cache route but the gateway did not answer from a cache."""


@dataclass
class Case:
    name: str
    url: str
    check: Callable[[], None]
    #: the server's process (its children included) whose CPU time per request is reported
    pid: int | None = None
    runs: list[Sample] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        if not self.runs:
            return {"url": self.url, "runs": []}
        return {
            "url": self.url,
            "rps": round(statistics.median(s.rps for s in self.runs), 1),
            "p50_ms": round(statistics.median(s.p50_ms for s in self.runs), 4),
            "p99_ms": round(statistics.median(s.p99_ms for s in self.runs), 4),
            "errors": sum(s.errors for s in self.runs),
            **({"cpu_us_per_request": round(statistics.median(self.cpu_us), 1)} if self.cpu_us else {}),
            "runs": [s.as_dict() for s in self.runs],
        }


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children (nginx and gateway workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _measure(case: Case, load: Load) -> None:
    before = tree_cpu(case.pid) if case.pid else 0.0
    sample = run(case.url, load)
    case.runs.append(sample)
    if case.pid and sample.requests:
        case.cpu_us.append(1e6 * (tree_cpu(case.pid) - before) / sample.requests)


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, dict(resp.headers.items()), resp.read()


def _expect_page(url: str, page: bytes) -> Callable[[], None]:
    def check() -> None:
        status, _, body = _get(url)
        if status != 200 or body != page:
            raise RuntimeError(f"{url} answered {status} with {len(body)} bytes, not the {len(page)}-byte page")

    return check


def _nginx_cache_check(url: str, page: bytes) -> Callable[[], None]:
    def check() -> None:
        _get(url)
        for _ in range(20):  # nginx may still be moving the first fill into its cache (2 workers)
            status, headers, body = _get(url)
            if status == 200 and body == page and headers.get("X-Cache") == "HIT":
                return
            time.sleep(0.05)
        raise RuntimeError(f"nginx proxy_cache did not hit at {url}: {status} X-Cache={headers.get('X-Cache')}")

    return check


def _upstream_calls(base: str, route: str) -> float:
    """Upstream calls the gateway has made for ``route``, read from its own /metrics."""
    _, _, body = _get(base + "/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("gateway_upstream_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _gateway_cache_check(base: str, page: bytes) -> Callable[[], None]:
    def check() -> None:
        url = base + CACHE_PATH
        _expect_page(url, page)()
        before = _upstream_calls(base, "bench_cached")
        for _ in range(20):
            _expect_page(url, page)()
        made = _upstream_calls(base, "bench_cached") - before
        if made >= 20:
            raise CacheMissing(f"the gateway's cache did not hit: 20 requests made {made:.0f} upstream calls")

    return check


def cache_supported(yaml_text: str, env: dict[str, str]) -> str | None:
    """None if ``yaml_text`` (with the cache route) loads; else why the cache case is missing."""
    from gateway.config import ConfigError, parse_config

    try:
        parse_config(yaml_text, "bench/routes.yaml", env)
    except ConfigError as exc:
        return "; ".join(str(p) for p in exc.problems)
    except Exception as exc:  # a config module mid-change must not sink the other cases
        return f"the config loader failed: {type(exc).__name__}: {exc}"
    return None


def write_routes(path: Path, env: dict[str, str]) -> str | None:
    """The bench's routes file, with the cached route when this gateway takes it (else why not)."""
    text = ROUTES.read_text()
    missing = cache_supported(text + CACHE_ROUTE, env)
    path.write_text(text if missing else text + CACHE_ROUTE)
    return missing


def bench(
    procs: Procs, workdir: Path, load: Load, latency_load: Load, rounds: int, worker_counts: list[int]
) -> dict[str, Any]:
    page = nginx.page_json()
    upstream, up = nginx.start_upstream(procs, workdir)
    direct = upstream + nginx.UPSTREAM_PATH
    up_port = int(upstream.rsplit(":", 1)[1])

    cases: list[Case] = [Case("direct", direct, _expect_page(direct, page), up.pid)]
    for n in worker_counts:
        port = free_port()
        prefix = workdir / f"nginx-proxy-{n}"
        proc = procs.start(f"nginx-proxy-{n}", nginx.argv(prefix, nginx.proxy_conf(prefix, port, up_port, n)))
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/pass/notebook.json", proc=proc)
        cases.append(
            Case(
                f"nginx_proxy_pass_w{n}",
                base + "/pass/notebook.json",
                _expect_page(base + "/pass/notebook.json", page),
                proc.pid,
            )
        )
        cases.append(
            Case(
                f"nginx_proxy_cache_w{n}",
                base + "/cache/notebook.json",
                _nginx_cache_check(base + "/cache/notebook.json", page),
                proc.pid,
            )
        )

    # the ceilings: featureless aiohttp servers (bench/ceiling.py), as many workers as the gateway, and
    # the static one with only the basics every gateway request has (request id, metrics, access line)
    page_file = workdir / "page.json"
    page_file.write_bytes(page)
    for n in worker_counts:
        for mode in ("static", "basics", "proxy"):
            port = free_port()
            argv = [sys.executable, "-m", "bench.ceiling", mode, "--port", str(port), "--workers", str(n)]
            proc = procs.start(f"ceiling-{mode}-{n}", [*argv, "--page", str(page_file), "--upstream", direct])
            url = f"http://127.0.0.1:{port}/"
            wait_http(url, proc=proc)
            name = f"aiohttp_ceiling_{mode.replace('-', '_')}_w{n}"
            cases.append(Case(name, url, _expect_page(url, page), proc.pid))

    # the Python alternative a team would write: FastAPI on uvicorn forwarding with one httpx client
    for n in worker_counts:
        port = free_port()
        argv = [sys.executable, "-m", "bench.fastapi_proxy", "--port", str(port), "--workers", str(n)]
        proc = procs.start(f"fastapi-proxy-{n}", [*argv, "--upstream", direct])
        url = f"http://127.0.0.1:{port}/"
        wait_http(url, proc=proc)
        cases.append(Case(f"fastapi_httpx_proxy_w{n}", url, _expect_page(url, page), proc.pid))

    env = {"BENCH_UPSTREAM_URL": upstream}
    routes = workdir / "routes.yaml"
    cache_missing = write_routes(routes, env)
    for n in worker_counts:
        base, proc = start_gateway(procs, f"gateway-w{n}", routes, env, workers=n)  # logs and metrics stay on
        cases.append(Case(f"gateway_pass_w{n}", base + PASS_PATH, _expect_page(base + PASS_PATH, page), proc.pid))
        if cache_missing is None:
            cases.append(Case(f"gateway_cache_w{n}", base + CACHE_PATH, _gateway_cache_check(base, page), proc.pid))

    for case in list(cases):
        try:
            case.check()
        except CacheMissing as exc:
            cache_missing = str(exc)
            cases.remove(case)
    lat_names = [
        "direct",
        *(f"nginx_proxy_pass_w{n}" for n in worker_counts),
        # what aiohttp's own server and client add at one connection: the latency target's floor here
        *(f"aiohttp_ceiling_proxy_w{n}" for n in worker_counts),
        *(f"fastapi_httpx_proxy_w{n}" for n in worker_counts),
        *(f"gateway_pass_w{n}" for n in worker_counts),
    ]
    lat_names += [f"gateway_cache_w{n}" for n in worker_counts if cache_missing is None]
    lat_cases = [Case(c.name + "_c1", c.url, c.check, c.pid) for c in cases if c.name in lat_names]

    warm = Load(load.threads, load.connections, min(2, load.seconds))
    for case in cases:
        run(case.url, warm)
    for r in range(rounds):
        for case in cases:
            _measure(case, load)
            _progress(f"round {r + 1}/{rounds}", case)
        for case in lat_cases:
            _measure(case, latency_load)
            _progress(f"round {r + 1}/{rounds}", case)
    for case in cases:  # the same answers after the load as before it
        case.check()

    out = {c.name: c.summary() for c in [*cases, *lat_cases]}
    return {
        "cases": out,
        "cache": {"available": cache_missing is None, **({"missing_because": cache_missing} if cache_missing else {})},
        "page_bytes": len(page),
    }


def _progress(prefix: str, case: Case) -> None:
    s = case.runs[-1]
    print(
        f"  {prefix} {case.name:28s} {s.rps:10.0f} req/s  p50 {s.p50_ms:7.3f} ms  p99 {s.p99_ms:7.3f} ms"
        + (f"  {case.cpu_us[-1]:6.1f} us CPU/request" if case.cpu_us else "")
        + (f"  ERRORS {s.errors}" if s.errors else ""),
        flush=True,
    )
