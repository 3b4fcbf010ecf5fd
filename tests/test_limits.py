"""Admission control through real HTTP: per-key rate limits, the concurrency cap, open-bind refusal."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import ConfigError, parse_config
from gateway.server import GATEWAY
from sandbox.runner import Sandboxes
from tests.conftest import ROOT, ROUTES

KEYS = {"SLOW_KEY": "sk_" + "s" * 30, "FAST_KEY": "fk_" + "f" * 30, "ADMIN_KEY": "ak_" + "a" * 30}
LIST = "/v1/posthog/projects/1/notebooks?limit=1"


def page(n: int) -> str:
    """A distinct URL per call: a response cache must not hide what reaches the upstream."""
    return f"/v1/posthog/projects/1/notebooks?limit={n}"


UPSTREAM_LIST = ("GET", "/api/projects/1/notebooks/")


def _clients(slow_limit: str) -> str:
    return f"""
clients:
  keys:
    slow: {{key: {{env: SLOW_KEY}}, rate_limit: {slow_limit}}}
    fast: {{key: {{env: FAST_KEY}}}}
admin:
  keys:
    ops: {{key: {{env: ADMIN_KEY}}}}
"""


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_a_key_over_its_rate_limit_gets_429_and_nothing_is_forwarded(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(
        ROUTES.read_text() + _clients("{requests: 3, per: 1h}"), env={**sandbox_env, **KEYS}, registry=registry
    )
    slow = {"X-API-Key": KEYS["SLOW_KEY"]}
    for n in range(1, 4):
        assert (await gw.get(page(n), headers=slow)).status == 200
    resp = await gw.get(page(4), headers=slow)
    body = await resp.json()
    assert resp.status == 429
    assert body["error"]["code"] == "rate_limited" and body["error"]["route"] == "posthog_notebooks"
    assert "'slow'" in body["error"]["message"] and KEYS["SLOW_KEY"] not in body["error"]["message"]
    # one token per 1200 s: the wait is announced, rounded up to whole seconds
    assert 1100 <= int(resp.headers["Retry-After"]) <= 1200
    assert sandboxes.posthog_state.count(*UPSTREAM_LIST) == 3
    # other keys have their own budget
    for _ in range(5):
        assert (await gw.get(LIST, headers={"Authorization": f"Bearer {KEYS['FAST_KEY']}"})).status == 200
    assert _sample(registry, "gateway_requests_limited_total", reason="rate_limit") == 1
    # a reload that keeps the limit keeps the bucket: reloading is no way around it
    assert (await gw.post("/admin/reload", headers={"X-API-Key": KEYS["ADMIN_KEY"]})).status == 200
    assert (await gw.get(LIST, headers=slow)).status == 429
    # a changed limit starts from a full bucket
    path = Path(gw.app[GATEWAY].runtime.config.path)
    path.write_text(path.read_text().replace("{requests: 3, per: 1h}", "{requests: 10, per: 1h, burst: 2}"))
    assert (await gw.post("/admin/reload", headers={"X-API-Key": KEYS["ADMIN_KEY"]})).status == 200
    assert [(await gw.get(LIST, headers=slow)).status for _ in range(3)] == [200, 200, 429]


async def test_the_bucket_refills_at_the_configured_rate(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    gw = await make_gateway(ROUTES.read_text() + _clients("2/s"), env={**sandbox_env, **KEYS})
    now = [1000.0]
    gw.app[GATEWAY].limits.clock = lambda: now[0]
    slow = {"X-API-Key": KEYS["SLOW_KEY"]}
    assert [(await gw.get(LIST, headers=slow)).status for _ in range(3)] == [200, 200, 429]
    now[0] += 0.5  # 2/s: one token back after half a second
    assert [(await gw.get(LIST, headers=slow)).status for _ in range(2)] == [200, 429]
    resp = await gw.get(LIST, headers=slow)
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    now[0] += 10  # refills up to the burst (2), no further
    assert [(await gw.get(LIST, headers=slow)).status for _ in range(3)] == [200, 200, 429]


async def test_concurrency_cap_answers_429_and_keeps_own_endpoints_up(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    text = ROUTES.read_text()
    assert "\nserver:\n" in text
    registry = CollectorRegistry()
    gw = await make_gateway(
        text.replace("\nserver:\n", "\nserver:\n  max_concurrency: 2\n", 1), env=sandbox_env, registry=registry
    )
    sandboxes.posthog_state.latency_ms = 600  # the first two hold their slots while the rest arrive

    async def call(n: int) -> tuple[int, dict[str, Any], str | None]:
        resp = await gw.get(page(n))
        return resp.status, await resp.json(), resp.headers.get("Retry-After")

    calls = asyncio.gather(*(call(n) for n in range(1, 7)))
    await asyncio.sleep(0.2)
    health = await gw.get("/healthz")  # the gateway's own endpoints are never capped
    assert health.status == 200
    results = await calls
    ok = [r for r in results if r[0] == 200]
    limited = [r for r in results if r[0] == 429]
    assert len(ok) == 2 and len(limited) == 4, [r[0] for r in results]
    for _, body, retry in limited:
        assert body["error"]["code"] == "over_capacity" and retry == "1"
    assert sandboxes.posthog_state.count(*UPSTREAM_LIST) == 2
    assert _sample(registry, "gateway_requests_limited_total", reason="concurrency") == 4
    assert _sample(registry, "gateway_requests_in_flight") == 0
    sandboxes.posthog_state.latency_ms = 0
    assert (await gw.get(LIST)).status == 200  # slots were released


def test_rate_limit_config_errors_carry_file_and_line() -> None:
    bad = ROUTES.read_text() + (
        "clients:\n  keys:\n"
        "    a: {key: {env: A}, rate_limit: fast}\n"
        "    b: {key: {env: B}, rate_limit: 0/s}\n"
        "    c: {key: {env: C}, rate_limit: {requests: 5}}\n"
        "    d: {key: {env: D}, rate_limit: {requests: 5, per: 0s}}\n"
        "server2: {}\n"
    )
    start = ROUTES.read_text().count("\n") + 3
    with pytest.raises(ConfigError) as err:
        parse_config(bad, "routes.yaml", env={})
    problems = [str(p) for p in err.value.problems]
    assert any(p.startswith(f"routes.yaml:{start}: clients.keys.a.rate_limit: 'fast' is not a rate") for p in problems)
    assert any(p.startswith(f"routes.yaml:{start + 1}: clients.keys.b.rate_limit:") for p in problems)
    assert any(f":{start + 2}: clients.keys.c.rate_limit: missing required key 'per'" in p for p in problems)
    assert any(f":{start + 3}: clients.keys.d.rate_limit.per: the window must be longer" in p for p in problems)
    ok = parse_config(ROUTES.read_text() + "clients:\n  keys:\n    a: {key: {env: A}, rate_limit: 600/1m}\n", env={})
    limit = ok.access.clients[0].rate_limit
    assert limit is not None and limit.rate == 10.0 and limit.burst == 600


def test_a_mistyped_client_key_fails_the_load_instead_of_opening_the_gateway() -> None:
    # a key written inline (or any other mistake under clients:) must never be dropped silently
    with pytest.raises(ConfigError) as err:
        parse_config(ROUTES.read_text() + "clients:\n  keys:\n    a: {key: hunter2-pasted-inline}\n", env={})
    assert any("clients.keys.a.key" in str(p) and "hunter2" not in str(p) for p in err.value.problems)


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_serve_refuses_a_non_loopback_address_without_client_keys(tmp_path: Path) -> None:
    out = _serve(str(ROUTES), "--host", "0.0.0.0", "--port", "1")
    assert out.returncode == 2
    assert "refusing to serve 0.0.0.0 without client keys" in out.stderr and "--allow-open" in out.stderr
    # told explicitly, or with keys configured, it goes on to bind: 192.0.2.1 (TEST-NET) is on no
    # interface here, so the bind fails (exit 3) without anything being opened
    out = _serve(str(ROUTES), "--host", "192.0.2.1", "--port", "1", "--allow-open")
    assert out.returncode == 3 and "cannot listen on 192.0.2.1:1" in out.stderr, out.stderr
    assert "serving" not in out.stdout  # printed once listening, not before
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(ROUTES.read_text() + "clients:\n  keys:\n    a: {key: {env: SLOW_KEY}}\n")
    out = _serve(str(keyed), "--host", "192.0.2.1", "--port", "1", env=KEYS)
    assert out.returncode == 3 and "refusing" not in out.stderr, out.stderr


async def test_a_reload_may_not_drop_every_key_of_a_public_gateway(
    make_gateway: Any, sandbox_env: dict[str, str]
) -> None:
    gw = await make_gateway(ROUTES.read_text() + _clients("10/s"), env={**sandbox_env, **KEYS})
    gateway = gw.app[GATEWAY]
    gateway.requires_client_keys = "the gateway listens on 0.0.0.0"  # what `serve --host 0.0.0.0` sets
    path = Path(gateway.runtime.config.path)
    path.write_text(ROUTES.read_text() + "admin:\n  keys:\n    ops: {key: {env: ADMIN_KEY}}\n")
    resp = await gw.post("/admin/reload", headers={"X-API-Key": KEYS["ADMIN_KEY"]})
    body = await resp.json()
    assert resp.status == 422
    assert any(
        "clients.keys: no client keys, but the gateway listens on 0.0.0.0" in p for p in body["error"]["details"]
    )
    assert (await gw.get(LIST)).status == 401  # still the old, keyed config
