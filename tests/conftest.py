"""Shared fixtures: real sandbox upstreams on 127.0.0.1 and a gateway wired to them."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway import credential_id, logs
from gateway.cache import policy
from gateway.server import build_app
from sandbox.runner import Sandboxes, gateway_env, start_sandboxes

ROOT = Path(__file__).resolve().parent.parent
ROUTES = ROOT / "routes.yaml"

#: pytester runs a throwaway pytest session (tests/test_suite_guards.py: a hung test fails, not hangs)
# shared fixtures: stack, redis_server, generated (the client made from /openapi.json)
pytest_plugins = ["pytester", "tests.helpers.backup", "tests.helpers.redis", "tests.helpers.generated"]

GatewayFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture(autouse=True)
def _fresh_memos() -> None:
    """Each test starts without the cache policy's process-wide memos (markers, credential digests).

    Otherwise only the first test to use a path computes its markers: a test would pass or fail by
    what ran before it, and mutation testing would credit the code to that first test alone.
    """
    policy._read_markers.cache_clear()
    credential_id._digest.cache_clear()


@pytest.fixture
async def sandboxes() -> AsyncIterator[Sandboxes]:
    sb = await start_sandboxes()
    try:
        yield sb
    finally:
        await sb.close()


@pytest.fixture
def sandbox_env(sandboxes: Sandboxes) -> dict[str, str]:
    """The env an operator would set to point the shipped routes.yaml at the sandboxes.

    The response cache is switched off here so that tests of other behaviour see every
    request reach the sandbox; tests/test_cache*.py switch it on (the shipped default).
    """
    return {"ROUTEGATE_CACHE": "off", **gateway_env(sandboxes)}


@pytest.fixture
def make_gateway(aiohttp_client: Any, sandbox_env: dict[str, str], tmp_path: Path) -> GatewayFactory:
    """Build a gateway from routes.yaml (or given YAML text, written to a file) with a chosen env."""
    counter = iter(range(1000))

    async def factory(
        yaml_text: str | None = None,
        env: dict[str, str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> TestClient[Any, Any]:
        e = sandbox_env if env is None else env
        path = ROUTES
        if yaml_text is not None:
            path = tmp_path / f"routes-{next(counter)}.yaml"
            path.write_text(yaml_text)
        app = build_app(path, registry=registry or CollectorRegistry(), env=e)
        client: TestClient[Any, Any] = await aiohttp_client(app)
        return client

    return factory


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> TestClient[Any, Any]:
    return await make_gateway()


def need_binary(binary: str) -> str:
    """The path of a real server or tool a test drives; missing, it fails under CI (where
    scripts/install-test-deps.sh installs it) and skips elsewhere."""
    import os
    import shutil

    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not installed (scripts/install-test-deps.sh installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def access_lines() -> Iterator[tuple[logs.AccessLines, io.StringIO]]:
    """gateway serve's JSON logging, its stream captured: the fast access-line writer and what it wrote;
    a secret (``secret-key-123456``) the redactor hides.  The root logger is restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    formatter = logs.setup("info")
    formatter.redactor.source = lambda: ["secret-key-123456"]
    stream = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    fast = logs.access_lines()
    assert fast is not None
    try:
        yield fast, stream
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
