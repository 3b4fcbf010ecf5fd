"""Breakage is reported as the upstream's, never as the client's fault or a missing entity; the
gateway's own pacing never marks a route down.  Everything through real HTTP: the sandboxes or a
scripted fake upstream on 127.0.0.1, asserting status, error code, route, ``gateway_route_up`` and
the fallback counter."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.config import ConfigError, parse_config
from gateway.server import GATEWAY
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES
from tests.fake_upstream import Reply, start_fake
from tests.processes import run_cli

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


async def test_a_probe_held_off_by_an_upstream_429_is_skipped_not_broken(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    gw, registry = await _gateway(make_gateway, url)
    gateway = gw.server.app[GATEWAY]
    assert (await gw.get("/v1/things/a")).status == 200
    fake.script("/things/b", Reply(429, b'{"detail": "Request was throttled. Expected available in 30 seconds."}'))
    err = await _error(await gw.get("/v1/things/b"), 503)
    assert err["code"] == "upstream_rate_limited" and err["route"] == "get_thing"
    [result] = await gateway.prober.run_round()
    assert result.outcome == "skipped" and result.code == "probe_budget_short", result
    assert "hold off" in result.message
    assert _up(registry, "get_thing") == 1
    assert fake.count("/things/sample") == 0  # the probe did not spend what the upstream refused
    page = await (await gw.get("/status")).text()
    assert 'data-route="get_thing" data-state="up"' in page and "hold off" in page


async def test_probes_run_while_the_budget_has_room(make_gateway: Any, aiohttp_server: Any) -> None:
    """The reserve is a tenth of each window: probes run until scripts need the last slots."""
    fake, _, url = await start_fake(aiohttp_server)
    gw, registry = await _gateway(make_gateway, url, budget="request_budget: {limits: [20/1m], max_wait: 100ms}")
    gateway = gw.server.app[GATEWAY]
    for i in range(17):
        assert (await gw.get(f"/v1/things/{i}")).status == 200
    [result] = await gateway.prober.run_round()  # 18 of 20 after it
    assert result.outcome == "ok", result
    [result] = await gateway.prober.run_round()  # 2 left: the reserve (2 of 20) is the scripts'
    assert result.outcome == "skipped" and "18 of 20/1m used" in result.message
    assert fake.count("/things/sample") == 1
    assert [(await gw.get(f"/v1/things/x{i}")).status for i in range(3)] == [200, 200, 503]
    assert _up(registry, "get_thing") == 1


# --------------------------------------------------------------------------- a GET's 400 (point 3)


async def test_an_upstream_400_on_a_get_is_a_502_and_marks_the_route_down(
    make_gateway: Any, sandboxes: Sandboxes
) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(registry=registry)
    assert (await gw.get("/v1/observable/notebooks?limit=1")).status == 200
    for status in (400, 422):
        sandboxes.observable_state.apply_switches({"faults": {"/user/documents": {"status": status}}})
        err = await _error(await gw.get("/v1/observable/notebooks?type=shared"), 502)
        assert err["code"] == "upstream_rejected" and err["route"] == "observable_notebooks"
        assert f"GET /user/documents ({status})" in err["message"] and "check routes.yaml" in err["message"]
        assert _up(registry, "observable_notebooks") == 0
        info = {"route": "observable_notebooks", "code": "upstream_rejected"}
        assert registry.get_sample_value("gateway_route_failure_info", info) == 1
    page = await (await gw.get("/status")).text()
    assert 'data-route="observable_notebooks" data-state="down"' in page


async def test_a_write_refused_with_400_keeps_the_upstreams_4xx(make_gateway: Any, sandboxes: Sandboxes) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(registry=registry)
    sandboxes.observable_state.apply_switches({"faults": {"/document/new": {"status": 400}}})
    resp = await gw.post("/v1/observable/notebooks", json={"title": "t", "nodes": [{"id": 0}], "version": 2})
    err = await _error(resp, 400)
    assert err["code"] == "upstream_rejected" and err["route"] == "observable_notebook_create"
    assert err["message"] == "Bad Request"  # the upstream's own message: the client's content may be at fault
    assert sandboxes.observable_state.count("POST", "/document/new") == 1
    up = _up(registry, "observable_notebook_create")
    assert up is not None and math.isnan(up)  # no evidence against the route


# --------------------------------------------------------------------------- a 404 for an id (point 3)


async def test_a_404_for_an_unknown_id_stays_404_when_the_probe_sample_is_found(
    make_gateway: Any, sandboxes: Sandboxes
) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(registry=registry)
    obs = sandboxes.observable_state
    sample = obs.by_kind("public")[0]  # what the list probe returns first: the route's sample
    for missing in ("0000000000000000", "0000000000000001"):
        err = await _error(await gw.get(f"/v1/observable/notebooks/{missing}"), 404)
        assert err["code"] == "not_found" and err["route"] == "observable_notebook"
    # the sample was asked once for both 404s (a verdict stands for a few seconds)
    assert obs.count("GET", f"/document/{sample.id}") == 1
    assert _up(registry, "observable_notebook") != 0


async def test_a_404_that_the_probe_sample_shares_is_the_route_gone(make_gateway: Any, sandboxes: Sandboxes) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(registry=registry)
    obs = sandboxes.observable_state
    sample = obs.by_kind("public")[0]
    wanted = obs.by_kind("public")[3]
    assert (await gw.get(f"/v1/observable/notebooks/{wanted.id}")).status == 200
    assert _up(registry, "observable_notebook") == 1
    obs.apply_switches({"faults": {"/document/": {"status": 404}}})  # the upstream moved its document route
    for _ in range(2):
        err = await _error(await gw.get(f"/v1/observable/notebooks/{wanted.id}"), 502)
        assert err["code"] == "upstream_route_gone" and err["route"] == "observable_notebook"
        assert f"sample (id={sample.id})" in err["message"] and "GET /document/{id}" in err["message"]
    assert obs.count("GET", f"/document/{sample.id}") == 1  # checked once, the verdict reused
    assert _up(registry, "observable_notebook") == 0
    info = {"route": "observable_notebook", "code": "upstream_route_gone"}
    assert registry.get_sample_value("gateway_route_failure_info", info) == 1


async def test_a_sample_deleted_since_the_last_probe_is_replaced_before_a_verdict(
    make_gateway: Any, sandboxes: Sandboxes
) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(registry=registry)
    gateway = gw.server.app[GATEWAY]
    obs = sandboxes.observable_state
    await gateway.prober.run_round()
    old_sample = obs.by_kind("public")[0]
    del obs.notebooks[old_sample.id]  # deleted upstream after the round took it as the sample
    err = await _error(await gw.get("/v1/observable/notebooks/0000000000000000"), 404)
    assert err["code"] == "not_found" and err["route"] == "observable_notebook"
    assert obs.count("GET", f"/document/{old_sample.id}") == 2  # the round, then the check: 404
    assert obs.count("GET", f"/document/{obs.by_kind('public')[0].id}") == 1  # the fresh sample: found
    assert _up(registry, "observable_notebook") == 1


async def test_concurrent_404s_share_one_sample_check(make_gateway: Any, sandboxes: Sandboxes) -> None:
    gw = await make_gateway()
    obs = sandboxes.observable_state
    sample = obs.by_kind("public")[0]
    obs.apply_switches({"latency_ms": 50})
    resps = await asyncio.gather(*(gw.get(f"/v1/observable/notebooks/{i:016x}") for i in range(6)))
    assert [r.status for r in resps] == [404] * 6
    assert obs.count("GET", f"/document/{sample.id}") == 1


def _runbook_routes() -> str:
    """routes.yaml after step 2 of the README's runbook: the legacy per-kind route added as a fallback."""
    text = ROUTES.read_text()
    old = "      - GET /user/documents?types={type}\n"
    assert old in text
    return text.replace(old, old + "      - GET /user/{type}\n", 1)


