"""The gateway served over a real socket as ``gateway serve`` serves it, and its access lines read back."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.server import build_app
from tests.processes import free_port


@contextlib.asynccontextmanager
async def _served(yaml_text: str, env: dict[str, str], tmp_path: Path) -> AsyncIterator[tuple[str, int, Any]]:
    """The gateway served as ``gateway serve`` serves it (aiohttp's defaults: a handler is not
    cancelled when its client leaves; the test client's server cancels it): (host, port, registry)."""
    path = tmp_path / "routes-served.yaml"
    path.write_text(yaml_text)
    registry = CollectorRegistry()
    runner = web.AppRunner(build_app(path, registry=registry, env=env))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield "127.0.0.1", port, registry
    finally:
        await runner.cleanup()


async def _access(stream: io.StringIO, rid: str, timeout: float = 10.0) -> dict[str, Any]:
    """The access line of request ``rid``, once the gateway has written it."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while loop.time() < until:
        for line in stream.getvalue().splitlines():
            record = json.loads(line)
            if record.get("event") == "request" and record.get("request_id") == rid:
                return dict(record)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no access line for {rid}: {stream.getvalue()}")


def _no_internal_error(stream: io.StringIO) -> None:
    text = stream.getvalue()
    assert "internal error" not in text and "Traceback" not in text and '"level":"error"' not in text, text
