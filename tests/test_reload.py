"""Hot reload under load, in-flight pinning, and the file watcher, through real HTTP."""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.config import ConfigError
from gateway.digest import digest
from gateway.reload import FileWatcher
from gateway.server import GATEWAY, build_app
from sandbox.runner import Sandboxes
from tests.helpers.reload import broken, generation

ADMIN = {"X-API-Key": "ak_" + "a" * 30}


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def reloads(registry: CollectorRegistry, result: str) -> float:
    return registry.get_sample_value("gateway_config_reloads_total", {"result": result}) or 0.0


Start = Callable[..., Awaitable[tuple[TestClient[Any, Any], Path, CollectorRegistry]]]


@pytest.fixture
def start(aiohttp_client: Any, sandbox_env: dict[str, str], tmp_path: Path) -> Start:
    async def factory(text: str, watch: float | None = None) -> tuple[TestClient[Any, Any], Path, CollectorRegistry]:
        path = tmp_path / "routes.yaml"
        path.write_text(text)
        registry = CollectorRegistry()
        env = {**sandbox_env, "ADMIN_KEY": ADMIN["X-API-Key"]}
        client: TestClient[Any, Any] = await aiohttp_client(build_app(path, registry=registry, env=env, watch=watch))
        return client, path, registry

    return factory


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_no_request_fails_while_configs_are_reloaded_under_load(start: Start, sandboxes: Sandboxes) -> None:
    a, b = generation("A"), generation("B")
    gw, path, registry = await start(a, watch=0.02)  # the watcher is a third reload source
    gateway = gw.app[GATEWAY]
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    sandboxes.posthog_state.latency_ms = 3  # requests are in flight while configs swap
    urls = [
        f"/v1/posthog/projects/1/notebooks/{short_id}",
        "/v1/posthog/projects/1/notebooks?limit=3",
        "/v1/observable/notebooks?type=public,shared&limit=2",
    ]
    stop = asyncio.Event()
    seen: Counter[str] = Counter()
    failures: list[str] = []

    async def worker() -> None:
        n = 0
        while not stop.is_set():
            url = urls[n % len(urls)]
            n += 1
            try:
                resp = await gw.get(url)
                body = await resp.json()
            except Exception as exc:  # a dropped connection is a failure too
                failures.append(f"{url}: {exc!r}")
                continue
            if resp.status != 200:
                failures.append(f"{url}: {resp.status} {body}")
            elif "generation" in body:
                seen[body["generation"]] += 1

    async def serving(text: str) -> bool:
        return gateway.runtime.config.digest == digest(text)

    workers = [asyncio.create_task(worker()) for _ in range(24)]
    rng = random.Random(5)
    outcomes: Counter[str] = Counter()
    try:
        for step in range(45):
            text = (a, b, broken(b))[step % 3]
            write_atomically(path, text)
            how = rng.choice(("admin", "direct", "watcher"))
            if how == "admin":
                resp = await gw.post("/admin/reload", headers=ADMIN)
                assert resp.status == (422 if step % 3 == 2 else 200), await resp.text()
                outcomes[f"admin {resp.status}"] += 1
            elif how == "direct":
                try:
                    gateway.reload()
                    outcomes["direct ok"] += 1
                except ConfigError:
                    assert step % 3 == 2
                    outcomes["direct refused"] += 1
            if step % 3 != 2:
                await wait_for(lambda t=text: serving(t))  # type: ignore[misc]
            await asyncio.sleep(0.03)  # the watcher may get there first; it never loads the same digest twice
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert failures == []
    assert seen["A"] > 20 and seen["B"] > 20, seen  # both configs really served, nothing else
    assert set(seen) == {"A", "B"}
    assert reloads(registry, "success") >= 30 and reloads(registry, "failure") >= 15, outcomes
    assert (await gw.get("/healthz")).status == 200


async def test_an_in_flight_request_finishes_on_the_config_it_started_with(start: Start, sandboxes: Sandboxes) -> None:
    gw, path, _ = await start(generation("A"))
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    url = f"/v1/posthog/projects/1/notebooks/{short_id}"
    sandboxes.posthog_state.latency_ms = 400
    slow = asyncio.create_task(gw.get(url))

    async def reached_upstream() -> bool:
        return sandboxes.posthog_state.total_requests == 1

    await wait_for(reached_upstream)
    path.write_text(generation("B"))
    assert (await gw.post("/admin/reload", headers=ADMIN)).status == 200
    sandboxes.posthog_state.latency_ms = 0
    fresh = await gw.get(url)
    assert (await fresh.json())["generation"] == "B"
    resp = await slow
    assert resp.status == 200 and (await resp.json())["generation"] == "A"


