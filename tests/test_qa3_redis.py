"""QA round 3, shared state: a burst of concurrent requests must not make a process fall back to
local shares while Redis is healthy, and a replica honouring another's open breaker says so.
Everything here runs against a real redis-server on 127.0.0.1 (``redis_server``, tests/helpers/redis.py)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from gateway import redis_pool
from gateway.server import GATEWAY
from tests.conftest import ROUTES
from tests.fake_upstream import Reply, start_fake
from tests.helpers.redis import RedisServer
from tests.processes import serve

# timeout 2s: a burst of 200 requests on a loaded 2-core CI machine lags this one event loop past a few
# hundred ms, which reads as a Redis timeout (a fallback these tests are not about); Redis stopped is refused
# at once whatever the timeout
YAML = """
cache:
  enabled: off
  backend: redis
  redis: {{url: {{env: ROUTEGATE_REDIS_URL}}, prefix: rgqa3, timeout: 2s, retry_after: 1s}}
upstreams:
  fake:
    base_url: {url}
    timeouts: {{connect: 2s, read: 10s, total: 20s}}
    retries: {{attempts: 1, max_wait: 5s}}
    circuit_breaker: {{failures: 2, cooldown: 30s}}
    request_budget: {{limits: [480/1m, 4800/1h], max_wait: 5s}}
    auth: {{bearer: {{env: FAKE_KEY}}}}
routes:
  get_thing:
    stable: GET /v1/things/{{name}}
    upstream: fake
    targets: ["GET /things/{{name}}"]
clients:
  keys:
    alice: {{key: {{env: ALICE_KEY}}, rate_limit: 5/10s}}
    bob: {{key: {{env: BOB_KEY}}}}
"""
ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}


def _env(redis: RedisServer) -> dict[str, str]:
    return {"FAKE_KEY": "fake-key", "ALICE_KEY": "alice-key", "BOB_KEY": "bob-key", "ROUTEGATE_REDIS_URL": redis.url}


async def _gateway(make_gateway: Any, url: str, redis: RedisServer) -> Any:
    gw = await make_gateway(YAML.format(url=url), env=_env(redis), registry=CollectorRegistry())
    deadline = time.monotonic() + 5
    while not gw.app[GATEWAY].shared.active:
        assert time.monotonic() < deadline, "shared state never came up"
        await asyncio.sleep(0.05)
    return gw


async def _scripts_run(redis: RedisServer) -> int:
    """Script runs (EVALSHA and EVAL) the Redis server has executed so far."""
    store = aioredis.Redis.from_url(redis.url)
    try:
        stats = await store.info("commandstats")
    finally:
        await store.aclose()
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))


def _metric(text: str, name: str) -> float:
    """The sum of a metric's samples (0 when it has none)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_a_burst_of_concurrent_requests_never_makes_the_gateway_fall_back_while_redis_answers(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.shared")
    fake, _server, url = await start_fake(aiohttp_server)
    for i in range(150):
        fake.script(f"/things/b{i}", Reply(200, delay=0.2))  # the upstream is slow: the requests overlap
    gw = await _gateway(make_gateway, url, redis_server)
    shared = gw.app[GATEWAY].shared
    epoch = shared.epoch
    base = str(gw.make_url("")).rstrip("/")
    before = await _scripts_run(redis_server)
    started = time.monotonic()

    async def one(s: aiohttp.ClientSession, who: dict[str, str], path: str) -> tuple[int, str | None]:
        async with s.get(base + path, headers=who) as r:
            await r.read()
            return r.status, r.headers.get("Retry-After")

    async def abuser(s: aiohttp.ClientSession, n: int) -> list[tuple[int, str | None]]:
        return [await one(s, ALICE, f"/v1/things/a{n}-{i}") for i in range(8)]

    connector = aiohttp.TCPConnector(limit=0)  # every connection at once, no client-side queue
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as s:
        # 150 uncached requests of an unlimited key at once, while 25 connections of a key limited to
        # 5/10s send 8 requests each (200)
        bob, *alice_runs = await asyncio.gather(
            asyncio.gather(*(one(s, BOB, f"/v1/things/b{i}") for i in range(150))),
            *(abuser(s, n) for n in range(25)),
        )
        elapsed = time.monotonic() - started
        alice = [a for run in alice_runs for a in run]
        assert [s for s, _ in bob] == [200] * 150, sorted({s for s, _ in bob})  # within the budget: all answered
        statuses = sorted(s for s, _ in alice)
        assert statuses.count(429) >= 190 and set(statuses) == {200, 429}, statuses
        assert all(after is not None and 1 <= int(after) <= 2 for s, after in alice if s == 429)  # 1 token / 2 s
        takes = await _scripts_run(redis_server) - before - len(fake.hits) - (int(elapsed / 0.5) + 2)
        # one reservation per upstream call and a heartbeat every 0.5 s; the rest are bucket checks: once
        # Redis said "no token for W s", this process answers the key's 429s itself until then (a check per
        # connection at most each time a token comes back), not one script run per 429
        assert takes <= 25 * (1 + math.ceil(elapsed / 2)) and takes < 100, (takes, elapsed)
        metrics = await (await gw.get("/metrics")).text()
    assert len(fake.hits) == 150 + statuses.count(200)
    assert shared.epoch == epoch and shared.active  # never switched to local shares
    assert "redis failed" not in caplog.text
    assert _metric(metrics, "gateway_shared_state_failures_total") == 0
    assert "gateway_shared_state_up 1.0" in metrics