async def test_a_404_from_a_collections_last_target_is_the_route_gone(make_gateway: Any, sandboxes: Sandboxes) -> None:
    """The runbook as a new user tried it: ``?type=private`` was a 404 not_found while /status said UP."""
    registry = CollectorRegistry()
    gw = await make_gateway(_runbook_routes(), registry=registry)
    # /user/private 404s too: the last target is gone for type=private (the sandbox serves it now)
    faults = {"/user/documents": {"status": 404}, "/user/private": {"status": 404}}
    sandboxes.observable_state.apply_switches({"faults": faults, "legacy_routes": True})
    resp = await gw.get("/v1/observable/notebooks?type=public&limit=2")
    assert resp.status == 200 and len((await resp.json())["items"]) == 2
    fallback = {"route": "observable_notebooks", "target": "1"}
    assert registry.get_sample_value("gateway_fallback_total", fallback) == 1
    assert _up(registry, "observable_notebooks") == 1
    err = await _error(await gw.get("/v1/observable/notebooks?type=private"), 502)  # /user/private: 404
    assert err["code"] == "upstream_route_gone" and err["route"] == "observable_notebooks"
    assert "GET /user/{type} (404)" in err["message"]
    assert _up(registry, "observable_notebooks") == 0
    page = await (await gw.get("/status")).text()
    assert 'data-route="observable_notebooks" data-state="down"' in page


# --------------------------------------------------------------------------- fallback_on (point 3)

