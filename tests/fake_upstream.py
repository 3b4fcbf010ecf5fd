"""A scriptable upstream for resilience and hostile-input tests (a real aiohttp server).

Each path answers from a script of steps, consumed in order (the last one repeats):
an ``int`` status (a small JSON body), a ``Reply`` for anything finer, or one of the
misbehaviours ``HANG`` (never answers in time), ``RESET`` (closes the socket without
answering), ``CUT`` (promises a body and breaks off mid-way) and ``FLOOD`` (a
chunked body with no end in sight).  Every arrival is
recorded with its monotonic time, so tests assert on what the upstream really saw.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

HANG = "hang"
RESET = "reset"
CUT = "cut"
#: a chunked body (no Content-Length) of 64 KiB chunks that goes on for 16 MiB
FLOOD = "flood"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Hit:
    at: float
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


Step = int | Reply | str


class FakeUpstream:
    def __init__(self) -> None:
        self.scripts: dict[str, list[Step]] = {}
        self.hits: list[Hit] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def script(self, path: str, *steps: Step) -> None:
        self.scripts[path] = list(steps)

    def count(self, path: str | None = None, method: str | None = None) -> int:
        return sum(1 for h in self.hits if (path is None or h.path == path) and (method is None or h.method == method))

    def times(self, path: str | None = None) -> list[float]:
        return [h.at for h in self.hits if path is None or h.path == path]

    def _next(self, path: str) -> Step:
        steps = self.scripts.get(path)
        if not steps:
            return 200
        return steps.pop(0) if len(steps) > 1 else steps[0]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.hits.append(
            Hit(
                time.monotonic(),
                request.method,
                request.path,
                request.raw_path.partition("?")[2],  # as sent, still percent-encoded
                dict(request.headers),
                body,
            )
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, self._next(request.path))
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, step: Step) -> web.StreamResponse:
        if step == HANG:
            await asyncio.sleep(30)
            return web.json_response({"late": True})
        if step == RESET:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if step == CUT:
            resp = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "1000"})
            await resp.prepare(request)
            await resp.write(b'{"value": "only the beginning')
            assert request.transport is not None
            request.transport.close()
            return resp
        if step == FLOOD:
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            chunk = b"[" + b" " * (1 << 16)
            for _ in range(256):
                await resp.write(chunk)
            return resp
        if isinstance(step, int):
            step = Reply(step)
        assert isinstance(step, Reply)
        if step.delay:
            await asyncio.sleep(step.delay)
        body = (
            step.body if step.body is not None else json.dumps({"status": step.status, "path": request.path}).encode()
        )
        return web.Response(status=step.status, body=body, headers={"Content-Type": "application/json", **step.headers})


async def start_fake(aiohttp_server: Any) -> tuple[FakeUpstream, TestServer, str]:
    """The fake on a real 127.0.0.1 socket: (fake, server, base URL without a trailing slash)."""
    fake = FakeUpstream()
    app = web.Application(client_max_size=16 << 20)
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server: TestServer = await aiohttp_server(app)
    return fake, server, str(server.make_url("/")).rstrip("/")
