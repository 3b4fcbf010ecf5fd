"""QA round 3, shared state: a burst of concurrent requests must not make a process fall back to
local shares while Redis is healthy, and a replica honouring another's open breaker says so.
Everything here runs against a real redis-server on 127.0.0.1 (``redis_server``, tests/helpers/redis.py)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from gateway.server import GATEWAY
from tests.fake_upstream import Reply, start_fake
from tests.helpers.redis import RedisServer

YAML = """
cache:
  enabled: off
  backend: redis
  redis: {{url: {{env: ROUTEGATE_REDIS_URL}}, prefix: rgqa3, timeout: 250ms, retry_after: 1s}}
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
