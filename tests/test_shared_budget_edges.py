"""Shared budgets at their edges, through real HTTP and a real redis-server on 127.0.0.1: the
moment Redis goes away with calls still waiting for it, and a probe judging the budget by what
every instance used."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.server import GATEWAY
from tests.fake_upstream import start_fake
from tests.helpers.redis import RedisServer

YAML = """
cache:
  enabled: off
  backend: redis
  redis: {{url: {{env: ROUTEGATE_REDIS_URL}}, prefix: rgedges, timeout: 200ms, retry_after: 200ms}}
upstreams:
  fake:
    base_url: {url}
    timeouts: {{connect: 1s, read: 2s, total: 5s}}
    retries: {{attempts: 1, max_wait: 1s}}
    request_budget: {{limits: [{budget}], max_wait: 1s}}
    auth: {{bearer: {{env: FAKE_KEY}}}}
routes:
  get_thing:
    stable: GET /v1/things/{{name}}
    upstream: fake
    targets: ["GET /things/{{name}}"]
    probe: {{params: {{name: sample}}}}
"""


async def _two(make_gateway: Any, url: str, budget: str, redis: RedisServer) -> list[TestClient[Any, Any]]:
    """Two gateway instances sharing one Redis, each counting the other live."""
    text = YAML.format(url=url, budget=budget)
    env = {"FAKE_KEY": "fake-key", "ROUTEGATE_REDIS_URL": redis.url}
    gws = [await make_gateway(text, env=env, registry=CollectorRegistry()) for _ in range(2)]
    deadline = time.monotonic() + 5
    while not all(gw.app[GATEWAY].shared.active and gw.app[GATEWAY].shared.instances == 2 for gw in gws):
        assert time.monotonic() < deadline, "shared state never came up with both instances"
        await asyncio.sleep(0.05)
    return gws


async def test_calls_waiting_for_redis_when_it_stops_answering_never_go_over_the_shared_budget(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer
) -> None:
    fake, _server, url = await start_fake(aiohttp_server)
    one, two = await _two(make_gateway, url, "8/10s", redis_server)
    for i in range(8):  # the other instance uses the whole shared window
        assert (await two.get(f"/v1/things/t{i}")).status == 200
    assert fake.count() == 8
    # Redis stops answering while six calls wait for its reservation: each holds a local slot meanwhile,
    # and none of those (nor the other instance's reservations, invisible here) may be taken for free sends
    redis_server.pause()
    try:
        answers = await asyncio.gather(*(one.get(f"/v1/things/o{i}") for i in range(6)))
        bodies = [await r.json() for r in answers]
        assert [r.status for r in answers] == [503] * 6, bodies
        assert {b["error"]["code"] for b in bodies} == {"upstream_budget_exhausted"}
        # the caller learns why a budget it barely used is "used up": the other processes' share is unknown
        assert all("shared through Redis, which is unreachable" in b["error"]["message"] for b in bodies), bodies
        assert all(int(r.headers["Retry-After"]) >= 1 for r in answers)
        assert fake.count() == 8  # the window was full: the local fallback waits it out
        assert not one.app[GATEWAY].shared.active
    finally:
        redis_server.resume()


async def test_a_probe_leaves_the_budget_to_scripts_when_another_instance_used_it(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer
) -> None:
    fake, _server, url = await start_fake(aiohttp_server)
    one, two = await _two(make_gateway, url, "10/1m", redis_server)
    prober = two.app[GATEWAY].prober
    [first] = await prober.run_round()  # the budget is free: the probe runs (and spends one slot)
    assert first.outcome != "skipped", first
    assert fake.count("/things/sample") == 1
    for i in range(8):  # scripts on the other instance take 8 more: 9 of 10 used, 1 of them here
        assert (await one.get(f"/v1/things/s{i}")).status == 200
    await asyncio.sleep(1.2)  # at least one refresh re-reads the shared window
    [result] = await prober.run_round()
    assert result.outcome == "skipped" and result.code == "probe_budget_short", result
    assert "9 of 10/1m used by all processes" in result.message, result.message
    assert fake.count("/things/sample") == 1  # the probe spent nothing
    # a script on this instance still gets the last slot: the budget was left to it
    assert (await two.get("/v1/things/last")).status == 200


async def test_with_redis_down_a_probe_judges_by_this_instances_calls_against_its_local_share(
    aiohttp_server: Any, make_gateway: Any, redis_server: RedisServer
) -> None:
    fake, _server, url = await start_fake(aiohttp_server)
    _one, two = await _two(make_gateway, url, "10/1m", redis_server)
    for i in range(4):  # 4 of the shared 10: not short by the shared window
        assert (await two.get(f"/v1/things/s{i}")).status == 200
    await asyncio.to_thread(redis_server.stop)
    deadline = time.monotonic() + 5
    while two.app[GATEWAY].shared.active:
        assert time.monotonic() < deadline, "the instance never noticed Redis going away"
        await asyncio.sleep(0.05)
    # without Redis this instance keeps 1/2 of the budget: 4 of its 5 are used, the last one is the scripts'
    [result] = await two.app[GATEWAY].prober.run_round()
    assert result.outcome == "skipped" and result.code == "probe_budget_short", result
    assert "4 of 5/1m used" in result.message and "all processes" not in result.message, result.message
    assert fake.count("/things/sample") == 0