async def test_watcher_loads_a_changed_file_and_refuses_a_partial_one(
    start: Start, sandboxes: Sandboxes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    a, b = generation("A"), generation("B")
    gw, path, registry = await start(a, watch=0.05)

    async def serving(text: str) -> bool:
        return bool((await (await gw.get("/readyz")).json())["digest"] == digest(text))

    async def failures(n: int) -> bool:
        return reloads(registry, "failure") == n

    # a writer that stops half-way: the torn file is refused, the old config keeps serving
    path.write_text(broken(b))
    await wait_for(lambda: failures(1))
    assert await serving(a)
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "config reload failed" in m and f"{path}:" in m and "missing required key 'targets'" in m for m in logged
    )
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    resp = await gw.get(f"/v1/posthog/projects/1/notebooks/{short_id}")
    assert (await resp.json())["generation"] == "A"
    await asyncio.sleep(0.3)
    assert reloads(registry, "failure") == 1  # the same bad content is not retried until it changes
    # ... and the next change, the finished file, is loaded
    path.write_text(b)
    await wait_for(lambda: serving(b))
    resp = await gw.get(f"/v1/posthog/projects/1/notebooks/{short_id}")
    assert (await resp.json())["generation"] == "B"
    # an atomic replace (new inode) is seen too
    write_atomically(path, a)
    await wait_for(lambda: serving(a))
    assert reloads(registry, "failure") == 1


async def test_an_invalid_save_undone_clears_the_failure(start: Start, sandboxes: Sandboxes) -> None:
    """The file back to what is served: a success is recorded, so RoutegateConfigReloadFailed resolves."""
    a = generation("A")
    _gw, path, registry = await start(a, watch=0.05)
    path.write_text(broken(a))
    await wait_for(lambda: _async(reloads(registry, "failure") == 1))
    successes = reloads(registry, "success")
    path.write_text(a)  # the operator puts the served file back
    await wait_for(lambda: _async(reloads(registry, "success") == successes + 1))
    failed = registry.get_sample_value("gateway_config_last_reload_failure_timestamp_seconds")
    loaded = registry.get_sample_value("gateway_config_last_reload_success_timestamp_seconds")
    assert failed is not None and loaded is not None and loaded >= failed
    await asyncio.sleep(0.3)
    assert reloads(registry, "success") == successes + 1  # once: the good file is not reloaded again and again


async def _async(value: bool) -> bool:
    return value


async def test_watcher_waits_for_a_write_in_progress_to_settle(start: Start, sandboxes: Sandboxes) -> None:
    a, b = generation("A"), generation("B")
    gw, path, registry = await start(a)  # no background watcher: this one is driven step by step
    gateway = gw.app[GATEWAY]
    applied: list[str] = []

    def apply(text: str) -> None:
        applied.append(text)
        gateway.reload(path, text=text)

    watcher = FileWatcher(path, apply, lambda: gateway.runtime.config.digest, interval=0.2)
    assert await watcher.poll() is False  # the first look finds what is being served
    cut = len(broken(b))
    with path.open("w") as fh:  # an editor saving in two chunks, 50 ms apart
        fh.write(b[:cut])
        fh.flush()
        looking = asyncio.create_task(watcher.poll())  # notices the change while the file is torn
        await asyncio.sleep(0.05)
        fh.write(b[cut:])
    assert await looking is True
    assert applied == [b]  # the torn half was never read, let alone validated
    assert reloads(registry, "failure") == 0
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    resp = await gw.get(f"/v1/posthog/projects/1/notebooks/{short_id}")
    assert (await resp.json())["generation"] == "B"
    assert await watcher.poll() is False  # nothing changed since


async def test_a_routes_file_that_disappears_is_a_refused_reload_operators_see(start: Start) -> None:
    """Gone (a ConfigMap key renamed, a deploy that deleted it) or not UTF-8: the old config keeps serving,
    and the failure is counted and shown once, as for a bad edit, until the file is back."""
    a = generation("A")
    gw, path, registry = await start(a, watch=0.05)

    async def failures(n: int) -> bool:
        return reloads(registry, "failure") == n

    path.unlink()
    await wait_for(lambda: failures(1))
    assert registry.get_sample_value("gateway_config_last_reload_failure_timestamp_seconds")
    page = await (await gw.get("/status")).text()
    assert "reload refused" in page and "cannot read: No such file or directory" in page
    assert (await (await gw.get("/readyz")).json())["digest"] == digest(a)  # still serving
    await asyncio.sleep(0.3)
    assert reloads(registry, "failure") == 1  # counted once while it stays gone
    successes = reloads(registry, "success")
    path.write_text(a)  # back as it was: the failure is cleared by a success
    await wait_for(lambda: _async(reloads(registry, "success") == successes + 1))
    assert "reload refused" not in await (await gw.get("/status")).text()
    # a file saved in another encoding: refused with its line, counted once
    path.write_bytes(a.encode() + b"# caf\xe9\n")
    await wait_for(lambda: failures(2))
    page = await (await gw.get("/status")).text()
    assert "not UTF-8 text: byte 0xe9" in page
    await asyncio.sleep(0.3)
    assert reloads(registry, "failure") == 2
    refused = await gw.post("/admin/reload", headers=ADMIN)  # a JSON 422 naming the line, not a 500
    assert refused.status == 422 and "not UTF-8" in await refused.text()
    path.unlink()  # gone again after having been read: counted again
    await wait_for(lambda: failures(4))
