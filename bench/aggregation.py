"""``all=true`` over 10,000 PostHog-style items in pages of 100, 50 ms per upstream page.

Compared with a naive client that walks ``next`` one page at a time, and with the
floor: pages / allowed concurrency * latency (what any client limited to that many
requests in flight must wait).  Offset pagination lets the gateway fetch the pages
after the first concurrently; cursor pagination cannot (see ``NOTE``).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.collection import PATH, start_gateway, start_upstream
from bench.procs import Procs
from sandbox.posthog import SANDBOX_POSTHOG_KEY

ITEMS = 10_000
PAGE = 100
LATENCY_MS = 50.0
NOTE = (
    "cursor ('before'-style) pagination, as Observable's, cannot be parallelised: each page is asked "
    "with the last item of the previous one, so all=true there costs pages x latency, like the naive client"
)


async def _naive(upstream: str) -> tuple[float, int]:
    """A script without the gateway: GET the list, follow ``next`` until it is null."""
    started = time.perf_counter()
    n = 0
    url: str | None = f"{upstream}/api/projects/1/notebooks/?limit={PAGE}&offset=0"
    headers = {"Authorization": f"Bearer {SANDBOX_POSTHOG_KEY}"}
    async with aiohttp.ClientSession() as s:
        while url:
            async with s.get(url, headers=headers) as r:
                body = await r.json()
            n += len(body["results"])
            url = body["next"]
    return time.perf_counter() - started, n


async def _gateway(base: str, ndjson: bool) -> tuple[float, float, int]:
    """Wall time and time to the first byte of one all=true, and the item count."""
    headers = {"Accept": "application/x-ndjson"} if ndjson else {}
    started = time.perf_counter()
    async with aiohttp.ClientSession() as s, s.get(base + PATH.format(project=1) + "?all=true", headers=headers) as r:
        assert r.status == 200, await r.text()
        first = await r.content.readany()
        ttfb = time.perf_counter() - started
        rest = await r.read()
    elapsed = time.perf_counter() - started
    body = first + rest
    n = body.count(b"\n") if ndjson else len(json.loads(body)["items"])
    return elapsed, ttfb, n


def bench(procs: Procs, workdir: Path, runs: int = 3, concurrencies: tuple[int, ...] = (4, 8)) -> dict[str, Any]:
    upstream = start_upstream(procs, ITEMS, LATENCY_MS)
    pages = ITEMS // PAGE
    out: dict[str, Any] = {"items": ITEMS, "page_size": PAGE, "latency_ms": LATENCY_MS, "pages": pages, "note": NOTE}
    naive = [asyncio.run(_naive(upstream)) for _ in range(runs)]
    assert all(n == ITEMS for _, n in naive), naive
    out["naive_sequential_s"] = round(statistics.median(t for t, _ in naive), 3)
    lines = [
        f"aggregation: {ITEMS} items, pages of {PAGE}, {LATENCY_MS:.0f} ms per page ({pages} pages)",
        f"  naive sequential client        {out['naive_sequential_s']:7.3f} s",
    ]
    out["gateway"] = {}
    for c in concurrencies:
        base, _ = start_gateway(procs, workdir, upstream, c, f"gateway-agg-c{c}")
        asyncio.run(_gateway(base, False))  # warm-up
        json_runs = [asyncio.run(_gateway(base, False)) for _ in range(runs)]
        nd_runs = [asyncio.run(_gateway(base, True)) for _ in range(runs)]
        assert all(n == ITEMS for *_, n in json_runs + nd_runs), (json_runs, nd_runs)
        floor = pages / c * LATENCY_MS / 1000
        t_json = statistics.median(t for t, _, _ in json_runs)
        t_nd = statistics.median(t for t, _, _ in nd_runs)
        ttfb_nd = statistics.median(f for _, f, _ in nd_runs)
        out["gateway"][f"concurrency_{c}"] = {
            "floor_s": round(floor, 3),
            "json_s": round(t_json, 3),
            "ndjson_s": round(t_nd, 3),
            "ndjson_first_byte_s": round(ttfb_nd, 3),
            "json_over_floor": round(t_json / floor, 3),
            "speedup_over_naive": round(out["naive_sequential_s"] / t_json, 2),
        }
        lines.append(
            f"  gateway, concurrency {c:2d}        {t_json:7.3f} s  (floor {floor:.3f} s, {t_json / floor:.2f}x floor, "
            f"{out['naive_sequential_s'] / t_json:.1f}x faster than naive; NDJSON {t_nd:.3f} s, "
            f"first byte {ttfb_nd * 1000:.0f} ms)"
        )
        procs.stop_all_named(f"gateway-agg-c{c}")
    out["gateway_over_floor"] = out["gateway"][f"concurrency_{concurrencies[0]}"]["json_over_floor"]
    lines.append(f"  note: {NOTE}")
    out["lines"] = lines
    for line in lines:
        print(line, flush=True)
    return out
