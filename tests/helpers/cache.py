"""The cache tests' PostHog config, client keys and a gateway with a hand-moved cache clock."""

from __future__ import annotations

import time
from typing import Any

from gateway.server import GATEWAY

POSTHOG = """
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
    response:
      items: {id: short_id, title: title}
    cache: {ttl: 60s, stale_if_error: 1h}
  ph_nb:
    stable: GET /v1/posthog/projects/{project_id}/notebooks/{short_id}
    upstream: posthog
    targets: ["GET /api/projects/{project_id}/notebooks/{short_id}/"]
    response:
      item: {id: short_id, title: title, version: version}
    cache: {ttl: 60s, stale_if_error: 10m, vary: [Accept-Language]}
  ph_activity:
    stable: GET /v1/posthog/projects/{project_id}/notebooks/{short_id}/activity
    upstream: posthog
    targets: ["GET /api/projects/{project_id}/notebooks/{short_id}/activity"]
    cache: {ttl: 60s}
  ph_raw:
    stable: GET /v1/raw/projects/{project_id}/notebooks/{short_id}
    upstream: posthog
    targets: ["GET /api/projects/{project_id}/notebooks/{short_id}/"]
  ph_create:
    stable: POST /v1/posthog/projects/{project_id}/notebooks
    upstream: posthog
    targets: ["POST /api/projects/{project_id}/notebooks/"]
    response:
      item: {id: short_id, title: title}
  ph_update:
    stable: PATCH /v1/posthog/projects/{project_id}/notebooks/{short_id}
    upstream: posthog
    targets: ["PATCH /api/projects/{project_id}/notebooks/{short_id}/"]
    response:
      item: {id: short_id, title: title}
  ph_delete:
    stable: DELETE /v1/posthog/projects/{project_id}/notebooks/{short_id}
    upstream: posthog
    targets:
      - request: PATCH /api/projects/{project_id}/notebooks/{short_id}/
        body: {const: {deleted: true}}
    response: {status: 204}
"""


KEYS = {"ALICE_KEY": "ck_alice_" + "a" * 24, "BOB_KEY": "ck_bob_" + "b" * 24, "OPS_KEY": "ak_ops_" + "o" * 24}


CLIENTS = """
clients:
  keys:
    alice: {key: {env: ALICE_KEY}}
    bob: {key: {env: BOB_KEY}}
admin:
  keys:
    ops: {key: {env: OPS_KEY}}
"""


ALICE = {"X-API-Key": KEYS["ALICE_KEY"]}


BOB = {"X-API-Key": KEYS["BOB_KEY"]}


OPS = {"Authorization": f"Bearer {KEYS['OPS_KEY']}"}


LIST = "/v1/posthog/projects/1/notebooks"


class Clock:
    """Wall clock the test moves by hand, so TTLs are exact without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def _gw(make_gateway: Any, sandbox_env: dict[str, str], extra: str = "", **kw: Any) -> tuple[Any, Clock]:
    gw = await make_gateway(POSTHOG + extra, env={**sandbox_env, **KEYS}, **kw)
    clock = Clock()
    gw.server.app[GATEWAY].caches.clock = clock
    return gw, clock
