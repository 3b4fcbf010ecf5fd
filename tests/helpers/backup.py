"""Shared by several test modules (moved from tests/test_backup.py): no test module imports another."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.server import build_app
from sandbox.observable import ObservableState
from sandbox.posthog import PostHogState
from sandbox.runner import Sandboxes, gateway_env, start_sandboxes

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "backup_notebooks.py"
BACKUP_KEY = "backup-key-0123456789abcdef"
ADMIN_KEY = "admin-key-fedcba9876543210"
KEYS_YAML = """
clients:
  keys:
    backup-job: {key: {env: BACKUP_KEY}, methods: [GET]}
admin:
  keys:
    ops: {key: {env: ROUTEGATE_ADMIN_KEY}}
"""
TYPES = ("public", "shared", "private")


@dataclass
class Run:
    code: int | None
    stdout: str
    stderr: str


@dataclass
class Stack:
    sandboxes: Sandboxes
    url: str
    routes: Path
    app: web.Application
    out: Path

    @property
    def obs(self) -> ObservableState:
        return self.sandboxes.observable_state

    @property
    def ph(self) -> PostHogState:
        return self.sandboxes.posthog_state

    def observable_expected(self, types: tuple[str, ...] = TYPES) -> dict[str, Any]:
        return {nb.id: nb for t in types for nb in self.obs.by_kind(t)}

    def document_fetches(self) -> int:
        return sum(n for (m, p), n in self.obs.requests.items() if m == "GET" and p.startswith("/document/"))

    def posthog_fetches(self) -> int:
        return sum(n for (m, p), n in self.ph.requests.items() if m == "GET" and p.count("/") == 6)

    def index(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "index.json").read_text())
        return data

    async def backup(self, *extra: str, key: str | None = BACKUP_KEY, env: dict[str, str] | None = None) -> Run:
        proc = await self.start(*extra, key=key, env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return Run(proc.returncode, out.decode(), err.decode())

    async def start(
        self, *extra: str, key: str | None = BACKUP_KEY, env: dict[str, str] | None = None
    ) -> asyncio.subprocess.Process:
        args = [str(SCRIPT), "--gateway", self.url, "--out", str(self.out), *extra]
        if key is not None:
            args += ["--api-key", key]
        full_env = {k: v for k, v in os.environ.items() if k not in ("POSTHOG_PROJECT_ID", "ROUTEGATE_API_KEY")}
        full_env.update(env or {})
        return await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=full_env
        )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    # small enough to be quick, big enough that every listing spans two pages of 50
    obs = ObservableState(public_count=60, shared_count=12, private_count=10, trash_count=3, other_public_count=4)
    ph = PostHogState(notebook_count=30, other_project_notebook_count=3, deleted_count=2)
    sandboxes = await start_sandboxes(observable_state=obs, posthog_state=ph)
    env = gateway_env(sandboxes)
    env |= {"BACKUP_KEY": BACKUP_KEY, "ROUTEGATE_ADMIN_KEY": ADMIN_KEY}
    text = (ROOT / "routes.yaml").read_text()
    assert "\nclients:" not in text and "\nadmin:" not in text, "routes.yaml grew keys: adapt KEYS_YAML"
    routes = tmp_path / "routes.yaml"
    routes.write_text(text + KEYS_YAML)
    app = build_app(routes, registry=CollectorRegistry(), env=env)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Stack(sandboxes, f"http://127.0.0.1:{port}", routes, app, tmp_path / "backup")
    finally:
        await runner.cleanup()
        await sandboxes.close()