async def _gauge(gw: Any, name: str) -> float | None:
    for line in (await (await gw.get("/metrics")).text()).splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_replica_honouring_another_replicas_open_breaker_says_so_and_its_gauge_says_open(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer
) -> None:
    fake, _server, url = await start_fake(aiohttp_server)
    fake.script("/things/x", 503)
    text = YAML.format(url=url).replace("cooldown: 30s", "cooldown: 3s")
    one, two = [await make_gateway(text, env=_env(redis_server), registry=CollectorRegistry()) for _ in range(2)]
    for gw in (one, two):
        deadline = time.monotonic() + 5
        while not gw.app[GATEWAY].shared.active:
            assert time.monotonic() < deadline, "shared state never came up"
            await asyncio.sleep(0.05)
    gauge = 'gateway_upstream_circuit_state{upstream="fake"}'
    assert await _gauge(two, gauge) == 0.0
    for _ in range(2):
        assert (await one.get("/v1/things/x", headers=BOB)).status == 502  # the upstream failing (503)
    resp = await one.get("/v1/things/x", headers=BOB)
    assert (await resp.json())["error"]["code"] == "circuit_open"  # open in the first replica
    await asyncio.sleep(0.8)  # a refresh: the second replica has read the shared breaker
    seen = len(fake.hits)
    resp = await two.get("/v1/things/x", headers=BOB)
    error = (await resp.json())["error"]
    assert resp.status == 503 and error["code"] == "circuit_open", error
    assert "another gateway process opened its circuit (shared through Redis)" in error["message"], error
    assert "consecutive failures" not in error["message"]
    assert 1 <= int(resp.headers["Retry-After"]) <= 3
    assert len(fake.hits) == seen  # failed fast
    assert await _gauge(two, gauge) == 2.0  # open, as long as it fails fast
    # the shared breaker's cool-down ends: the gauge goes back with no call through the second replica
    deadline = time.monotonic() + 5
    while (value := await _gauge(two, gauge)) != 0.0:
        assert time.monotonic() < deadline, value
        await asyncio.sleep(0.1)
    assert len(fake.hits) == seen


