"""Peak RSS of a gateway serving ``all=true`` over 10,000 and 100,000 items, as JSON and as NDJSON.

Each case gets a fresh gateway process (peak RSS is a high-water mark), warmed up with
a one-item page first; the client reads and checks every item.  As JSON the gateway
must hold the whole collection to build one document; as NDJSON it writes each page
as it comes, so its memory should not grow with the collection.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.collection import PATH, start_gateway, start_upstream
from bench.procs import Procs

SIZES = {10_000: 2, 100_000: 1}  # items → sandbox project holding them


def _rss(pid: int) -> dict[str, float]:
    """Current and peak resident set size in MiB (Linux /proc)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss_mib": out["VmRSS"], "peak_mib": out["VmHWM"]}


async def _fetch(base: str, project: int, ndjson: bool, query: str = "all=true") -> int:
    """Read the whole answer as a script would; NDJSON line by line, never holding it all."""
    url = f"{base}{PATH.format(project=project)}?{query}"
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        if not ndjson:
            async with s.get(url) as r:
                assert r.status == 200, await r.text()
                return len((await r.json())["items"])
        n = 0
        async with s.get(url, headers={"Accept": "application/x-ndjson"}) as r:
            assert r.status == 200, await r.text()
            async for line in r.content:
                item = json.loads(line)
                assert "error" not in item, item
                n += 1
        return n


def bench(procs: Procs, workdir: Path) -> dict[str, Any]:
    upstream = start_upstream(procs, 100_000, 0.0, second_count=10_000)
    cases: dict[str, Any] = {}
    lines = ["memory: peak RSS of one gateway worker serving all=true (fresh process per case)"]
    for items, project in SIZES.items():
        for fmt in ("json", "ndjson"):
            name = f"gateway-mem-{items}-{fmt}"
            base, pid = start_gateway(procs, workdir, upstream, 4, name)
            asyncio.run(_fetch(base, project, fmt == "ndjson", "limit=1"))
            before = _rss(pid)
            started = time.perf_counter()
            got = asyncio.run(_fetch(base, project, fmt == "ndjson"))
            elapsed = time.perf_counter() - started
            assert got == items, (name, got)
            after = _rss(pid)
            cases[f"{fmt}_{items}"] = {
                "items": items,
                "format": fmt,
                "baseline_mib": round(before["rss_mib"], 1),
                "peak_mib": round(after["peak_mib"], 1),
                "seconds": round(elapsed, 2),
            }
            lines.append(
                f"  {fmt:6s} {items:7d} items: peak {after['peak_mib']:7.1f} MiB "
                f"(idle {before['rss_mib']:.1f} MiB), {elapsed:.2f} s"
            )
            procs.stop_all_named(name)
    nd = cases["ndjson_100000"]["peak_mib"] / cases["ndjson_10000"]["peak_mib"]
    js = cases["json_100000"]["peak_mib"] / cases["json_10000"]["peak_mib"]
    lines.append(f"  growth 10k -> 100k items: NDJSON {nd:.2f}x, JSON {js:.2f}x")
    for line in lines:
        print(line, flush=True)
    return {"cases": cases, "ndjson_growth": round(nd, 3), "json_growth": round(js, 3), "lines": lines}
