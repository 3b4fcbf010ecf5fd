"""Each route's pipeline is composed once at load, from only the stages the route configures."""

from __future__ import annotations

from typing import Any

from gateway.proxy import Proxy
from gateway.server import GATEWAY
from sandbox.runner import Sandboxes
from tests.helpers.cache import KEYS, LIST, POSTHOG

NO_CACHE = """
upstreams:
  posthog:
    base_url: ${POSTHOG_URL}
    auth: {bearer: {env: POSTHOG_API_KEY}}
routes:
  plain:
    stable: GET /v1/plain/projects/{project_id}/notebooks/{short_id}
    upstream: posthog
    targets: ["GET /api/projects/{project_id}/notebooks/{short_id}/"]
  create:
    stable: POST /v1/plain/projects/{project_id}/notebooks
    upstream: posthog
    targets: ["POST /api/projects/{project_id}/notebooks/"]
"""


def _proxy(gw: Any) -> Proxy:
    proxy: Proxy = gw.server.app[GATEWAY].runtime.proxy
    return proxy


async def test_each_route_lists_only_the_stages_it_configures(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    gw = await make_gateway(POSTHOG, env={**sandbox_env, **KEYS})
    stages = {name: p.stages for name, p in _proxy(gw).pipelines.items()}
    assert stages["ph_list"] == ("validator", "compress", "cache", "account", "params", "collection")
    assert stages["ph_nb"] == ("validator", "cache", "account", "params", "call")
    assert stages["ph_raw"] == ("validator", "account", "params", "call")  # no cache, no pagination
    assert stages["ph_create"] == ("account", "params", "body", "invalidate", "call")  # a write, where a cache exists
    assert stages["ph_delete"] == ("account", "params", "invalidate", "call")  # DELETE sends no body


async def test_a_route_without_cache_runs_no_cache_code(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw = await make_gateway(NO_CACHE, env={**sandbox_env, **KEYS})
    proxy = _proxy(gw)
    assert proxy.cache is None
    assert proxy.pipelines["plain"].stages == ("validator", "account", "params", "call")
    assert proxy.pipelines["create"].stages == ("account", "params", "body", "call")  # nothing to invalidate
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    resp = await gw.get(f"/v1/plain/projects/1/notebooks/{short_id}")
    assert resp.status == 200 and "X-Cache" not in resp.headers
    created = await gw.post("/v1/plain/projects/1/notebooks", json={"title": "made by a test"})
    assert created.status in (200, 201)


async def test_pipelines_are_built_once_not_per_request(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    gw = await make_gateway(POSTHOG, env={**sandbox_env, **KEYS})
    first = _proxy(gw).pipelines["ph_list"]
    assert (await gw.get(f"{LIST}?limit=1")).status == 200
    assert _proxy(gw).pipelines["ph_list"] is first  # built once, not per request
