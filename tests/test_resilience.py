"""Resilience toward upstreams, through real HTTP: retries, the circuit breaker, pacing, pooling.

Each test counts what the upstream really received (a scripted fake upstream, or the
PostHog sandbox) and asserts what a script calling the gateway sees.  Time-dependent
parts (breaker, Retry-After, pacing) run on an injected clock and sleep
(``tests.helpers.clock``): the waits the gateway asked for are read, never slept through.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.config import parse_config
from gateway.server import GATEWAY, build_app
from sandbox.posthog import PostHogState
from sandbox.runner import Sandboxes, gateway_env, start_sandboxes
from tests.fake_upstream import CUT, HANG, RESET, Reply, start_fake
from tests.helpers.clock import VirtualTime, install
from tests.helpers.resilience import _gateway, _yaml

ROUTES = Path(__file__).resolve().parent.parent / "routes.yaml"


def _retries(registry: CollectorRegistry, route: str, reason: str) -> float:
    value = registry.get_sample_value(
        "gateway_upstream_retries_total", {"upstream": "fake", "route": route, "reason": reason}
    )
    return value or 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --------------------------------------------------------------------------- config


def test_resilience_settings_are_parsed_and_checked() -> None:
    cfg = parse_config(
        _yaml(
            "http://127.0.0.1:1",
            retries="attempts: 4, backoff: 50ms, max_backoff: 1s, max_wait: 20s, budget: 10%",
            breaker="failures: 5, cooldown: 15s",
            budget="request_budget: {limits: [480/1m, 4800/h, 5/500ms], max_wait: 2s}",
        ),
        env={},
    )
    up = cfg.upstreams["fake"]
    assert (up.retries.attempts, up.retries.backoff, up.retries.max_wait, up.retries.budget) == (4, 0.05, 20.0, 0.1)
    assert (up.breaker.failures, up.breaker.cooldown) == (5, 15.0)
    assert up.budget.limits == ((480, 60.0), (4800, 3600.0), (5, 0.5))
    assert up.budget.max_wait == 2.0
    shipped = parse_config(ROUTES.read_text(), env={}).upstreams["posthog"]
    assert shipped.budget.limits == ((480, 60.0), (4800, 3600.0))
    assert shipped.breaker.failures > 0


def test_bad_resilience_settings_are_reported_with_lines() -> None:
    from gateway.config import ConfigError

    text = _yaml(
        "http://127.0.0.1:1",
        retries="attempts: 0, backof: 1s, budget: 150%",
        breaker="failures: many",
        budget="request_budget: {limits: [480 per minute]}",
    )
    try:
        parse_config(text, "routes.yaml", env={})
    except ConfigError as exc:
        problems = [str(p) for p in exc.problems]
    else:
        raise AssertionError("invalid resilience settings were accepted")
    joined = "\n".join(problems)
    assert "upstreams.fake.retries.backof: unknown key 'backof' (did you mean 'backoff'?)" in joined
    assert "upstreams.fake.circuit_breaker.failures: expected an integer" in joined
    assert "upstreams.fake.request_budget.limits[0]: '480 per minute' is not a budget" in joined
    assert all(p.startswith("routes.yaml:") and p.split(":")[1].isdigit() for p in problems)


# --------------------------------------------------------------------------- retries


async def test_idempotent_call_is_retried_until_it_succeeds(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    gw, registry = await _gateway(make_gateway, _yaml(url))
    fake.script("/things/a", 503, 502, 200)
    resp = await gw.get("/v1/things/a")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == 200
    assert fake.count("/things/a") == 3
    assert _retries(registry, "get_thing", "503") == 1
    assert _retries(registry, "get_thing", "502") == 1
    # a PUT is idempotent too; a response broken off mid-body is retried for it
    fake.script("/things/b", CUT, 200)
    resp = await gw.put("/v1/things/b", json={"x": 1})
    assert resp.status == 200
    assert fake.count("/things/b", "PUT") == 2
    assert _retries(registry, "put_thing", "reset") == 1


async def test_retries_stop_after_the_configured_attempts(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    gw, _ = await _gateway(make_gateway, _yaml(url))
    fake.script("/things/down", 504)
    resp = await gw.get("/v1/things/down")
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "upstream_failed"
    assert body["error"]["route"] == "get_thing"
    assert fake.count("/things/down") == 3
    # statuses outside 429/502/503/504 are answers, never retried
    for status in (500, 400, 404):
        fake.script(f"/things/s{status}", status)
        await gw.get(f"/v1/things/s{status}")
        assert fake.count(f"/things/s{status}") == 1, status
    # a read timeout on a GET is retried too, within the attempts
    fake.script("/things/slow", HANG, 200)
    resp = await gw.get("/v1/things/slow")
    assert resp.status == 200
    assert fake.count("/things/slow") == 2


async def test_post_is_never_sent_twice(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    gw, registry = await _gateway(make_gateway, _yaml(url))
    cases = {
        "unavailable": (503, 502, "upstream_failed"),
        "throttled": (Reply(429, headers={"Retry-After": "0"}), 503, "upstream_rate_limited"),
        "slow": (HANG, 504, "upstream_timeout"),
        "reset": (RESET, 502, "upstream_reset"),
        "cut": (CUT, 502, "upstream_reset"),
    }
    for name, (step, status, code) in cases.items():
        fake.script(f"/things/{name}", step, 200)
        resp = await gw.post(f"/v1/things/{name}", json={"title": name})
        body = await resp.json()
        assert resp.status == status, (name, body)
        assert body["error"]["code"] == code, (name, body)
        assert fake.count(f"/things/{name}", "POST") == 1, name
    assert (
        registry.get_sample_value(
            "gateway_upstream_retries_total", {"upstream": "fake", "route": "post_thing", "reason": "503"}
        )
        is None
    )
    # the same faults on a GET are retried and succeed
    for name in ("reset", "cut"):
        fake.script(f"/things/{name}", RESET if name == "reset" else CUT, 200)
        resp = await gw.get(f"/v1/things/{name}")
        assert resp.status == 200, name


async def test_post_is_retried_when_the_connection_was_refused(make_gateway: Any) -> None:
    gw, registry = await _gateway(make_gateway, _yaml(f"http://127.0.0.1:{_free_port()}"))
    resp = await gw.post("/v1/things/x", json={"title": "x"})
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "upstream_unreachable"
    # nothing had been sent, so the POST was safe to try again: 3 attempts, 2 retries
    assert _retries(registry, "post_thing", "connect") == 2


async def test_retry_after_is_honoured(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    gw, _ = await _gateway(make_gateway, _yaml(url))
    time = VirtualTime()
    install(gw.server.app[GATEWAY].client.resilience, time)
    fake.script("/things/busy", Reply(503, headers={"Retry-After": "1"}), 200)
    resp = await gw.get("/v1/things/busy")
    assert resp.status == 200
    assert fake.count("/things/busy") == 2
    # the upstream said one second (more than the 20 ms backoff): the gateway waited exactly that
    assert time.sleeps == [1.0]
    # a wait longer than max_wait (3s) is not waited out: one try, and the error carries Retry-After
    fake.script("/things/later", Reply(429, headers={"Retry-After": "120"}))
    resp = await gw.get("/v1/things/later")
    body = await resp.json()
    assert resp.status == 503 and body["error"]["code"] == "upstream_rate_limited"
    assert resp.headers["Retry-After"] == "120"
    assert fake.count("/things/later") == 1


async def test_retry_budget_limits_retries_under_failure(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    gw, registry = await _gateway(
        make_gateway, _yaml(url, retries="attempts: 2, backoff: 1ms, max_backoff: 1ms, budget: 0%")
    )
    fake.script("/things/down", 502)
    for _ in range(14):
        resp = await gw.get("/v1/things/down")
        assert resp.status == 502
    # a 0% budget still allows the floor of 10 retries per 10 s, and not one more
    assert fake.count("/things/down") == 14 + 10
    assert _retries(registry, "get_thing", "502") == 10


# --------------------------------------------------------------------------- PostHog throttling


async def test_posthog_429_blocks_the_key_instead_of_hammering(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    """The shipped routes.yaml: a throttled key is not used again until PostHog said it may be."""
    state = sandboxes.posthog_state
    state.rate_limit_per_minute = 2
    base = "/v1/posthog/projects/1/notebooks?limit=1"
    for _ in range(2):
        assert (await gw.get(base)).status == 200
    resp = await gw.get(base)
    body = await resp.json()
    assert resp.status == 503 and body["error"]["code"] == "upstream_rate_limited"
    assert int(resp.headers["Retry-After"]) > 50  # "Expected available in 60 seconds."
    assert state.total_requests == 3
    # the next calls are answered from the block, without reaching PostHog
    resp = await gw.get("/v1/posthog/projects/1/notebooks/abc")
    body = await resp.json()
    assert resp.status == 503 and body["error"]["code"] == "upstream_rate_limited"
    assert body["error"]["route"] == "posthog_notebook"
    assert 50 < int(resp.headers["Retry-After"]) <= 60
    assert state.total_requests == 3


async def test_posthog_short_throttle_is_waited_out(aiohttp_client: Any) -> None:
    """PostHog says "Expected available in 1 second": the gateway waits, then succeeds."""
    offset = [0.0]
    state = PostHogState(clock=lambda: time.time() + offset[0], rate_limit_per_minute=1)
    # the gateway's waits pass on PostHog's clock at once: no real second is slept
    virtual = VirtualTime(on_sleep=lambda seconds: offset.__setitem__(0, offset[0] + seconds), frozen=False)
    async with await start_sandboxes(posthog_state=state) as sb:
        env = gateway_env(sb)
        env["ROUTEGATE_CACHE"] = "off"  # every read must reach the throttling upstream
        gw = await aiohttp_client(build_app(ROUTES, registry=CollectorRegistry(), env=env))
        install(gw.server.app[GATEWAY].client.resilience, virtual)
        assert (await gw.get("/v1/posthog/projects/1/notebooks?limit=1")).status == 200
        # 59.5 s later by PostHog's clock: its window frees up in 0.5 s, which it rounds up to 1 second
        offset[0] = 59.5
        resp = await gw.get("/v1/posthog/projects/1/notebooks?limit=1")
        assert resp.status == 200, await resp.text()
        assert virtual.sleeps == [1.0]  # waited what PostHog said, once
        assert state.total_requests == 3  # ok, 429, the retry after the wait


# --------------------------------------------------------------------------- circuit breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _circuit(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("gateway_upstream_circuit_state", {"upstream": "fake"})


async def test_circuit_breaker_opens_half_opens_and_closes(
    make_gateway: Any, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    fake, _, url = await start_fake(aiohttp_server)
    gw, registry = await _gateway(make_gateway, _yaml(url, retries="attempts: 1", breaker="failures: 3, cooldown: 30s"))
    clock = Clock()
    gw.server.app[GATEWAY].client.resilience.clock = clock
    assert _circuit(registry) == 0
    fake.script("/things/a", 503)
    for _ in range(3):
        assert (await gw.get("/v1/things/a")).status == 502
    assert _circuit(registry) == 2  # open
    assert registry.get_sample_value("gateway_upstream_circuit_opened_total", {"upstream": "fake"}) == 1
    # open: every route of the upstream fails fast, nothing is sent
    for path in ("/v1/things/a", "/v1/things/b"):
        resp = await gw.get(path)
        body = await resp.json()
        assert resp.status == 503
        assert body["error"]["code"] == "circuit_open"
        assert body["error"]["route"] == "get_thing"
        assert "'fake'" in body["error"]["message"]
        assert resp.headers["Retry-After"] == "30"
    assert (await gw.post("/v1/things/a", json={})).status == 503
    assert fake.count() == 3
    # not upstream calls: neither timed nor logged as such
    timed = {"upstream": "fake", "route": "get_thing"}
    assert registry.get_sample_value("gateway_upstream_request_duration_seconds_count", timed) == 3
    refused = [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "gateway.access" and r.fields["error"] == "circuit_open"  # type: ignore[attr-defined]
    ]
    assert len(refused) == 3 and all(f["upstream_calls"] == 0 and f["upstream_status"] is None for f in refused)
    # cool-down over: one probe goes through; it fails, so the breaker opens again
    clock.now += 30
    assert (await gw.get("/v1/things/a")).status == 502
    assert fake.count() == 4
    assert _circuit(registry) == 2
    assert (await gw.get("/v1/things/a")).status == 503
    assert fake.count() == 4
    # the upstream recovers; after the next cool-down the probe succeeds and the breaker closes
    fake.script("/things/a", 200)
    clock.now += 30
    assert (await gw.get("/v1/things/a")).status == 200
    assert _circuit(registry) == 0
    for _ in range(3):
        assert (await gw.get("/v1/things/a")).status == 200
    assert fake.count() == 8
    # closed again: it takes 3 fresh consecutive failures to open; a success in between resets the count
    fake.script("/things/a", 503, 503, 200, 503, 503)
    for _ in range(5):
        await gw.get("/v1/things/a")
    assert _circuit(registry) == 0


async def test_half_open_lets_exactly_one_probe_through(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    gw, registry = await _gateway(make_gateway, _yaml(url, retries="attempts: 1", breaker="failures: 1, cooldown: 5s"))
    clock = Clock()
    gw.server.app[GATEWAY].client.resilience.clock = clock
    fake.script("/things/a", 502, Reply(200, delay=0.3))
    assert (await gw.get("/v1/things/a")).status == 502
    clock.now += 5
    probe = asyncio.create_task(gw.get("/v1/things/a"))
    while fake.count() < 2:  # the probe reached the upstream
        await asyncio.sleep(0.01)
    assert _circuit(registry) == 1  # half-open
    others = await asyncio.gather(*(gw.get("/v1/things/a") for _ in range(5)))
    assert [r.status for r in others] == [503] * 5
    assert (await probe).status == 200
    assert fake.count() == 2
    assert _circuit(registry) == 0


async def test_shipped_routes_enable_the_breaker(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    """routes.yaml: PostHog failing with 5xx opens its breaker; Observable is unaffected."""
    registry = gw.server.app[GATEWAY].registry
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects": {"status": 500}}})
    statuses = [(await gw.get("/v1/posthog/projects/1/notebooks?limit=1")).status for _ in range(6)]
    assert statuses[0] == 502 and statuses[-1] == 503
    assert registry.get_sample_value("gateway_upstream_circuit_state", {"upstream": "posthog"}) == 2
    assert registry.get_sample_value("gateway_upstream_circuit_state", {"upstream": "observable"}) == 0
    assert (await gw.get("/v1/observable/notebooks?limit=1")).status == 200


# --------------------------------------------------------------------------- pacing


async def test_requests_are_paced_under_the_budget(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    gw, registry = await _gateway(make_gateway, _yaml(url, budget="request_budget: {limits: [5/1s], max_wait: 10s}"))
    time = VirtualTime()
    install(gw.server.app[GATEWAY].client.resilience, time)
    resps = await asyncio.gather(*(gw.get(f"/v1/things/n{i}") for i in range(12)))
    assert [r.status for r in resps] == [200] * 12
    assert fake.count() == 12
    # the schedule the gateway kept (virtual time, exact): 5 at once, then 5 a second later, then 2
    assert sorted(time.sleeps) == [1.0] * 5 + [2.0] * 2
    sends = sorted([time.now] * (12 - len(time.sleeps)) + time.wakes)
    for i in range(len(sends) - 5):  # no second-long window at the upstream sees more than 5
        assert sends[i + 5] - sends[i] >= 1.0, sends
    # the first 5 went at once; the other 7 waited for a slot rather than being refused
    assert registry.get_sample_value("gateway_upstream_paced_total", {"upstream": "fake", "outcome": "waited"}) == 7


async def test_a_wait_beyond_max_wait_is_a_503_and_keys_have_their_own_budget(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    env = {"FAKE_KEY": "first-key"}
    gw, _ = await _gateway(make_gateway, _yaml(url, budget="request_budget: {limits: [2/1m], max_wait: 1s}"), env)
    assert [(await gw.get(f"/v1/things/{i}")).status for i in range(2)] == [200, 200]
    resp = await gw.get("/v1/things/3")
    body = await resp.json()
    assert resp.status == 503 and body["error"]["code"] == "upstream_budget_exhausted"
    assert body["error"]["route"] == "get_thing"
    assert "2/1m" in body["error"]["message"]
    assert 55 <= int(resp.headers["Retry-After"]) <= 60
    assert fake.count() == 2
    # a renewed key (the env var changed) is a different credential with its own budget
    env["FAKE_KEY"] = "second-key"
    assert (await gw.get("/v1/things/4")).status == 200
    assert fake.hits[-1].headers["Authorization"] == "Bearer second-key"


async def test_connection_pool_is_bounded(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    gw, _ = await _gateway(make_gateway, _yaml(url, max_connections=2))
    fake.script("/things/slow", Reply(200, delay=0.2))
    resps = await asyncio.gather(*(gw.get("/v1/things/slow") for _ in range(6)))
    assert [r.status for r in resps] == [200] * 6
    assert fake.max_in_flight == 2
    assert fake.count() == 6


async def test_resilience_state_survives_a_reload(make_gateway: Any, aiohttp_server: Any, tmp_path: Path) -> None:
    """An open breaker stays open across a reload; a reload that switches it off closes it."""
    fake, _, url = await start_fake(aiohttp_server)
    gw, registry = await _gateway(make_gateway, _yaml(url, retries="attempts: 1", breaker="failures: 1, cooldown: 1h"))
    gateway = gw.server.app[GATEWAY]
    fake.script("/things/a", 502, 200)
    assert (await gw.get("/v1/things/a")).status == 502
    gateway.reload()
    assert (await gw.get("/v1/things/a")).status == 503
    path = tmp_path / "off.yaml"
    path.write_text(_yaml(url, retries="attempts: 1", breaker="failures: 0"))
    gateway.reload(path)
    assert (await gw.get("/v1/things/a")).status == 200
    assert _circuit(registry) == 0