FALLBACK_YAML = """
upstreams:
  fake:
    base_url: {url}
    retries: {{attempts: 1}}
routes:
  docs:
    stable: GET /v1/docs
    upstream: fake
    auth: none
    pagination: {{style: before, param: before, field: updated}}
    targets: ["GET /old/docs", "GET /new/docs"]
{fallback_on}
    shape: {{fields: {{id: string, updated: string}}}}
"""

ITEMS = [{"id": "a", "updated": "2024-01-02"}, {"id": "b", "updated": "2024-01-01"}]


@pytest.mark.parametrize(
    "old",
    [
        Reply(200, json.dumps({"results": ITEMS}).encode()),  # an object where a bare array was expected
        Reply(200, json.dumps([{"uuid": "a", "updated": "2024-01-02"}]).encode()),  # items of another shape
        Reply(200, b"<html>moved</html>", {"Content-Type": "text/html"}),  # not JSON at all
        Reply(400, b'{"detail": "unknown parameter"}'),
        404,
    ],
)
async def test_fallback_on_hands_over_on_what_the_route_declares(
    make_gateway: Any, aiohttp_server: Any, old: Reply | int
) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    fake.script("/old/docs", old)
    fake.script("/new/docs", Reply(200, json.dumps(ITEMS).encode()), Reply(200, b"[]"))
    registry = CollectorRegistry()
    text = FALLBACK_YAML.format(url=url, fallback_on="    fallback_on: [404, 410, 400, shape]")
    gw = await make_gateway(text, env={}, registry=registry)
    resp = await gw.get("/v1/docs?limit=2")
    body = await resp.json()
    assert resp.status == 200, body
    assert [i["id"] for i in body["items"]] == ["a", "b"]
    assert registry.get_sample_value("gateway_fallback_total", {"route": "docs", "target": "1"}) == 1
    assert _up(registry, "docs") == 1
    page = await (await gw.get("/status")).text()
    assert "fallback #1" in page and "GET /new/docs" in page.replace("<wbr>", "")


async def test_without_fallback_on_only_404_and_410_hand_over(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    fake.script("/old/docs", Reply(200, json.dumps({"results": ITEMS}).encode()))
    fake.script("/new/docs", Reply(200, json.dumps(ITEMS).encode()))
    registry = CollectorRegistry()
    gw = await make_gateway(FALLBACK_YAML.format(url=url, fallback_on=""), env={}, registry=registry)
    err = await _error(await gw.get("/v1/docs?limit=2"), 502)
    assert err["code"] == "shape_drift" and err["route"] == "docs"
    fake.script("/old/docs", Reply(400, b'{"detail": "unknown parameter"}'))
    err = await _error(await gw.get("/v1/docs?limit=2"), 502)
    assert err["code"] == "upstream_rejected" and err["route"] == "docs"
    assert fake.count("/new/docs") == 0
    assert registry.get_sample_value("gateway_fallback_total", {"route": "docs", "target": "1"}) is None
    assert _up(registry, "docs") == 0
    fake.script("/old/docs", 410)
    assert (await gw.get("/v1/docs?limit=2")).status == 200
    assert registry.get_sample_value("gateway_fallback_total", {"route": "docs", "target": "1"}) == 1


def test_fallback_on_is_parsed_and_checked() -> None:
    text = FALLBACK_YAML.format(url="http://127.0.0.1:9", fallback_on="    fallback_on: [400, shape]")
    [route] = parse_config(text, "routes.yaml", {}).routes
    assert route.fallback_on == {400, "shape"}
    [route] = parse_config(FALLBACK_YAML.format(url="http://127.0.0.1:9", fallback_on=""), "routes.yaml", {}).routes
    assert route.fallback_on == {404, 410}
    bad = FALLBACK_YAML.format(url="http://127.0.0.1:9", fallback_on="    fallback_on: [200, shapes, 429, '404']")
    with pytest.raises(ConfigError) as info:
        parse_config(bad.replace('"GET /old/docs", ', ""), "routes.yaml", {})
    found = "\n".join(str(p) for p in info.value.problems)
    assert "routes.docs.fallback_on[0]: expected an upstream status from 400 to 599 or 'shape', got 200" in found
    assert "routes.docs.fallback_on[1]: expected an upstream status from 400 to 599 or 'shape', got 'shapes'" in found
    assert "routes.docs.fallback_on[2]: 429 is about the gateway's credential or pace" in found
    assert "routes.docs.fallback_on[3]: expected an upstream status" in found
    assert "routes.docs.fallback_on: the route has one target: there is no next target to hand over to" in found


async def test_gateway_check_reports_a_bad_fallback_on(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(FALLBACK_YAML.format(url="http://127.0.0.1:9", fallback_on="    fallback_on: [shape, 302]"))
    code, out, err = await run_cli("check", str(path), env={})
    assert code == 1, (out, err)
    assert "fallback_on[1]: expected an upstream status from 400 to 599 or 'shape', got 302" in out + err
