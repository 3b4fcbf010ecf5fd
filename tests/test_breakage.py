"""Breakage is reported as the upstream's, never as the client's fault or a missing entity; the
gateway's own pacing never marks a route down.  Everything through real HTTP: the sandboxes or a
scripted fake upstream on 127.0.0.1, asserting status, error code, route, ``gateway_route_up`` and
the fallback counter."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.server import GATEWAY
from tests.fake_upstream import start_fake

YAML = """
upstreams:
  fake:
    base_url: {url}
    timeouts: {{connect: 1s, read: 1s, total: 3s}}
    retries: {{attempts: 1}}
    {budget}
    auth: {{bearer: {{env: FAKE_KEY}}}}
routes:
  get_thing:
    stable: GET /v1/things/{{name}}
    upstream: fake
    targets: ["GET /things/{{name}}"]
    probe: {{params: {{name: sample}}}}
{extra}
"""


async def _gateway(
    make_gateway: Any, url: str, *, budget: str = "", extra: str = ""
) -> tuple[TestClient[Any, Any], CollectorRegistry]:
    registry = CollectorRegistry()
    text = YAML.format(url=url, budget=budget, extra=extra)
    gw = await make_gateway(text, env={"FAKE_KEY": "fake-key"}, registry=registry)
    return gw, registry


def _up(registry: CollectorRegistry, route: str) -> float | None:
    return registry.get_sample_value("gateway_route_up", {"route": route})


async def _error(resp: Any, status: int) -> dict[str, Any]:
    body = await resp.json()
    assert resp.status == status, body
    err: dict[str, Any] = body["error"]
    return err


# --------------------------------------------------------------------------- pacing (point 6)


async def test_a_probe_round_with_the_budget_used_up_does_not_mark_the_route_down(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    gw, registry = await _gateway(make_gateway, url, budget="request_budget: {limits: [3/1m], max_wait: 100ms}")
    gateway = gw.server.app[GATEWAY]
    for name in ("a", "b", "c"):
        assert (await gw.get(f"/v1/things/{name}")).status == 200
    assert _up(registry, "get_thing") == 1
    # the budget is used up: a script's request is refused with the gateway's own 503 ...
    err = await _error(await gw.get("/v1/things/d"), 503)
    assert err["code"] == "upstream_budget_exhausted" and err["route"] == "get_thing"
    # ... and a probe round neither spends a slot nor calls the route down
    [result] = await gateway.prober.run_round()
    assert result.outcome == "skipped", result
    assert result.code == "probe_budget_short"
    assert _up(registry, "get_thing") == 1
    assert fake.count() == 3
    page = await (await gw.get("/status")).text()
    assert 'data-route="get_thing" data-state="up"' in page
    assert "budget" in page and "skipped" in page
