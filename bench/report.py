"""``python -m bench.report [bench/results.json]``: a run's figures as the README's Markdown tables."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

LABELS = {
    "direct": "direct upstream (nginx static)",
    "nginx_proxy_pass": "nginx `proxy_pass`, keep-alive upstream",
    "nginx_proxy_cache": "nginx `proxy_cache` hit",
    "aiohttp_ceiling_static": "ceiling: bare aiohttp, page from memory",
    "aiohttp_ceiling_basics": "bare aiohttp from memory + request id, 2 metrics, access line",
    "aiohttp_ceiling_proxy": "ceiling: bare aiohttp proxy (one shared `ClientSession`)",
    "gateway_pass": "**gateway pass-through**",
    "gateway_cache": "**gateway cache hit**",
}


def _label(name: str) -> str:
    base, _, workers = name.removesuffix("_c1").rpartition("_w")
    if name == "direct" or name == "direct_c1":
        base, workers = "direct", ""
    text = LABELS.get(base, base)
    return text + (f", {workers} worker{'s' if workers != '1' else ''}" if workers else "")


def http_table(http: dict[str, Any]) -> str:
    rows = ["| Case (wrk -t2 -c64) | req/s | p50 ms | p99 ms | CPU µs/req |", "|---|---:|---:|---:|---:|"]
    one = ["| Same at one connection (wrk -t1 -c1) | req/s | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
    for name, c in http["cases"].items():
        if "rps" not in c:
            continue
        cpu = f"{c['cpu_us_per_request']:.0f}" if "cpu_us_per_request" in c else ""
        row = f"| {_label(name)} | {c['rps']:,.0f} | {c['p50_ms']:.3f} | {c['p99_ms']:.3f} |"
        # one connection: idle-time work is spread over few requests, so CPU per request means little
        (one if name.endswith("_c1") else rows).append(row if name.endswith("_c1") else f"{row} {cpu} |")
    return "\n".join(rows) + "\n\n" + "\n".join(one)


def targets_table(targets: dict[str, Any]) -> str:
    names = {
        "passthrough_vs_nginx_w2": "gateway pass-through / nginx `proxy_pass`, req/s",
        "cache_hit_vs_nginx_w2": "gateway cache hit / nginx `proxy_cache`, req/s",
        "added_latency_p50_c1_w2": "added p50 latency over direct, one connection",
        "aggregation_vs_floor": "`all=true` wall time / floor (concurrency 4)",
        "ndjson_memory_growth_10k_to_100k": "NDJSON peak RSS, 100k / 10k items",
    }
    rows = ["| Target | Goal | Measured | |", "|---|---|---:|---|"]
    for key, t in targets.items():
        state = "n/a" if t["met"] is None else ("met" if t["met"] else "**not met**")
        unit = " ms" if "ms" in t["target"] else "x"
        value = "" if t["value"] is None else f"{t['value']}{unit}"
        rows.append(f"| {names.get(key, key)} | {t['target']} | {value} | {state} |")
    return "\n".join(rows)


def aggregation_table(agg: dict[str, Any]) -> str:
    rows = ["| Client | Wall time | / floor |", "|---|---:|---:|"]
    rows.append(f"| naive script following `next` | {agg['naive_sequential_s']:.2f} s | |")
    for key, g in agg["gateway"].items():
        c = key.removeprefix("concurrency_")
        rows.append(
            f"| gateway, concurrency {c} (floor {g['floor_s']:.2f} s) | {g['json_s']:.2f} s | "
            f"{g['json_over_floor']:.2f}x |"
        )
        rows.append(
            f"| same, NDJSON (first item after {g['ndjson_first_byte_s'] * 1000:.0f} ms) | {g['ndjson_s']:.2f} s | |"
        )
    return "\n".join(rows)


def memory_table(mem: dict[str, Any]) -> str:
    rows = ["| `all=true` | 10,000 items | 100,000 items | growth |", "|---|---:|---:|---:|"]
    for fmt in ("json", "ndjson"):
        a, b = mem["cases"][f"{fmt}_10000"], mem["cases"][f"{fmt}_100000"]
        rows.append(
            f"| {fmt.upper()} | {a['peak_mib']:.1f} MiB | {b['peak_mib']:.1f} MiB | {mem[f'{fmt}_growth']:.2f}x |"
        )
    idle = mem["cases"]["json_10000"]["baseline_mib"]
    return "\n".join(rows) + f"\n\n(An idle worker: {idle:.1f} MiB.)"


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    path = Path(args[0] if args else Path(__file__).with_name("results.json"))
    results = json.loads(path.read_text())
    print(
        f"<!-- {results['command']}; started {results['started']}; load average "
        f"{results.get('loadavg_before')} → {results.get('loadavg_after')} -->\n"
    )
    if "http" in results:
        print(http_table(results["http"]) + "\n")
    print(targets_table(results["targets"]) + "\n")
    if "aggregation" in results:
        print(aggregation_table(results["aggregation"]) + "\n")
    if "memory" in results:
        print(memory_table(results["memory"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
