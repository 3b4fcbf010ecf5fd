"""Relaying admin calls between workers (gateway.peers), in one process: failures and dead workers."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.config import parse_config
from gateway.peers import Peers
from gateway.server import GATEWAY
from tests.conftest import ROUTES

OPS_KEY = "ak_ops_" + "o" * 24
ADMIN = "\nadmin:\n  keys:\n    ops: {key: {env: OPS_KEY}}\n"
OPS = {"Authorization": f"Bearer {OPS_KEY}"}


async def _worker(path: Path, status: int, seen: list[dict[str, Any]]) -> web.AppRunner:
    """A stand-in for another worker on its socket: notes what it was sent, answers ``status``."""

    async def admin(request: web.Request) -> web.Response:
        seen.append(
            {"path": request.path_qs, "auth": request.headers.get("Authorization"), "body": await request.read()}
        )
        if status == 200:
            return web.json_response({"status": "purged", "deleted": 3})
        return web.json_response({"error": {"code": "invalid_config", "message": "1 problem(s)"}}, status=status)

    app = web.Application()
    app.router.add_post("/admin/{what:.*}", admin)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(path)).start()
    return runner


async def test_a_relayed_admin_call_carries_the_callers_key_and_body_and_sums_the_answers(
    make_gateway: Any, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    gw = await make_gateway(
        ROUTES.read_text() + ADMIN, env={**sandbox_env, "ROUTEGATE_CACHE": "on", "OPS_KEY": OPS_KEY}
    )
    gw.app[GATEWAY].peers = Peers(tmp_path)
    seen: list[dict[str, Any]] = []
    runner = await _worker(tmp_path / "999999.sock", 200, seen)
    # a worker that died: its socket file is still there, but nothing listens
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(tmp_path / "999998.sock"))
    try:
        resp = await gw.post("/admin/cache/purge?route=posthog_notebooks", headers=OPS, data=b"")
        assert resp.status == 200
        assert await resp.json() == {
            "status": "purged",
            "route": "posthog_notebooks",
            "prefix": None,
            "deleted": 3,  # none here, three at the other live worker
            "workers": 2,
        }
        assert seen == [
            {"path": "/admin/cache/purge?route=posthog_notebooks", "auth": OPS["Authorization"], "body": b""}
        ]
    finally:
        await runner.cleanup()


async def test_a_worker_that_fails_a_relayed_call_is_named_in_the_answer(
    make_gateway: Any, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    gw = await make_gateway(ROUTES.read_text() + ADMIN, env={**sandbox_env, "OPS_KEY": OPS_KEY})
    gw.app[GATEWAY].peers = Peers(tmp_path)
    runner = await _worker(tmp_path / "999999.sock", 422, [])
    try:
        resp = await gw.post("/admin/reload", headers=OPS)
        assert resp.status == 500
        error = (await resp.json())["error"]
        assert error["code"] == "worker_failed" and f"worker {os.getpid()} applied it" in error["message"]
        assert error["details"] == [
            {"pid": 999999, "status": 422, "error": {"code": "invalid_config", "message": "1 problem(s)"}}
        ]
    finally:
        await runner.cleanup()


def test_a_replacement_worker_serves_the_last_text_a_worker_accepted(
    tmp_path: Path, sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started = parse_config(ROUTES.read_text(), "routes.yaml", sandbox_env)
    later = parse_config(ROUTES.read_text() + "\n# edited\n", "routes.yaml", sandbox_env)
    peers = Peers(tmp_path)
    assert peers.current_config(started) is started  # nothing kept yet
    peers.remember(later)
    for name, value in sandbox_env.items():  # read from the process environment, as in a worker
        monkeypatch.setenv(name, value)
    assert peers.current_config(started).digest == later.digest
