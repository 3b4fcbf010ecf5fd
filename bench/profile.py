"""``python -m bench.profile``: py-spy on a gateway worker under wrk load; prints where time goes.

Starts the static upstream (nginx) and one gateway worker, drives the pass-through
(or cached) route with wrk, samples the worker with ``py-spy record`` and prints the
functions with the most self and inclusive time.  ``--svg`` keeps a flame graph.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench import http, nginx
from bench.procs import Procs, start_gateway
from bench.wrk import Load, Sample, run


def top(collapsed: str, n: int) -> str:
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        total += count
        frames = stack.split(";")
        self_t[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        return "(not sampled)"
    out = [f"{total} samples", "", "self %  function"]
    out += [f"{100 * c / total:6.1f}  {f}" for f, c in self_t.most_common(n)]
    out += ["", "incl %  function"]
    out += [f"{100 * c / total:6.1f}  {f}" for f, c in incl.most_common(n)]
    return "\n".join(out)


def share(collapsed: str, word: str) -> float:
    total = hit = 0
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if stack:
            total += int(count_s)
            hit += int(count_s) if word in stack else 0
    return 100 * hit / max(total, 1)


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def served(base: str) -> float:
    """Stable requests the gateway has answered, from its /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("gateway_requests_total{")
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    p.add_argument("--path", default=http.PASS_PATH, help="the gateway path to load")
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--svg", help="also write a flame graph here")
    p.add_argument(
        "--nonblocking", action="store_true", help="sample without pausing the worker (less overhead, torn stacks)"
    )
    p.add_argument("--raw", help="also keep py-spy's collapsed stacks here")
    p.add_argument("--log-level", default="info", help="the gateway's (info: a line per request, as in production)")
    p.add_argument("--native", action="store_true", help="py-spy --native: C frames too")
    p.add_argument("--grep", action="append", default=[], help="also print the share of samples whose stack has this")
    p.add_argument("--no-spy", action="store_true", help="only measure CPU per request, without sampling")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    workdir = Path(tempfile.mkdtemp(prefix="routegate-profile-"))
    try:
        with Procs(workdir) as procs:
            upstream, _ = nginx.start_upstream(procs, workdir)
            routes = workdir / "routes.yaml"
            env = {"BENCH_UPSTREAM_URL": upstream}
            http.write_routes(routes, env)
            base, gw = start_gateway(procs, "gateway", routes, env, log_level=args.log_level)
            url = base + args.path
            run(url, Load(2, args.connections, 2))
            raw = workdir / "profile.txt"
            cpu0 = cpu_seconds(gw.pid)
            n0 = served(base)
            runs: list[Sample] = []
            load = threading.Thread(target=lambda: runs.append(run(url, Load(2, args.connections, args.seconds + 2))))
            load.start()
            if args.no_spy:
                time.sleep(args.seconds)
                raw.write_text("")
            else:
                subprocess.run(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(gw.pid),
                        "--duration",
                        str(args.seconds),
                        "--rate",
                        "500",
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                        *(["--native"] if args.native else []),
                        *(["--nonblocking"] if args.nonblocking else []),
                    ],
                    check=True,
                    capture_output=True,
                    timeout=args.seconds + 60,
                )
            if args.svg:
                subprocess.run(
                    [spy, "record", "--pid", str(gw.pid), "--duration", "3", "--output", args.svg, "--nonblocking"],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
            load.join()
            user, system = (b - a for a, b in zip(cpu0, cpu_seconds(gw.pid), strict=True))
            n = max(served(base) - n0, 1)
            if args.raw:
                shutil.copyfile(raw, args.raw)
            print(top(raw.read_text(), args.top))
            for word in args.grep:
                print(f"{share(raw.read_text(), word):5.1f}% of samples have {word!r} on the stack")
            print(
                f"\n{runs[0].rps:.0f} req/s under py-spy; gateway CPU per request: "
                f"{1e6 * user / n:.1f} us user (Python), {1e6 * system / n:.1f} us system (sockets)"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
