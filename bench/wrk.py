"""Drive ``wrk`` (closed loop, fixed threads/connections/duration) and read its JSON line."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPORT = Path(__file__).with_name("report.lua")


@dataclass(frozen=True)
class Load:
    threads: int
    connections: int
    seconds: int


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed; run bench/install-deps.sh")
    return found


def run(url: str, load: Load) -> Sample:
    """One wrk run; non-2xx answers and socket errors are counted, never hidden."""
    argv = [
        wrk_binary(),
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{max(1, round(load.seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(REPORT),
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=load.seconds + 60, check=True).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no report for {url}:\n{out}")
    d = json.loads(line.removeprefix("WRKJSON "))
    errors = d["connect_errors"] + d["read_errors"] + d["write_errors"] + d["status_errors"] + d["timeouts"]
    return Sample(
        rps=d["requests"] / (d["duration_us"] / 1e6),
        p50_ms=d["p50_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        requests=d["requests"],
        errors=errors,
    )
