"""The issue's targets, computed from one run's results, and the printed summary."""

from __future__ import annotations

from typing import Any


def _rps(http: dict[str, Any], name: str) -> float | None:
    case = http.get("cases", {}).get(name)
    return case.get("rps") if case else None


def _p50(http: dict[str, Any], name: str) -> float | None:
    case = http.get("cases", {}).get(name)
    return case.get("p50_ms") if case else None


def _target(value: float | None, op: str, bound: float, unit: str, why_missing: str = "not measured") -> dict[str, Any]:
    if value is None:
        return {"value": None, "target": f"{op} {bound}{unit}", "met": None, "note": why_missing}
    met = value >= bound if op == ">=" else value <= bound
    return {"value": round(value, 4), "target": f"{op} {bound}{unit}", "met": met}


def ratios(http: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in (1, 2):
        for kind, ref in (("pass", "nginx_proxy_pass"), ("cache", "nginx_proxy_cache")):
            g, r = _rps(http, f"gateway_{kind}_w{n}"), _rps(http, f"{ref}_w{n}")
            if g and r:
                out[f"{kind}_gateway_over_nginx_w{n}"] = round(g / r, 3)
        for kind, mode in (("pass", "proxy"), ("cache", "static")):
            g, c = _rps(http, f"gateway_{kind}_w{n}"), _rps(http, f"aiohttp_ceiling_{mode}_w{n}")
            r = _rps(http, f"nginx_proxy_{kind}_w{n}")
            if g and c:
                out[f"{kind}_gateway_over_aiohttp_ceiling_w{n}"] = round(g / c, 3)
            if c and r:
                out[f"{kind}_aiohttp_ceiling_over_nginx_w{n}"] = round(c / r, 3)
        b, c = _rps(http, f"aiohttp_ceiling_basics_w{n}"), _rps(http, f"aiohttp_ceiling_static_w{n}")
        if b and c:  # the most a cache hit could reach while keeping its request id, metrics and access line
            out[f"basics_over_aiohttp_ceiling_static_w{n}"] = round(b / c, 3)
        g, f = _rps(http, f"gateway_pass_w{n}"), _rps(http, f"fastapi_httpx_proxy_w{n}")
        if g and f:
            out[f"pass_gateway_over_fastapi_httpx_w{n}"] = round(g / f, 3)
        d50 = _p50(http, "direct_c1")
        for key, case in (
            ("added_p50_ms_c1", "gateway_pass"),
            ("aiohttp_ceiling_added_p50_ms_c1", "aiohttp_ceiling_proxy"),
            ("fastapi_httpx_added_p50_ms_c1", "fastapi_httpx_proxy"),
        ):
            p50 = _p50(http, f"{case}_w{n}_c1")
            if p50 is not None and d50 is not None:
                out[f"{key}_w{n}"] = round(p50 - d50, 4)
    return out


def evaluate(results: dict[str, Any]) -> dict[str, Any]:
    http = results.get("http", {})
    r = ratios(http) if http else {}
    if http:
        http["ratios"] = r
    missing = http.get("cache", {}).get("missing_because") if http else None
    cache_note = f"no gateway cache case: {missing}" if missing else "not measured"
    agg = results.get("aggregation", {})
    mem = results.get("memory", {})
    flat = mem.get("ndjson_growth")
    floor = r.get("aiohttp_ceiling_added_p50_ms_c1_w2")
    added = r.get("added_p50_ms_c1_w2")
    # issue 15's targets, against aiohttp's own floors measured in this run; nginx stays as the anchor
    return {
        "cache_hit_vs_aiohttp_static_w2": _target(
            r.get("cache_gateway_over_aiohttp_ceiling_w2"), ">=", 0.7, "x", cache_note
        ),
        "passthrough_vs_aiohttp_proxy_w2": _target(r.get("pass_gateway_over_aiohttp_ceiling_w2"), ">=", 0.75, "x"),
        "added_p50_c1_w2_over_aiohttp_proxy": _target(
            None if added is None or floor is None else added - floor, "<=", 0.05, " ms"
        ),
        "passthrough_vs_fastapi_httpx_w2": _target(r.get("pass_gateway_over_fastapi_httpx_w2"), ">=", 1.0, "x"),
        "aggregation_vs_floor": _target(agg.get("gateway_over_floor"), "<=", 1.5, "x"),
        "ndjson_memory_growth_10k_to_100k": _target(flat, "<=", 1.2, "x"),
    }


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    http = results.get("http")
    if http:
        lines.append(f"{'case':32s} {'req/s':>10s} {'p50 ms':>9s} {'p99 ms':>9s} {'CPU us/req':>11s}")
        for name, c in http["cases"].items():
            if "rps" in c:
                err = f"  ({c['errors']} errors)" if c["errors"] else ""
                cpu = f"{c['cpu_us_per_request']:11.1f}" if "cpu_us_per_request" in c else f"{'':11s}"
                lines.append(f"{name:32s} {c['rps']:10.0f} {c['p50_ms']:9.3f} {c['p99_ms']:9.3f} {cpu}{err}")
        if not http["cache"]["available"]:
            lines.append(f"gateway cache hit: NOT MEASURED, {http['cache']['missing_because']}")
        for k, v in http.get("ratios", {}).items():
            lines.append(f"ratio {k}: {v}")
    agg = results.get("aggregation")
    if agg:
        lines.append("")
        for line in agg.get("lines", []):
            lines.append(line)
    mem = results.get("memory")
    if mem:
        lines.append("")
        for line in mem.get("lines", []):
            lines.append(line)
    lines.append("\ntargets (this run):")
    for name, t in results["targets"].items():
        state = "n/a" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        note = f"  ({t['note']})" if t.get("note") else ""
        lines.append(f"  {name:36s} {t['value']!s:>10s}  target {t['target']:10s} {state}{note}")
    return "\n".join(lines)
