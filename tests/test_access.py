"""Client API keys, per-key grants, and the admin guard, through real HTTP."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.server import GATEWAY
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES

ACCESS = """
clients:
  keys:
    reader:
      key: {env: READER_KEY}
      methods: [GET]
    posthog-writer:
      key: {env: WRITER_KEY}
      routes: ["posthog_*"]
admin:
  keys:
    ops: {key: {env: ADMIN_KEY}}
"""
KEYS = {"READER_KEY": "rk_" + "r" * 30, "WRITER_KEY": "wk_" + "w" * 30, "ADMIN_KEY": "ak_" + "a" * 30}


async def _gw(make_gateway: Any, sandbox_env: dict[str, str], extra: str = ACCESS) -> Any:
    return await make_gateway(ROUTES.read_text() + extra, env={**sandbox_env, **KEYS})


async def test_keys_are_required_once_configured(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw = await _gw(make_gateway, sandbox_env)
    resp = await gw.get("/v1/posthog/projects/1/notebooks")
    body = await resp.json()
    assert resp.status == 401 and body["error"]["code"] == "missing_api_key"
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    resp = await gw.get("/v1/posthog/projects/1/notebooks", headers={"X-API-Key": "rk_wrong"})
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_api_key"
    assert sandboxes.posthog_state.total_requests == 0
    resp = await gw.get("/v1/posthog/projects/1/notebooks?limit=1", headers={"X-API-Key": KEYS["READER_KEY"]})
    assert resp.status == 200
    resp = await gw.get("/v1/observable/notebooks?limit=1", headers={"Authorization": f"Bearer {KEYS['READER_KEY']}"})
    assert resp.status == 200


async def test_read_only_key_cannot_write_and_grants_limit_routes(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw = await _gw(make_gateway, sandbox_env)
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    url = f"/v1/posthog/projects/1/notebooks/{short_id}"
    reader = {"Authorization": f"Bearer {KEYS['READER_KEY']}"}
    writer = {"Authorization": f"Bearer {KEYS['WRITER_KEY']}"}
    resp = await gw.delete(url, headers=reader)
    body = await resp.json()
    assert resp.status == 403 and "may not DELETE" in body["error"]["message"]
    resp = await gw.get("/v1/observable/notebooks", headers=writer)
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "route_not_allowed"
    assert sandboxes.posthog_state.count("PATCH", f"/api/projects/1/notebooks/{short_id}/") == 0
    assert sandboxes.observable_state.total_requests == 0
    resp = await gw.delete(url, headers=writer)
    assert resp.status == 204


async def test_client_key_never_reaches_the_upstream(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw = await _gw(make_gateway, sandbox_env)
    await gw.get("/v1/posthog/projects/1/notebooks?limit=1", headers={"Authorization": f"Bearer {KEYS['READER_KEY']}"})
    assert sandboxes.posthog_state.log[-1]["has_auth"]  # the upstream key was injected instead
    assert KEYS["READER_KEY"] not in str(sandboxes.posthog_state.log)


async def test_admin_reload_is_guarded_and_reports_problems(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    from gateway.server import GATEWAY

    gw = await make_gateway(ROUTES.read_text() + ACCESS, env={**sandbox_env, **KEYS})
    gateway = gw.app[GATEWAY]
    routes = Path(gateway.runtime.config.path)
    before = gateway.runtime.config.digest
    resp = await gw.post("/admin/reload")
    assert resp.status == 401
    resp = await gw.post("/admin/reload", headers={"X-API-Key": KEYS["READER_KEY"]})
    assert resp.status == 401  # a client key is not an admin key
    routes.write_text(routes.read_text().replace("style: offset", "style: offsett"))
    resp = await gw.post("/admin/reload", headers={"X-API-Key": KEYS["ADMIN_KEY"]})
    body = await resp.json()
    assert resp.status == 422
    assert any("pagination.style" in p for p in body["error"]["details"])
    assert gateway.runtime.config.digest == before  # still serving the old config
    resp = await gw.get("/v1/posthog/projects/1/notebooks?limit=1", headers={"X-API-Key": KEYS["READER_KEY"]})
    assert resp.status == 200
    routes.write_text(routes.read_text().replace("style: offsett", "style: offset") + "\n# edited\n")
    resp = await gw.post("/admin/reload", headers={"X-API-Key": KEYS["ADMIN_KEY"]})
    assert resp.status == 200
    assert (await resp.json())["digest"] != before


async def test_admin_endpoints_are_off_without_admin_keys(gw: Any) -> None:
    resp = await gw.post("/admin/reload")
    body = await resp.json()
    assert resp.status == 403 and body["error"]["code"] == "admin_disabled"


async def test_status_page_needs_the_admin_key_once_clients_need_keys(
    make_gateway: Any, sandbox_env: dict[str, str]
) -> None:
    import base64

    gw = await _gw(make_gateway, sandbox_env)
    resp = await gw.get("/status")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic")  # a browser asks for the key
    resp = await gw.get("/status", headers={"X-API-Key": KEYS["READER_KEY"]})
    assert resp.status == 401  # a client key is not enough
    basic = base64.b64encode(f"ops:{KEYS['ADMIN_KEY']}".encode()).decode()
    for headers in ({"Authorization": f"Basic {basic}"}, {"Authorization": f"Bearer {KEYS['ADMIN_KEY']}"}):
        resp = await gw.get("/status", headers=headers)
        assert resp.status == 200 and "observable_notebooks" in await resp.text()
    basic_client = base64.b64encode(f"x:{KEYS['READER_KEY']}".encode()).decode()
    resp = await gw.get("/v1/posthog/projects/1/notebooks?limit=1", headers={"Authorization": f"Basic {basic_client}"})
    assert resp.status == 200  # Basic works for scripts too, the key being the password


async def test_a_key_without_a_value_is_named_at_load_and_by_gateway_check(
    make_gateway: Any, sandbox_env: dict[str, str], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """It can never match, so every call with it is a 401: the operator must learn why from the log."""
    caplog.set_level(logging.ERROR, logger="gateway")
    env = {**sandbox_env, **KEYS}
    del env["ADMIN_KEY"]
    gw = await make_gateway(ROUTES.read_text() + ACCESS, env=env)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("admin.keys.ops: no value (set ADMIN_KEY)" in m for m in errors), errors
    assert not any("clients.keys.reader" in m for m in errors)  # the keys that have values are not named
    resp = await gw.post("/admin/reload", headers={"X-API-Key": "anything"})
    assert resp.status == 401 and "ADMIN_KEY" not in await resp.text()  # the caller is told nothing more

    from gateway.cli import main

    path = gw.app[GATEWAY].runtime.config.path
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.delenv("ADMIN_KEY", raising=False)
        assert main(["check", path]) == 0  # the file is valid; this environment lacks a value
    err = capsys.readouterr().err
    assert f"{path}: warning: admin.keys.ops: no value (set ADMIN_KEY)" in err and "reader" not in err
