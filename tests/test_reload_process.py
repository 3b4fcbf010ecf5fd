"""A real ``gateway serve`` process: SIGHUP reloads, the file watcher picks up edits."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp

from gateway.digest import digest
from sandbox.runner import Sandboxes
from tests.helpers.reload import broken, generation
from tests.processes import serve


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.json()


async def wait_digest(base: str, text: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if (await get_json(f"{base}/readyz"))["digest"] == digest(text):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the gateway did not load the new file")


async def metric(base: str, line_prefix: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.split()[-1])
    return 0.0


async def test_sighup_reloads_the_file_and_refuses_an_invalid_one(
    sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    a, b = generation("A"), generation("B")
    config.write_text(a)
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    async with serve(config, sandbox_env, "--watch-interval", "off") as (base, proc, lines):
        url = f"{base}/v1/posthog/projects/1/notebooks/{short_id}"
        assert (await get_json(url))["generation"] == "A"
        config.write_text(broken(b))
        proc.send_signal(signal.SIGHUP)
        for _ in range(200):
            if await metric(base, 'gateway_config_reloads_total{result="failure"}') == 1:
                break
            await asyncio.sleep(0.05)
        assert (await get_json(f"{base}/readyz"))["digest"] == digest(a)
        assert (await get_json(url))["generation"] == "A"
        config.write_text(b)
        proc.send_signal(signal.SIGHUP)
        await wait_digest(base, b)
        assert (await get_json(url))["generation"] == "B"
    records = [json.loads(ln) for ln in lines if ln.startswith("{")]
    errors = [r for r in records if r["level"] == "error"]
    assert any(
        "config reload failed" in e["message"]
        and f"{config}:" in e["message"]
        and "missing required key" in e["message"]
        for e in errors
    ), lines


async def test_the_watcher_picks_up_an_edited_file(
    sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "routes.yaml"
    a, b = generation("A"), generation("B")
    config.write_text(a)
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    async with serve(config, sandbox_env, "--watch-interval", "100ms") as (base, _proc, _lines):
        url = f"{base}/v1/posthog/projects/1/notebooks/{short_id}"
        assert (await get_json(url))["generation"] == "A"
        config.write_text(b)
        await wait_digest(base, b)
        assert (await get_json(url))["generation"] == "B"
        assert await metric(base, 'gateway_config_reloads_total{result="failure"}') == 0
