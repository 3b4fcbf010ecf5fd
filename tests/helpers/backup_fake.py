"""A stand-in gateway and a fake clock for running examples/backup_notebooks.py in-process.

Shared by the backup test modules (no test module imports another): the script is loaded once as
``bn``; its waits go to ``FakeTime``, so pacing and backoff cost no real time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.helpers.backup import SCRIPT

_spec = importlib.util.spec_from_file_location("backup_notebooks", SCRIPT)
assert _spec is not None and _spec.loader is not None
bn = importlib.util.module_from_spec(_spec)
sys.modules["backup_notebooks"] = bn
_spec.loader.exec_module(bn)

LIST = "/v1/observable/notebooks"


# --------------------------------------------------------------------------- a fake clock and a stand-in gateway


class FakeTime:
    """The script's clock and sleep: a sleep moves the clock instead of waiting.

    Concurrent sleepers started at the same moment end at the same moment (the clock is not
    advanced once per sleeper), so a shared pause costs its length once, as in real time.
    ``freeze()`` stops time: every sleeper stays asleep until ``thaw()``.
    """

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []
        self.running = asyncio.Event()
        self.running.set()

    def freeze(self) -> None:
        self.running.clear()

    def thaw(self) -> None:
        self.running.set()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        target = self.t + seconds
        await asyncio.sleep(0)
        await self.running.wait()
        self.t = max(self.t, target)


@dataclass
class Hit:
    at: float  # the fake clock when the request arrived
    path: str
    cursor: str | None
    status: int


Hook = Callable[[web.Request, "FakeGateway"], web.Response | None]


def error(status: int, code: str, route: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"code": code, "message": f"{code} (stand-in)", "route": route}}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class FakeGateway:
    """routegate's stable Observable API as the backup sees it: a cursor-paged listing and details.

    ``hook`` may answer any request instead (a 429, a 409, a 502); every arrival is recorded.
    """

    time: FakeTime
    notebooks: list[dict[str, Any]]
    hook: Hook | None = None
    hits: list[Hit] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(LIST, self.listing)
        app.router.add_get(LIST + "/{id}", self.detail)
        return app

    def answer(self, request: web.Request, ok: Callable[[], web.Response]) -> web.Response:
        resp = self.hook(request, self) if self.hook else None
        resp = resp or ok()
        self.hits.append(Hit(self.time.now(), request.path, request.query.get("cursor"), resp.status))
        return resp

    async def listing(self, request: web.Request) -> web.Response:
        def ok() -> web.Response:
            start = int(request.query.get("cursor", "0"))
            limit = int(request.query["limit"])
            items = self.notebooks[start : start + limit]
            more = start + limit < len(self.notebooks)
            return web.json_response({"items": items, "next_cursor": str(start + limit) if more else None})

        return self.answer(request, ok)

    async def detail(self, request: web.Request) -> web.Response:
        nb_id = request.match_info["id"]

        def ok() -> web.Response:
            nb = next((n for n in self.notebooks if n["id"] == nb_id), None)
            if nb is None:
                return error(404, "not_found", "observable_notebook")
            return web.json_response({**nb, "nodes": [{"id": 1, "value": f"doc of {nb_id}"}]})

        return self.answer(request, ok)

    def details(self) -> list[Hit]:
        return [h for h in self.hits if h.path != LIST]

    def listings(self) -> list[Hit]:
        return [h for h in self.hits if h.path == LIST]


def notebooks(n: int, version: int = 1) -> list[dict[str, Any]]:
    return [
        {"id": f"nb{i:03d}", "title": f"Notebook {i}", "type": "public", "version": version, "updated_at": "2026-01-01"}
        for i in range(n)
    ]


async def backup(url: str, out: Path, fake_time: FakeTime, *extra: str) -> int:
    args = bn.parse_args(["--gateway", url, "--out", str(out), "--observable-types", "public", *extra])
    code: int = await bn.run(args, sleep=fake_time.sleep, clock=fake_time.now)
    return code


def saved(out: Path) -> set[str]:
    return {p.stem for p in (out / "observable").glob("*.json")}


def index(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "index.json").read_text())
    return data


def token_bucket(rate: float) -> Hook:
    """The gateway's client-key limit (``rate_limit: 5/s``) on the fake clock: 429 with Retry-After: 1."""
    state = {"tokens": rate, "at": 0.0}

    def hook(request: web.Request, gw: FakeGateway) -> web.Response | None:
        t = gw.time.now()
        state["tokens"] = min(rate, state["tokens"] + (t - state["at"]) * rate)
        state["at"] = t
        if state["tokens"] < 1:
            return error(429, "rate_limited", "observable_notebooks", {"Retry-After": "1"})
        state["tokens"] -= 1
        return None

    return hook
