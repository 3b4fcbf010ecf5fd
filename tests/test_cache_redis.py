"""The shared Redis cache backend: two gateway replicas against a real redis-server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from sandbox.runner import Sandboxes
from tests.conftest import ROOT
from tests.helpers.cache import ALICE, BOB, CLIENTS, KEYS, LIST, OPS, POSTHOG
from tests.helpers.redis import RedisServer
from tests.processes import serve

REDIS_CACHE = """
cache:
  backend: redis
  redis: {url: {env: ROUTEGATE_REDIS_URL}, prefix: rgtest, timeout: 250ms, retry_after: 200ms}
"""


async def _replica(make_gateway: Any, env: dict[str, str], registry: CollectorRegistry | None = None) -> Any:
    return await make_gateway(POSTHOG + CLIENTS + REDIS_CACHE, env=env, registry=registry or CollectorRegistry())


def _env(sandbox_env: dict[str, str], redis_server: RedisServer) -> dict[str, str]:
    return {**sandbox_env, **KEYS, "ROUTEGATE_REDIS_URL": redis_server.url}


async def test_two_replicas_share_hits_and_invalidations(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes, redis_server: RedisServer
) -> None:
    env = _env(sandbox_env, redis_server)
    one, two = await _replica(make_gateway, env), await _replica(make_gateway, env)
    state = sandboxes.posthog_state
    a, b = (nb.short_id for nb in state.visible(1)[:2])
    lst, nb_a, nb_b = f"{LIST}?limit=5", f"{LIST}/{a}", f"{LIST}/{b}"
    for url in (lst, nb_a, nb_b):
        assert (await one.get(url, headers=ALICE)).headers["X-Cache"] == "MISS"
        resp = await two.get(url, headers=ALICE)
        assert resp.status == 200 and resp.headers["X-Cache"] == "HIT"  # filled by the other replica
    assert state.count("GET", "/api/projects/1/notebooks/") == 1
    assert state.count("GET", f"/api/projects/1/notebooks/{a}/") == 1
    # still isolated per client key across replicas
    assert (await two.get(lst, headers=BOB)).headers["X-Cache"] == "MISS"
    assert (await one.get(lst, headers=BOB)).headers["X-Cache"] == "HIT"
    # a write through replica two drops the entity and its collection for replica one
    resp = await two.patch(nb_a, json={"title": "Edited on replica two"}, headers=BOB)
    assert resp.status == 200
    resp = await one.get(nb_a, headers=ALICE)
    assert resp.headers["X-Cache"] == "MISS" and (await resp.json())["title"] == "Edited on replica two"
    resp = await one.get(lst, headers=ALICE)
    assert resp.headers["X-Cache"] == "MISS" and (await resp.json())["items"][0]["title"] == "Edited on replica two"
    assert (await one.get(nb_b, headers=ALICE)).headers["X-Cache"] == "HIT"  # a sibling is untouched
    # an admin purge on replica one empties it for replica two
    resp = await one.post("/admin/cache/purge", json={"route": "ph_nb"}, headers=OPS)
    assert resp.status == 200 and (await resp.json())["deleted"] == 2
    assert (await two.get(nb_b, headers=ALICE)).headers["X-Cache"] == "MISS"
    assert (await two.get(lst, headers=ALICE)).headers["X-Cache"] == "HIT"
    # nothing secret is stored in the shared cache: keys and values hold no client key or credential
    store = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = [k async for k in store.scan_iter(match="rgtest:*")]
        assert any(k.startswith(b"rgtest:e:ph_list:/v1/posthog/projects/1/notebooks#") for k in keys)
        values = [v for v in await store.mget(keys) if v is not None]
    finally:
        await store.aclose()
    blob = b"\n".join(keys + values)
    for secret in [*KEYS.values(), env["POSTHOG_API_KEY"]]:
        assert secret.encode() not in blob


async def test_gateway_keeps_serving_when_redis_goes_away(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes, redis_server: RedisServer
) -> None:
    registry = CollectorRegistry()
    gw = await _replica(make_gateway, _env(sandbox_env, redis_server), registry)
    state = sandboxes.posthog_state
    url = f"{LIST}/{state.visible(1)[0].short_id}"
    assert (await gw.get(url, headers=ALICE)).headers["X-Cache"] == "MISS"
    assert (await gw.get(url, headers=ALICE)).headers["X-Cache"] == "HIT"
    redis_server.stop()
    for _ in range(3):
        resp = await gw.get(url, headers=ALICE)
        assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"  # straight from the upstream
    assert state.count("GET", url.replace("/v1/posthog", "/api") + "/") == 4
    errors = registry.get_sample_value("gateway_cache_backend_errors_total", {"backend": "redis", "op": "lookup"})
    assert errors is not None and errors >= 1
    assert (await gw.patch(url, json={"title": "Written while Redis is down"}, headers=ALICE)).status == 200
    resp = await gw.post("/admin/cache/purge?all=true", headers=OPS)
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "cache_unavailable"
    # Redis comes back (empty): after retry_after the gateway uses it again
    redis_server.start()
    await asyncio.sleep(0.3)
    assert (await gw.get(url, headers=ALICE)).headers["X-Cache"] == "MISS"
    resp = await gw.get(url, headers=ALICE)
    assert resp.headers["X-Cache"] == "HIT" and (await resp.json())["title"] == "Written while Redis is down"


async def test_an_invalidation_redis_missed_is_written_when_it_answers_again(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes, redis_server: RedisServer
) -> None:
    env = _env(sandbox_env, redis_server)
    registry = CollectorRegistry()
    one, two = await _replica(make_gateway, env), await _replica(make_gateway, env, registry)
    url = f"{LIST}/{sandboxes.posthog_state.visible(1)[0].short_id}"
    assert (await one.get(url, headers=ALICE)).headers["X-Cache"] == "MISS"
    assert (await two.get(url, headers=ALICE)).headers["X-Cache"] == "HIT"
    redis_server.pause()  # a partition: Redis keeps its data but does not answer
    try:
        resp = await two.patch(url, json={"title": "Edited during the partition"}, headers=ALICE)
        assert resp.status == 200  # the write is not held up by the cache
    finally:
        redis_server.resume()
    labels = {"backend": "redis", "op": "invalidate"}
    assert registry.get_sample_value("gateway_cache_backend_errors_total", labels) == 1
    # replica two writes the held invalidation by itself (within retry_after); replica one then misses
    deadline = time.monotonic() + 5
    while True:
        resp = await one.get(url, headers=ALICE)
        if resp.headers["X-Cache"] == "MISS" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert resp.headers["X-Cache"] == "MISS"
    assert (await resp.json())["title"] == "Edited during the partition"


async def test_redis_backend_without_a_url_serves_from_the_upstream(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    registry = CollectorRegistry()
    gw = await _replica(make_gateway, {**sandbox_env, **KEYS}, registry)  # ROUTEGATE_REDIS_URL unset
    for _ in range(2):
        resp = await gw.get(f"{LIST}?limit=2", headers=ALICE)
        assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
    assert sandboxes.posthog_state.count("GET", "/api/projects/1/notebooks/") == 2
    errors = registry.get_sample_value("gateway_cache_backend_errors_total", {"backend": "redis", "op": "connect"})
    assert errors is not None and errors >= 2


async def test_replicas_with_different_hash_seeds_share_one_cache_entry(
    sandbox_env: dict[str, str], sandboxes: Sandboxes, redis_server: RedisServer
) -> None:
    """The route fingerprint in the cache key was a repr of the route, whose frozensets (a shape's
    ``string|null``) are ordered by the per-process hash seed: replicas missed each other's entries
    and a restarted gateway its own, stale copies included."""
    env = {**sandbox_env, "ROUTEGATE_CACHE": "on", "ROUTEGATE_REDIS_URL": redis_server.url}
    args = ("--workers", "1", "--no-probes", "--watch-interval", "off", "--log-level", "warning")
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    url = f"/v1/posthog/projects/1/notebooks/{short_id}"  # its shape has `string|null` fields
    routes = ROOT / "routes.yaml"
    async with (
        serve(routes, {**env, "PYTHONHASHSEED": "0"}, *args) as (one, _p1, _l1),
        serve(routes, {**env, "PYTHONHASHSEED": "1"}, *args) as (two, _p2, _l2),
        aiohttp.ClientSession() as http,
    ):
        async with http.get(one + url) as resp:
            assert resp.status == 200 and resp.headers["X-Cache"] == "MISS", await resp.text()
        async with http.get(two + url) as resp:
            assert resp.status == 200 and resp.headers["X-Cache"] == "HIT"
    assert sandboxes.posthog_state.count("GET", f"/api/projects/1/notebooks/{short_id}/") == 1
