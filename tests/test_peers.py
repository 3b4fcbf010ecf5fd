"""Relaying admin calls between workers (gateway.peers), in one process: failures and dead workers.

The other workers are stand-ins on Unix sockets in ``tmp_path``; tests/test_workers.py
runs the real thing (``gateway serve --workers 2``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway import peers
from gateway.config import parse_config
from gateway.peers import Peers, make_directory
from gateway.server import GATEWAY
from tests.conftest import ROUTES

OPS_KEY = "ak_ops_" + "o" * 24
ADMIN = "\nadmin:\n  keys:\n    ops: {key: {env: OPS_KEY}}\n"
OPS = {"Authorization": f"Bearer {OPS_KEY}"}


async def _worker(
    path: Path | socket.socket,
    status: int,
    seen: list[dict[str, Any]],
    answer: dict[str, Any] | None = None,
    delay: float = 0.0,
) -> web.AppRunner:
    """A stand-in for another worker on its socket: notes what it was sent, answers ``status``."""

    async def admin(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        seen.append(
            {
                "path": request.path_qs,
                "auth": request.headers.get("Authorization"),
                "type": request.headers.get("Content-Type"),
                "id": request.headers.get("X-Request-ID"),
                "body": await request.read(),
            }
        )
        if status == 200:
            return web.json_response(answer or {"status": "purged", "deleted": 3})
        return web.json_response({"error": {"code": "invalid_config", "message": "1 problem(s)"}}, status=status)

    app = web.Application()
    app.router.add_post("/admin/{what:.*}", admin)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.SockSite(runner, path) if isinstance(path, socket.socket) else web.UnixSite(runner, str(path))
    await site.start()
    return runner


async def test_a_relayed_admin_call_carries_the_callers_key_and_body_and_sums_the_answers(
    make_gateway: Any, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**sandbox_env, "ROUTEGATE_CACHE": "on", "OPS_KEY": OPS_KEY}
    gw = await make_gateway(ROUTES.read_text() + ADMIN, env=env)
    gw.app[GATEWAY].peers = Peers(tmp_path)
    seen: list[dict[str, Any]] = []
    runner = await _worker(tmp_path / "999999.sock", 200, seen)
    # a worker that died: its socket file is still there, but nothing listens
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(tmp_path / "999998.sock"))
    try:
        resp = await gw.post(
            "/admin/cache/purge?route=posthog_notebooks", headers={**OPS, "X-Request-ID": "purge-1"}, data=b""
        )
        assert resp.status == 200
        assert await resp.json() == {
            "status": "purged",
            "route": "posthog_notebooks",
            "prefix": None,
            "deleted": 3,  # none here, three at the other live worker
            "workers": 2,
        }
        assert seen == [
            {
                "path": "/admin/cache/purge?route=posthog_notebooks",
                "auth": OPS["Authorization"],
                "type": "application/octet-stream",  # the caller's, as sent
                "id": "purge-1",  # the relayed call logs under the caller's request
                "body": b"",
            }
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


async def test_a_relayed_reload_carries_the_accepted_text_and_every_worker_must_agree_on_it(
    make_gateway: Any, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    text = ROUTES.read_text() + ADMIN
    gw = await make_gateway(text, env={**sandbox_env, "OPS_KEY": OPS_KEY})
    gw.app[GATEWAY].peers = Peers(tmp_path)
    seen: list[dict[str, Any]] = []
    digest = gw.app[GATEWAY].runtime.config.digest
    agreeing = await _worker(tmp_path / "999997.sock", 200, seen, {"status": "reloaded", "digest": digest})
    other = await _worker(tmp_path / "999999.sock", 200, seen, {"status": "reloaded", "digest": "0" * 16})
    try:
        resp = await gw.post("/admin/reload", headers=OPS)
        assert resp.status == 500
        error = (await resp.json())["error"]
        assert error["code"] == "worker_failed"
        assert [d["pid"] for d in error["details"]] == [999999]  # the worker that applied something else
        # each was sent the text this worker accepted, not asked to read the file again
        assert [(s["body"].decode(), s["type"]) for s in seen] == [(text, "application/yaml")] * 2
    finally:
        await agreeing.cleanup()
        await other.cleanup()


async def test_a_worker_still_starting_gets_the_call_once_it_serves(
    make_gateway: Any, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    """A worker binds its socket before it reads its config: a call sent meanwhile waits, it is not lost."""
    gw = await make_gateway(
        ROUTES.read_text() + ADMIN, env={**sandbox_env, "ROUTEGATE_CACHE": "on", "OPS_KEY": OPS_KEY}
    )
    gw.app[GATEWAY].peers = Peers(tmp_path)
    starting = Peers(tmp_path, pid=999999).listen()  # bound, not served yet
    call = asyncio.ensure_future(gw.post("/admin/cache/purge?all=true", headers=OPS))
    await asyncio.sleep(0.3)
    assert not call.done()
    seen: list[dict[str, Any]] = []
    runner = await _worker(starting, 200, seen)
    try:
        resp = await call
        assert resp.status == 200 and (await resp.json())["workers"] == 2 and len(seen) == 1
    finally:
        await runner.cleanup()


async def test_a_worker_that_cannot_be_reached_or_is_too_slow_is_named(
    make_gateway: Any, sandbox_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await make_gateway(
        ROUTES.read_text() + ADMIN, env={**sandbox_env, "ROUTEGATE_CACHE": "on", "OPS_KEY": OPS_KEY}
    )
    gw.app[GATEWAY].peers = Peers(tmp_path)
    monkeypatch.setattr(peers, "RELAY_TIMEOUT", 0.3)
    slow = await _worker(tmp_path / "999998.sock", 200, [], delay=2.0)
    reachable = await _worker(tmp_path / "999999.sock", 200, [])
    loop = asyncio.get_running_loop()
    connect = loop.create_unix_connection

    async def out_of_files(factory: Any, path: str, **kw: Any) -> Any:
        if path.endswith("999999.sock"):
            raise OSError(errno.EMFILE, "Too many open files")  # not a dead worker: must be reported
        return await connect(factory, path, **kw)

    monkeypatch.setattr(loop, "create_unix_connection", out_of_files)
    try:
        resp = await gw.post("/admin/cache/purge?all=true", headers=OPS)
        assert resp.status == 500
        details = (await resp.json())["error"]["details"]
        assert [(d["pid"], d["status"], d["error"]["code"]) for d in details] == [
            (999998, 504, "worker_timeout"),
            (999999, 502, "worker_unreachable"),
        ]
    finally:
        await slow.cleanup()
        await reachable.cleanup()


def test_a_replacement_worker_serves_the_last_text_a_worker_accepted(
    tmp_path: Path, sandbox_env: dict[str, str]
) -> None:
    started = parse_config(ROUTES.read_text(), "routes.yaml", sandbox_env)
    later = parse_config(ROUTES.read_text() + "\n# edited\n", "routes.yaml", sandbox_env)
    peers = Peers(tmp_path)
    assert peers.current_config(started, sandbox_env) is started  # nothing kept yet
    peers.remember(later)
    assert peers.current_config(started, sandbox_env).digest == later.digest
    (tmp_path / "last-good.yaml").write_bytes(b"\xff\xfe not text")
    assert peers.current_config(started, sandbox_env) is started


def test_keeping_the_last_good_text_never_fails_a_reload(tmp_path: Path, sandbox_env: dict[str, str]) -> None:
    config = parse_config(ROUTES.read_text(), "routes.yaml", sandbox_env)
    Peers(tmp_path / "gone").remember(config)  # logged, not raised: the reload has already happened


def test_the_sockets_directory_is_private_and_refused_when_its_paths_are_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    directory = make_directory()
    try:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700 and list(directory.iterdir()) == []
    finally:
        directory.rmdir()
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    with pytest.raises(OSError, match="too long"):
        make_directory()
    assert list(deep.iterdir()) == []  # not left behind


def test_the_sockets_directory_goes_to_a_runtime_directory_when_there_is_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not /tmp, which cleaners age out, when systemd or the session gives a runtime directory."""
    short = Path(tempfile.mkdtemp(prefix="rg-", dir="/tmp"))
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(short / "missing"))  # not there: skipped
        monkeypatch.setenv("RUNTIME_DIRECTORY", f"{short}:/elsewhere")  # systemd lists several
        assert make_directory().parent == short
        monkeypatch.delenv("RUNTIME_DIRECTORY")
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(short))
        assert make_directory().parent == short
    finally:
        shutil.rmtree(short)
