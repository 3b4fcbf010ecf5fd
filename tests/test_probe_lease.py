"""Probes run once per deployment: real ``gateway serve`` processes share a real redis-server."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from gateway.server import build_app
from sandbox.runner import Sandboxes
from tests.helpers.redis import RedisServer
from tests.helpers.workers import _children
from tests.processes import free_port, serve

INTERVAL = 1.0
CONFIG = """
probes: {interval: 1s, jitter: 0s, timeout: 2s}
cache:
  backend: redis
  redis: {url: {env: ROUTEGATE_REDIS_URL}, prefix: rglease, timeout: 250ms, retry_after: 200ms}
upstreams:
  posthog:
    base_url: ${POSTHOG_URL}
    auth: {bearer: {env: POSTHOG_API_KEY}}
routes:
  ph_list:
    stable: GET /v1/posthog/projects/{project_id}/notebooks
    upstream: posthog
    pagination: {style: offset, page_size: 100}
    targets: ["GET /api/projects/{project_id}/notebooks/"]
    probe: {params: {project_id: "1"}}
    response:
      items: {id: short_id, title: title}
"""
PROBED = "/api/projects/1/notebooks/"


def _instance(pid: int) -> str:
    return f"{socket.gethostname()}-{pid}"


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(CONFIG)
    return path


async def _holder(url: str) -> str | None:
    store = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        raw = await store.get("rglease:probes:lease")
        return None if raw is None else str(raw)
    finally:
        await store.aclose()


async def _wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout: float) -> float:
    """Poll the async ``check()`` until it is true; returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


