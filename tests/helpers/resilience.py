"""Shared by several test modules (moved from tests/test_resilience.py): no test module imports another."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

YAML = """
upstreams:
  fake:
    base_url: {url}
    timeouts: {{connect: 1s, read: 0.5s, total: 5s}}
    max_connections: {max_connections}
    retries: {{{retries}}}
    circuit_breaker: {{{breaker}}}
    {budget}
    auth: {{bearer: {{env: FAKE_KEY}}}}
routes:
  get_thing:
    stable: GET /v1/things/{{name}}
    upstream: fake
    targets: ["GET /things/{{name}}"]
  put_thing:
    stable: PUT /v1/things/{{name}}
    upstream: fake
    targets: ["PUT /things/{{name}}"]
  post_thing:
    stable: POST /v1/things/{{name}}
    upstream: fake
    targets: ["POST /things/{{name}}"]
"""
FAST_RETRIES = "attempts: 3, backoff: 5ms, max_backoff: 20ms, max_wait: 3s"


def _yaml(
    url: str,
    *,
    retries: str = FAST_RETRIES,
    breaker: str = "failures: 0",
    budget: str = "",
    max_connections: int = 100,
) -> str:
    return YAML.format(url=url, retries=retries, breaker=breaker, budget=budget, max_connections=max_connections)


async def _gateway(
    make_gateway: Any, yaml_text: str, env: dict[str, str] | None = None
) -> tuple[TestClient[Any, Any], CollectorRegistry]:
    registry = CollectorRegistry()
    gw = await make_gateway(yaml_text, env=env if env is not None else {"FAKE_KEY": "fake-key"}, registry=registry)
    return gw, registry
