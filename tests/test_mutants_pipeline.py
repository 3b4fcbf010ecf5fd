"""The pipeline stages and the proxy's response side: the survivors ``make mutants`` (group
``pipeline``) found, each killed here through real HTTP: what the client gets back, and what the
upstream (a real aiohttp server on 127.0.0.1) was sent.
"""

from __future__ import annotations

from typing import Any

from tests.fake_upstream import start_fake

LIMITS = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
routes:
  thing:
    stable: GET /v1/things/{id}
    upstream: origin
    auth: none
    targets: ["GET /things/{id}"]
"""


async def test_a_route_answers_through_every_stage(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, _, base = await start_fake(aiohttp_server)
    gw = await make_gateway(LIMITS, env={"ORIGIN_URL": base})
    resp = await gw.get("/v1/things/7")
    assert resp.status == 200
    assert (await resp.json())["path"] == "/things/7"
    assert fake.count("/things/7") == 1
