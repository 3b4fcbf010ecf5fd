"""``python -m bench``: run the benches, print the table and the targets, write results.json."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import targets
from bench.procs import Procs
from bench.wrk import Load

SECTIONS = ("http", "aggregation", "memory")


def _versions() -> dict[str, str]:
    import aiohttp

    out = {"python": platform.python_version(), "aiohttp": aiohttp.__version__}
    for dist in ("uvloop", "prometheus-client"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    for name, argv in (("nginx", ["nginx", "-v"]), ("wrk", ["wrk", "-v"])):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            out[name] = (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            out[name] = "not installed"
    return out


def _loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {','.join(SECTIONS)}")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per HTTP case; the median is reported")
    p.add_argument("--seconds", type=int, default=8, help="wrk duration of each measured run")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--connections", type=int, default=64, help="wrk connections for the throughput runs")
    p.add_argument("--workers", default="1,2", help="gateway and nginx worker counts to measure")
    p.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs) for inspection")
    args = p.parse_args(argv)
    sections = [s for s in args.only.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}")

    workdir = Path(tempfile.mkdtemp(prefix="routegate-bench-"))
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "make bench  # = .venv/bin/python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), **_versions()},
    }
    results["loadavg_before"] = _loadavg()
    print(f"routegate bench: {results['machine']}  (work dir {workdir})", flush=True)
    if results["loadavg_before"] > 0.5:
        print(
            f"warning: load average {results['loadavg_before']:.2f} before the run: something else is using "
            "the CPUs, and every number below shares them with it",
            flush=True,
        )
    try:
        with Procs(workdir) as procs:
            if "http" in sections:
                from bench import http

                load = Load(args.threads, args.connections, args.seconds)
                latency = Load(1, 1, args.seconds)
                workers = [int(n) for n in args.workers.split(",")]
                print(
                    f"\n== HTTP: wrk -t{load.threads} -c{load.connections} -d{load.seconds}s, and -t1 -c1 for latency",
                    flush=True,
                )
                results["http"] = {
                    "load": vars(load) | {"latency_connections": 1},
                    **http.bench(procs, workdir, load, latency, args.rounds, workers),
                }
                procs.stop_all()
            if "aggregation" in sections:
                from bench import aggregation

                print("\n== aggregation: all=true over an offset-paginated collection", flush=True)
                results["aggregation"] = aggregation.bench(procs, workdir)
                procs.stop_all()
            if "memory" in sections:
                from bench import memory

                print("\n== memory: peak RSS of a gateway serving all=true", flush=True)
                results["memory"] = memory.bench(procs, workdir)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    results["loadavg_after"] = _loadavg()
    results["targets"] = targets.evaluate(results)
    print()
    print(targets.render(results))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