async def _page(base: str, path: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(base + path) as resp:
        assert resp.status == 200
        return await resp.text()


async def test_only_the_holder_probes_and_every_instance_shows_its_results(
    tmp_path: Path,
    sandboxes: Sandboxes,
    sandbox_env: dict[str, str],
    redis_server: RedisServer,
) -> None:
    env = {**sandbox_env, "ROUTEGATE_REDIS_URL": redis_server.url}
    config = _config(tmp_path)
    state = sandboxes.posthog_state
    async with serve(config, env) as (one, p1, _), serve(config, env) as (two, p2, _):
        await _wait_for("an instance holds the lease", lambda: _held(redis_server.url), 5)
        holder = await _holder(redis_server.url)
        assert holder in {_instance(p1.pid), _instance(p2.pid)}
        await _wait_for("both pages name the holder", lambda: _both_show(one, two, holder), 5)
        before = state.count("GET", PROBED)
        await asyncio.sleep(3 * INTERVAL)
        probes = state.count("GET", PROBED) - before
        assert 1 <= probes <= 4, probes  # one instance probing each second; two would send ~6
        pids = {one: p1.pid, two: p2.pid}
        for base in (one, two):
            page = await _page(base, "/status")
            me = _instance(pids[base])
            who = "this instance" if me == holder else f"another instance; this is <code>{me}</code>"
            assert f"by instance <code>{holder}</code> ({who})" in page
            assert '<tr data-route="ph_list" data-state="up">' in page
            metrics = await _page(base, "/metrics")
            assert 'gateway_route_up{route="ph_list"} 1.0' in metrics  # the holder's result, on every instance


async def _both_show(one: str, two: str, holder: str | None) -> bool:
    pages = [await _page(one, "/status"), await _page(two, "/status")]
    return all(f"by instance <code>{holder}</code>" in p for p in pages)


async def test_another_instance_takes_over_within_one_interval_when_the_holder_dies(
    tmp_path: Path,
    sandboxes: Sandboxes,
    sandbox_env: dict[str, str],
    redis_server: RedisServer,
) -> None:
    env = {**sandbox_env, "ROUTEGATE_REDIS_URL": redis_server.url}
    config = _config(tmp_path)
    async with serve(config, env) as (one, p1, _), serve(config, env) as (two, p2, _):
        await _wait_for("an instance holds the lease", lambda: _held(redis_server.url), 5)
        holder = await _holder(redis_server.url)
        procs = {_instance(p1.pid): (p1, one), _instance(p2.pid): (p2, two)}
        assert holder in procs
        dead, _ = procs.pop(holder)
        ((heir, (_, heir_url)),) = procs.items()
        await _wait_for("the heir follows the holder", lambda: _shows(heir_url, holder), 5)
        dead.send_signal(signal.SIGKILL)  # no goodbye: its lease has to expire
        await dead.wait()
        took = await _wait_for("the heir holds the lease", lambda: _is_holder(redis_server.url, heir), 5)
        assert took < INTERVAL, took
        await _wait_for("the heir probes and says so", lambda: _shows(heir_url, heir), 2 * INTERVAL)
        page = await _page(heir_url, "/status")
        assert "by instance" in page and "this instance" in page


async def _shows(base: str, instance: str | None) -> bool:
    return f"by instance <code>{instance}</code>" in await _page(base, "/status")


async def _held(url: str) -> bool:
    return await _holder(url) is not None


async def _is_holder(url: str, instance: str) -> bool:
    return await _holder(url) == instance


async def test_without_redis_each_instance_probes_for_itself(
    tmp_path: Path, sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    env = {**sandbox_env, "ROUTEGATE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # nobody listens
    async with serve(_config(tmp_path), env) as (base, proc, lines):
        me = _instance(proc.pid)
        await _wait_for("it probes for itself", lambda: _shows(base, me), 5)
        assert 'gateway_route_up{route="ph_list"} 1.0' in await _page(base, "/metrics")
        assert any("Redis is not answering" in line for line in lines), lines


async def test_every_worker_shows_the_holders_results(
    tmp_path: Path,
    sandboxes: Sandboxes,
    sandbox_env: dict[str, str],
    redis_server: RedisServer,
) -> None:
    env = {**sandbox_env, "ROUTEGATE_REDIS_URL": redis_server.url}
    args = ("--workers", "2", "--watch-interval", "off")
    async with serve(_config(tmp_path), env, *args) as (base, proc, _):
        deadline = time.monotonic() + 20
        while len(workers := _children(proc.pid)) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await _wait_for("a worker holds the lease", lambda: _held(redis_server.url), 5)
        holder = await _holder(redis_server.url)
        assert holder in {_instance(pid) for pid in workers}
        (follower,) = {_instance(pid) for pid in workers} - {holder}
        wanted = {
            f"by instance <code>{holder}</code> ({who})"
            for who in ("this instance", f"another instance; this is <code>{follower}</code>")
        }

        async def both_workers_say_so() -> bool:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
                for _ in range(10):  # new connections: SO_REUSEPORT spreads them over both workers
                    async with s.get(base + "/status") as resp:
                        page = await resp.text()
                    wanted.difference_update({w for w in wanted if w in page})
            return not wanted

        await _wait_for("both workers name the holder", both_workers_say_so, 10)


async def test_a_follower_shows_a_broken_result_it_did_not_probe_itself(
    aiohttp_client: Any,
    tmp_path: Path,
    sandboxes: Sandboxes,
    sandbox_env: dict[str, str],
    redis_server: RedisServer,
) -> None:
    store = aioredis.Redis.from_url(redis_server.url)
    try:  # another instance holds the lease and has shared a broken result
        await store.set("rglease:probes:lease", "elsewhere-1", px=60_000)
        broken = {
            "route": "ph_list",
            "outcome": "broken",
            "code": "upstream_timeout",
            "message": "the upstream did not answer within 2s",
            "duration": 2.0,
            "at": time.time(),
        }
        shared = {"by": "elsewhere-1", "last_round": time.time(), "results": [broken]}
        await store.set("rglease:probes:results", json.dumps(shared), px=60_000)
    finally:
        await store.aclose()
    registry = CollectorRegistry()
    env = {**sandbox_env, "ROUTEGATE_REDIS_URL": redis_server.url}
    client = await aiohttp_client(build_app(_config(tmp_path), registry=registry, env=env, probes=True))

    async def down_here() -> bool:
        return registry.get_sample_value("gateway_route_up", {"route": "ph_list"}) == 0

    await _wait_for("the holder's result reaches gateway_route_up", down_here, 5)
    labels = {"route": "ph_list", "code": "upstream_timeout"}
    assert registry.get_sample_value("gateway_route_failure_info", labels) == 1
    page = await (await client.get("/status")).text()
    assert '<tr data-route="ph_list" data-state="down">' in page
    assert "the upstream did not answer within 2s" in page
    assert "by instance <code>elsewhere-1</code> (another instance; this is <code>" in page
    await asyncio.sleep(2 * INTERVAL)
    assert sandboxes.posthog_state.count("GET", PROBED) == 0  # a follower sends no probe of its own


async def test_while_redis_does_not_answer_a_follower_probes_for_itself(
    aiohttp_client: Any,
    tmp_path: Path,
    sandboxes: Sandboxes,
    sandbox_env: dict[str, str],
    redis_server: RedisServer,
) -> None:
    store = aioredis.Redis.from_url(redis_server.url)
    try:
        await store.set("rglease:probes:lease", "elsewhere-1", px=60_000)
    finally:
        await store.aclose()
    env = {**sandbox_env, "ROUTEGATE_REDIS_URL": redis_server.url}
    app = build_app(_config(tmp_path), registry=CollectorRegistry(), env=env, probes=True)
    client = await aiohttp_client(app)
    await asyncio.sleep(INTERVAL)
    assert sandboxes.posthog_state.count("GET", PROBED) == 0  # following elsewhere-1 (no results yet)
    redis_server.pause()
    try:

        async def probing_here() -> bool:
            page = await (await client.get("/status")).text()
            return "(this instance)" in page

        await _wait_for("it probes for itself", probing_here, 5)
        assert sandboxes.posthog_state.count("GET", PROBED) >= 1
    finally:
        redis_server.resume()
    await asyncio.sleep(INTERVAL)  # Redis answers again: elsewhere-1 still holds the lease
    before = sandboxes.posthog_state.count("GET", PROBED)
    await asyncio.sleep(2 * INTERVAL)
    assert sandboxes.posthog_state.count("GET", PROBED) == before


async def test_a_holder_that_stops_hands_the_lease_over_at_once(
    aiohttp_client: Any,
    tmp_path: Path,
    sandboxes: Sandboxes,
    sandbox_env: dict[str, str],
    redis_server: RedisServer,
) -> None:
    env = {**sandbox_env, "ROUTEGATE_REDIS_URL": redis_server.url}
    client = await aiohttp_client(build_app(_config(tmp_path), registry=CollectorRegistry(), env=env, probes=True))
    await _wait_for("it holds the lease", lambda: _held(redis_server.url), 5)
    await client.close()  # the app's cleanup, as on SIGTERM
    assert await _holder(redis_server.url) is None