async def test_a_request_that_finds_no_free_redis_connection_is_refused_alone_without_a_fallback(
    aiohttp_server: Any,
    make_gateway: Any,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the bounded wait for a pooled connection, only that request is refused (503, Retry-After):
    the process keeps sharing through Redis, and the failure is counted as ``busy``."""
    monkeypatch.setattr(redis_pool, "POOL_WAIT", 0.2)
    fake, _server, url = await start_fake(aiohttp_server)
    gw = await _gateway(make_gateway, url, redis_server)
    shared = gw.app[GATEWAY].shared
    epoch = shared.epoch
    slots = shared._slots._free
    for _ in range(redis_pool.POOL):
        await slots.acquire()  # every connection busy (as under a burst far beyond the pool)
    try:
        for who in (BOB, ALICE):  # a budget reservation, a client's bucket
            resp = await gw.get("/v1/things/y", headers=who)
            error = (await resp.json())["error"]
            assert resp.status == 503 and error["code"] == "shared_state_busy", error
            assert resp.headers["Retry-After"] == "1" and error["route"] == "get_thing"
    finally:
        for _ in range(redis_pool.POOL):
            slots.release()
    assert len(fake.hits) == 0
    metrics = await (await gw.get("/metrics")).text()
    assert _metric(metrics, 'gateway_shared_state_failures_total{reason="busy"}') >= 2
    assert _metric(metrics, 'gateway_shared_state_failures_total{reason="connection"}') == 0
    assert shared.epoch == epoch and shared.active and "redis failed" not in caplog.text
    assert (await gw.get("/v1/things/y", headers=BOB)).status == 200  # the next request, once a connection is free


async def test_a_budget_refused_by_the_local_share_names_redis_and_the_outage_is_counted(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer
) -> None:
    """While Redis is away, and for one window after it is back, the local share is what refuses: the
    503 says the budget is shared through Redis (docs/scale-out.md), not merely that it "is used up"."""
    _fake, _server, url = await start_fake(aiohttp_server)
    text = YAML.format(url=url).replace("[480/1m, 4800/1h], max_wait: 5s", "[10/6s], max_wait: 0s")
    text = text.replace("retry_after: 1s", "retry_after: 200ms")
    gw = await make_gateway(text, env=_env(redis_server), registry=CollectorRegistry())
    shared = gw.app[GATEWAY].shared
    deadline = time.monotonic() + 5
    while not shared.active:
        assert time.monotonic() < deadline, "shared state never came up"
        await asyncio.sleep(0.05)
    assert (await gw.get("/v1/things/z", headers=BOB)).status == 200  # shared: Redis took the slot
    await asyncio.to_thread(redis_server.stop)
    deadline = time.monotonic() + 3
    while shared.active:
        assert time.monotonic() < deadline, "the fallback never engaged"
        await asyncio.sleep(0.05)
    resp = await gw.get("/v1/things/z", headers=BOB)
    error = (await resp.json())["error"]
    assert resp.status == 503 and error["code"] == "upstream_budget_exhausted", error
    assert "shared through Redis, which is unreachable" in error["message"], error
    await asyncio.to_thread(redis_server.start)
    deadline = time.monotonic() + 3
    while not shared.active:
        assert time.monotonic() < deadline, "sharing never resumed"
        await asyncio.sleep(0.05)
    resp = await gw.get("/v1/things/z", headers=BOB)
    error = (await resp.json())["error"]
    assert resp.status == 503 and error["code"] == "upstream_budget_exhausted", error
    assert "shared through Redis, which was unreachable" in error["message"], error  # the local share still binds
    assert "is used up" not in error["message"]
    metrics = await (await gw.get("/metrics")).text()
    assert _metric(metrics, 'gateway_shared_state_failures_total{reason="connection"}') >= 1
    assert _metric(metrics, 'gateway_shared_state_failures_total{reason="busy"}') == 0


async def test_a_burst_of_cached_requests_keeps_the_redis_cache_in_use(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The response cache's Redis client waits for a pooled connection too: a burst is not taken for
    Redis failing (which would send every request of the next ``retry_after`` to the upstream)."""
    fake, _server, url = await start_fake(aiohttp_server)
    text = YAML.format(url=url).replace("enabled: off", "enabled: on")
    target = '    targets: ["GET /things/{name}"]'
    text = text.replace(target, target + "\n    cache: {ttl: 30s}")
    gw = await make_gateway(text, env=_env(redis_server), registry=CollectorRegistry())
    base = str(gw.make_url("")).rstrip("/")

    async def one(s: aiohttp.ClientSession, path: str) -> str | None:
        async with s.get(base + path, headers=BOB) as r:
            await r.read()
            assert r.status == 200, (r.status, await r.text())
            return r.headers.get("X-Cache")

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as s:
        first = await asyncio.gather(*(one(s, f"/v1/things/c{i % 100}") for i in range(200)))
        again = await asyncio.gather(*(one(s, f"/v1/things/c{i % 100}") for i in range(200)))
    assert set(first) <= {"MISS", "HIT"} and len(fake.hits) == 100  # each path fetched once, the rest shared
    assert again == ["HIT"] * 200
    metrics = await (await gw.get("/metrics")).text()
    assert _metric(metrics, "gateway_cache_backend_errors_total") == 0
    assert "cache: redis" not in caplog.text


async def test_coming_back_writes_only_the_real_sends_into_the_shared_window_and_only_once(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer
) -> None:
    """Back from the local fallback, the sends made meanwhile are written to Redis once, by one call:
    not the padding that made the local share count the window as used (it would fill the hourly
    window of every replica), nor again by each call of a concurrent burst (with the slots the others
    hold while they ask Redis), which filled the minute window for everyone after a fallback."""
    fake, _server, url = await start_fake(aiohttp_server)
    text = YAML.format(url=url).replace("[480/1m, 4800/1h], max_wait: 5s", "[40/2s, 400/1h], max_wait: 0s")
    gw = await make_gateway(text.replace("retry_after: 1s", "retry_after: 200ms"), env=_env(redis_server))
    shared = gw.app[GATEWAY].shared

    async def until(active: bool) -> None:
        deadline = time.monotonic() + 5
        while shared.active != active:
            assert time.monotonic() < deadline, f"shared state never became {'active' if active else 'inactive'}"
            await asyncio.sleep(0.05)

    await until(True)
    assert (await gw.get("/v1/things/d", headers=BOB)).status == 200
    await asyncio.to_thread(redis_server.stop)
    await until(False)
    assert (await gw.get("/v1/things/d", headers=BOB)).status == 503  # the 2 s window counted as used
    await asyncio.sleep(2.3)  # ... until it has passed
    assert [(await gw.get("/v1/things/d", headers=BOB)).status for _ in range(3)] == [200] * 3  # local sends
    await asyncio.to_thread(redis_server.start)
    await until(True)
    statuses = await asyncio.gather(*(gw.get("/v1/things/d", headers=BOB) for _ in range(30)))
    assert [r.status for r in statuses] == [200] * 30  # 1 + 3 + 30 sends: within 40/2s
    store = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = [k async for k in store.scan_iter(match="rgqa3:s:b:*")]
        written = sum([await store.zcard(k) for k in keys])
    finally:
        await store.aclose()
    assert written == 3 + 30, written  # the local sends once and the burst (Redis restarted empty)
    assert len(fake.hits) == 1 + 3 + 30


SHIPPED_CLIENTS = """
clients:
  keys:
    alice: {key: {env: ALICE_KEY}, rate_limit: 5/10s}
    bob: {key: {env: BOB_KEY}}
"""
NOTEBOOKS = "/v1/posthog/projects/1/notebooks"


async def test_the_qa_report_two_replicas_of_the_shipped_routes_an_abusive_key_and_a_burst(
    sandbox_env: dict[str, str], redis_server: RedisServer, tmp_path: Path
) -> None:
    """QA's reproduction, smaller: two `gateway serve` replicas of the shipped routes.yaml sharing a
    Redis; a key limited to 5/10s floods one over 100 connections while an unlimited key asks both
    every 0.2 s (``no-cache``), then sends 180 uncached requests at once.  Before, the flood and the
    burst each made a replica fall back (MaxConnectionsError) and refuse PostHog calls for a window
    (and, once back, write its padding to Redis: "used up; retry in 3597s")."""
    routes = tmp_path / "r.yaml"
    routes.write_text(ROUTES.read_text() + SHIPPED_CLIENTS)
    env = {**sandbox_env, "ROUTEGATE_CACHE": "on", "ROUTEGATE_REDIS_URL": redis_server.url}
    env |= {"ALICE_KEY": "alice-key", "BOB_KEY": "bob-key"}
    alice_h = {"Authorization": "Bearer alice-key"}
    bob_h = {"Authorization": "Bearer bob-key", "Cache-Control": "no-cache"}
    args = ("--no-probes", "--watch-interval", "off", "--log-level", "info")
    async with serve(routes, env, *args) as (one, _p1, log_one), serve(routes, env, *args) as (two, _p2, log_two):
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as s:
            for base in (one, two):  # both share through Redis before the load starts
                deadline = time.monotonic() + 10
                while "gateway_shared_state_up 1.0" not in await (await s.get(base + "/metrics")).text():
                    assert time.monotonic() < deadline, "shared state never came up"
                    await asyncio.sleep(0.1)
            stop = asyncio.Event()
            alice: list[int] = []
            bob: list[int] = []

            async def flood() -> None:
                while not stop.is_set():
                    async with s.get(one + NOTEBOOKS + "?limit=2", headers=alice_h) as r:
                        await r.read()
                        alice.append(r.status)

            flooding = [asyncio.create_task(flood()) for _ in range(100)]
            try:
                for _ in range(12):
                    for base in (one, two):
                        async with s.get(base + NOTEBOOKS + "?limit=2", headers=bob_h) as r:
                            bob.append(r.status)
                    await asyncio.sleep(0.2)
            finally:
                stop.set()
                await asyncio.gather(*flooding)

            async def uncached(i: int) -> int:
                async with s.get(f"{one}{NOTEBOOKS}?limit={i % 50 + 1}", headers=bob_h) as r:
                    await r.read()
                    return r.status

            burst = await asyncio.gather(*(uncached(i) for i in range(180)))
            after = await uncached(7)
    assert bob == [200] * 24, bob
    assert len(alice) > 200 and set(alice) == {200, 429} and alice.count(200) <= 5 + 6, len(alice)
    assert burst == [200] * 180 and after == 200, sorted(set(burst))
    said = [line for line in log_one + log_two if "gateway.shared" in line]
    assert said and not [line for line in said if "redis failed" in line], said  # the first "redis answers" only
