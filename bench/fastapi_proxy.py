"""``python -m bench.fastapi_proxy``: what a team would otherwise write, for comparison.

FastAPI on uvicorn (uvloop, httptools) forwarding each request with one shared
``httpx.AsyncClient``: no routing table, validation, metrics or logs.  ``--workers N``
runs N uvicorn worker processes on one port, like ``gateway serve --workers N``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI, Response

UPSTREAM = os.environ.get("BENCH_FASTAPI_UPSTREAM", "")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def forward() -> Response:
    r = await app.state.client.get(UPSTREAM, headers={"Accept": "application/json"})
    return Response(content=r.content, media_type="application/json", status_code=r.status_code)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fastapi_proxy", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--upstream", required=True, help="the page's URL")
    args = p.parse_args(argv)
    os.environ["BENCH_FASTAPI_UPSTREAM"] = args.upstream  # read again by each worker process
    uvicorn.run(
        "bench.fastapi_proxy:app",
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
