"""A real nginx ``proxy_cache`` in front of the gateway: no answer crosses from one client to another.

The gateway keys its own cache per client key; a shared cache in front keys by URL.  The
gateway's answers say ``Cache-Control: private`` (``no-store`` for writes) and ``Vary`` the
client-key headers, so nginx stores none of them.  A second nginx location that ignores those
headers shows the setup would leak without them (the test can fail).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from sandbox.runner import Sandboxes
from tests.conftest import ROUTES, need_binary
from tests.processes import free_port

pytestmark = pytest.mark.hostile

KEYS = {"ALICE_KEY": "ak_" + "a" * 30, "BOB_KEY": "bk_" + "b" * 30}
CLIENTS = """
clients:
  keys:
    alice: {key: {env: ALICE_KEY}}
    bob:
      key: {env: BOB_KEY}
      routes: ["observable_*"]
"""
LIST = "/v1/posthog/projects/1/notebooks?limit=2"


def _nginx_conf(prefix: Path, port: int, gateway_port: int) -> str:
    """A caching reverse proxy as an operator would write it, plus a control that ignores the headers."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must write the cache under tmp_path
    temps = "".join(
        f"    {k}_temp_path {prefix}/{k}_temp;\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    cache = (
        "            proxy_cache front;\n"
        "            proxy_cache_valid 200 403 401 10m;\n"
        "            add_header X-Front-Cache $upstream_cache_status always;\n"
    )
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    access_log off;\n"
        f"{temps}"
        f"    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=front:1m max_size=10m;\n"
        f"    server {{\n        listen 127.0.0.1:{port};\n"
        f"        location / {{\n            proxy_pass http://127.0.0.1:{gateway_port};\n{cache}        }}\n"
        "        location /leaky/ {\n"
        f"            proxy_pass http://127.0.0.1:{gateway_port}/;\n{cache}"
        "            proxy_ignore_headers Cache-Control Expires Vary;\n"
        "        }\n"
        "    }\n}\n"
    )


@pytest.fixture
async def keyed(make_gateway: Any, sandbox_env: dict[str, str]) -> TestClient[Any, Any]:
    """The demo's situation: two client keys, and the gateway's own cache on (its per-client keys)."""
    env = {**sandbox_env, **KEYS, "ROUTEGATE_CACHE": "on"}
    client: TestClient[Any, Any] = await make_gateway(ROUTES.read_text() + CLIENTS, env=env)
    return client


@pytest.fixture
async def front(keyed: TestClient[Any, Any], tmp_path: Path) -> AsyncIterator[str]:
    """nginx on 127.0.0.1 caching in front of the ``keyed`` gateway; yields its base URL."""
    binary = need_binary("nginx")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_nginx_conf(prefix, port, keyed.port))
    proc = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                if proc.poll() is not None:
                    raise AssertionError(
                        "nginx did not start: " + (proc.stderr.read() if proc.stderr else b"").decode()
                    )
                try:
                    async with session.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("nginx did not answer")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, str, Any]:
    async with session.get(url, headers=headers) as resp:
        return resp.status, resp.headers.get("X-Front-Cache", ""), resp.headers


async def test_no_answer_crosses_between_clients_through_nginx(front: str, sandboxes: Sandboxes) -> None:
    alice = {"X-API-Key": KEYS["ALICE_KEY"]}
    alice_bearer = {"Authorization": f"Bearer {KEYS['ALICE_KEY']}"}
    bob = {"X-API-Key": KEYS["BOB_KEY"]}
    bob_bearer = {"Authorization": f"Bearer {KEYS['BOB_KEY']}"}
    async with aiohttp.ClientSession() as session:
        for _ in range(2):  # a second round: whatever nginx stored in the first would be served now
            for who in (alice, alice_bearer):
                status, cached, headers = await _get(session, front + LIST, who)
                assert status == 200 and cached != "HIT", (status, cached)
            for who in (bob, bob_bearer):  # bob may not read PostHog: alice's answer must not reach him
                status, cached, _ = await _get(session, front + LIST, who)
                assert status == 403 and cached != "HIT", (status, cached)
            status, cached, _ = await _get(session, front + LIST, {})  # no key: past the 401? no
            assert status == 401 and cached != "HIT", (status, cached)
    assert headers["Cache-Control"] == "private"  # what told nginx so
    assert {"authorization", "x-api-key"} <= {v.strip().lower() for v in headers["Vary"].split(",")}


async def test_the_same_nginx_leaks_when_it_ignores_the_headers(front: str) -> None:
    """The control: with Cache-Control and Vary ignored, nginx hands alice's answer to a caller with no key."""
    async with aiohttp.ClientSession() as session:
        status, _, _ = await _get(session, front + "/leaky" + LIST, {"X-API-Key": KEYS["ALICE_KEY"]})
        assert status == 200
        status, cached, _ = await _get(session, front + "/leaky" + LIST, {})
        assert (status, cached) == (200, "HIT")


async def test_every_stable_answer_is_private(gw: TestClient[Any, Any], keyed: TestClient[Any, Any]) -> None:
    """Without client keys too (the answer depends on the upstream credentials); streams and writes too."""
    resp = await gw.get(LIST)
    assert resp.status == 200 and resp.headers["Cache-Control"] == "private"
    assert resp.headers["Vary"] == "Accept"  # no client key to vary on; a collection's form is negotiated
    resp = await gw.get(LIST.replace("limit=2", "all=true"), headers={"Accept": "application/x-ndjson"})
    assert resp.status == 200 and resp.headers["Cache-Control"] == "private"
    await resp.read()
    resp = await gw.get("/v1/posthog/projects/1/notebooks/nonexistent")
    assert resp.status == 404 and resp.headers["Cache-Control"] == "private"
    resp = await gw.post("/v1/posthog/projects/1/notebooks", json={"title": "t"})
    assert resp.status == 201 and resp.headers["Cache-Control"] == "no-store"
    for _ in range(2):  # the gateway's own cache: a HIT is private too
        resp = await keyed.get(LIST, headers={"X-API-Key": KEYS["ALICE_KEY"]})
        assert resp.status == 200 and resp.headers["Cache-Control"] == "private"
        assert "X-API-Key" in resp.headers["Vary"]
    assert resp.headers["X-Cache"] == "HIT"
    resp = await gw.get("/healthz")  # the gateway's own endpoints keep their own headers
    assert "Cache-Control" not in resp.headers


async def test_a_route_can_say_no_store(make_gateway: Any, sandboxes: Sandboxes) -> None:
    """``no_store: true``: not even the caller's browser keeps the answer (errors included)."""
    text = ROUTES.read_text()
    assert text.count("\n  posthog_notebook:\n") == 1
    gw = await make_gateway(text.replace("\n  posthog_notebook:\n", "\n  posthog_notebook:\n    no_store: true\n"))
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    resp = await gw.get(f"/v1/posthog/projects/1/notebooks/{short_id}")
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    resp = await gw.get("/v1/posthog/projects/1/notebooks/nonexistent")
    assert resp.status == 404 and resp.headers["Cache-Control"] == "no-store"
    resp = await gw.get(LIST)  # the other routes stay private
    assert resp.headers["Cache-Control"] == "private"
    bad = text.replace("\n  posthog_notebook:\n", "\n  posthog_notebook:\n    no_store: yes please\n")
    with pytest.raises(Exception, match="no_store: expected true or false"):
        await make_gateway(bad)
