"""``python -m bench.posthog_upstream``: the PostHog sandbox with a large project, for the benches.

The real sandbox (``sandbox.posthog``) with ``--count`` notebooks in project 1,
``--second-count`` in project 2, and ``--latency-ms`` before every answer.  ``visible()`` is memoized because the
benches never write: the sandbox re-sorts the whole project on every page, which at
100,000 notebooks would make the *upstream* the thing measured.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from aiohttp import web

from sandbox import posthog
from sandbox.posthog import PostHogState
from sandbox.runner import until_stopped


class BenchState(PostHogState):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._visible: dict[int, list[Any]] = {}

    def visible(self, project_id: int) -> list[Any]:
        if project_id not in self._visible:
            self._visible[project_id] = super().visible(project_id)
        return self._visible[project_id]


async def _run(args: argparse.Namespace) -> None:
    state = BenchState(notebook_count=args.count, other_project_notebook_count=args.second_count, deleted_count=0)
    state.latency_ms = float(args.latency_ms)
    runner = web.AppRunner(posthog.create_app(state), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    print(f"posthog sandbox: {args.count} notebooks, {args.latency_ms} ms per answer, port {args.port}", flush=True)
    try:
        await until_stopped()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.posthog_upstream", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--second-count", type=int, default=12, help="notebooks in project 2")
    p.add_argument("--latency-ms", type=float, default=0.0)
    args = p.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
