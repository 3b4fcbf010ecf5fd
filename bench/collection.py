"""Shared set-up of the collection benches: the big PostHog sandbox and a gateway in front of it."""

from __future__ import annotations

import sys
from pathlib import Path

from bench import procs as bench_procs
from bench.procs import Procs, free_port, wait_http
from sandbox.posthog import SANDBOX_POSTHOG_KEY

PATH = "/v1/posthog/projects/{project}/notebooks"

ROUTES = """
version: 1
upstreams:
  posthog:
    base_url: ${{POSTHOG_URL}}
    timeouts: {{connect: 5s, read: 60s, total: 600s}}
    concurrency: {concurrency}
    auth:
      bearer: {{env: POSTHOG_API_KEY}}
routes:
  posthog_notebooks:
    stable: GET /v1/posthog/projects/{{project_id}}/notebooks
    upstream: posthog
    pagination: {{style: offset, page_size: 100}}
    targets:
      - GET /api/projects/{{project_id}}/notebooks/
    response:
      items:
        id: short_id
        title: title
        created_at: created_at
        updated_at: last_modified_at
"""


def start_upstream(procs: Procs, count: int, latency_ms: float, second_count: int = 12) -> str:
    """The sandbox with ``count`` notebooks in project 1 (and ``second_count`` in project 2)."""
    port = free_port()
    proc = procs.start(
        f"posthog-{count}",
        [
            sys.executable,
            "-m",
            "bench.posthog_upstream",
            "--port",
            str(port),
            "--count",
            str(count),
            "--second-count",
            str(second_count),
            "--latency-ms",
            str(latency_ms),
        ],
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/_sandbox/requests", timeout=120, proc=proc)
    return url


def start_gateway(procs: Procs, workdir: Path, upstream: str, concurrency: int, name: str) -> tuple[str, int]:
    """A one-worker gateway (metrics and request logs on, like production); its URL and pid."""
    routes = workdir / f"routes-{name}.yaml"
    routes.write_text(ROUTES.format(concurrency=concurrency))
    env = {"POSTHOG_URL": upstream, "POSTHOG_API_KEY": SANDBOX_POSTHOG_KEY}
    base, proc = bench_procs.start_gateway(procs, name, routes, env)
    return base, proc.pid
