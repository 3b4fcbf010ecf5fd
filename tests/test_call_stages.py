"""The call-level stack (gateway.pipeline.calls): fallback, shape, status mapping and the answer step are
stages composed once per route, present only where the route configures them, and still behave as before."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.proxy import Proxy
from gateway.server import GATEWAY
from tests.fake_upstream import Reply, start_fake

YAML = """
upstreams:
  fake:
    base_url: {url}
    retries: {{attempts: 1}}
    circuit_breaker: {{failures: 0}}
routes:
  raw:
    stable: GET /v1/raw/{{name}}
    upstream: fake
    auth: none
    targets: ["GET /raw/{{name}}"]
    response: {{raw: true}}
  moved:
    stable: GET /v1/moved/{{name}}
    upstream: fake
    auth: none
    targets: ["GET /old/{{name}}", "GET /new/{{name}}"]
    fallback_on: [404, 410, shape]
    shape: {{content_type: application/json, fields: {{id: string}}}}
    response:
      item:
        name: id
  shaped:
    stable: GET /v1/shaped/{{name}}
    upstream: fake
    auth: none
    targets: ["GET /shaped/{{name}}"]
    shape: {{content_type: application/json, fields: {{id: string}}}}
  module:
    stable: GET /v1/module/{{name}}
    upstream: fake
    auth: none
    targets: ["GET /old-module/{{name}}", "GET /module/{{name}}"]
    fallback_on: [404, 410, shape]
    shape: {{content_type: application/javascript}}
    response: {{raw: true}}
  docs:
    stable: GET /v1/docs
    upstream: fake
    auth: none
    pagination: {{style: before, param: before, field: updated}}
    targets: ["GET /old/docs", "GET /new/docs"]
"""
JS = {"Content-Type": "application/javascript"}


def _proxy(gw: Any) -> Proxy:
    proxy: Proxy = gw.server.app[GATEWAY].runtime.proxy
    return proxy


async def _gateway(make_gateway: Any, aiohttp_server: Any) -> tuple[Any, Any, CollectorRegistry]:
    fake, _, url = await start_fake(aiohttp_server)
    registry = CollectorRegistry()
    gw = await make_gateway(YAML.format(url=url), env={}, registry=registry)
    return gw, fake, registry


def _fallbacks(registry: CollectorRegistry, route: str) -> float | None:
    return registry.get_sample_value("gateway_fallback_total", {"route": route, "target": "1"})


def _errors(registry: CollectorRegistry, route: str, kind: str) -> float | None:
    labels = {"upstream": "fake", "route": route, "kind": kind}
    return registry.get_sample_value("gateway_upstream_errors_total", labels)


async def _error(resp: Any, status: int) -> dict[str, Any]:
    body = await resp.json()
    assert resp.status == status, body
    err: dict[str, Any] = body["error"]
    return err


async def test_each_route_composes_only_the_call_stages_it_configures(make_gateway: Any, aiohttp_server: Any) -> None:
    gw, _, _ = await _gateway(make_gateway, aiohttp_server)
    proxy = _proxy(gw)
    calls = {name: p.calls for name, p in proxy.pipelines.items()}
    # one target, no shape, raw: no fallback, shape or mapping code at all
    assert calls["raw"] == ("raw", "answered", "status", "upstream")
    assert calls["moved"] == ("mapping", "answered", "shape", "status", "fallback", "upstream")
    assert calls["shaped"] == ("passthrough", "answered", "shape", "status", "upstream")
    assert calls["module"] == ("raw", "answered", "shape", "status", "fallback", "upstream")
    # a collection's pages each pass the same stack; its items are mapped by the collection stage
    assert calls["docs"] == ("answered", "status", "fallback", "upstream")
    assert proxy.pipelines["moved"].stages == ("validator", "account", "params", "call")
    assert proxy.pipelines["docs"].stages[-1] == "collection"
    # a probe runs the same call-level stack as live traffic, composed once for both
    assert all(proxy.probes[name].calls == calls[name] for name in calls)
    assert proxy.calls["moved"].stages == ("answered", "shape", "status", "fallback", "upstream")


@pytest.mark.parametrize(
    "old",
    [
        404,
        410,
        Reply(200, json.dumps({"uuid": "x"}).encode()),  # a field the shape requires is gone
        Reply(200, b"<html>moved</html>", {"Content-Type": "text/html"}),  # not the declared content type
        Reply(200, b"[]"),  # not the object the mapping reads
    ],
)
async def test_fallback_hands_over_is_counted_and_the_answer_is_mapped(
    make_gateway: Any, aiohttp_server: Any, old: Reply | int
) -> None:
    gw, fake, registry = await _gateway(make_gateway, aiohttp_server)
    fake.script("/old/x", old)
    fake.script("/new/x", Reply(200, json.dumps({"id": "x", "secret_field": "not declared"}).encode()))
    resp = await gw.get("/v1/moved/x")
    assert resp.status == 200 and await resp.json() == {"name": "x"}  # mapped: only the declared field
    assert fake.count("/old/x") == fake.count("/new/x") == 1
    assert _fallbacks(registry, "moved") == 1
    page = await (await gw.get("/status")).text()
    assert "fallback #1" in page


async def test_an_answer_that_does_not_hand_over_is_judged_by_the_status_stage(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    gw, fake, registry = await _gateway(make_gateway, aiohttp_server)
    fake.script("/old/x", Reply(500, b'{"detail": "boom"}'))
    err = await _error(await gw.get("/v1/moved/x"), 502)
    assert err["code"] == "upstream_failed" and err["route"] == "moved"
    assert fake.count("/new/x") == 0 and _fallbacks(registry, "moved") is None
    assert _errors(registry, "moved", "5xx") == 1


async def test_the_last_targets_drift_is_a_502_and_no_fallback_is_counted(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    gw, fake, registry = await _gateway(make_gateway, aiohttp_server)
    fake.script("/old/x", 404)
    fake.script("/new/x", Reply(200, b"<html>down</html>", {"Content-Type": "text/html"}))
    err = await _error(await gw.get("/v1/moved/x"), 502)
    assert err["code"] == "shape_drift" and err["route"] == "moved"
    assert fake.count("/new/x") == 1
    assert _fallbacks(registry, "moved") is None  # only an answer the route accepts counts as a fallback
    assert _errors(registry, "moved", "shape") == 1


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (Reply(200, json.dumps({"uuid": "x"}).encode()), "lost field 'id'"),
        (Reply(200, json.dumps({"id": 7}).encode()), "field 'id' is integer"),
        (Reply(200, b"<html>hi</html>", {"Content-Type": "text/html"}), "text/html"),
    ],
)
async def test_a_one_target_routes_shape_drift_is_a_502_naming_the_route(
    make_gateway: Any, aiohttp_server: Any, answer: Reply, why: str
) -> None:
    gw, fake, registry = await _gateway(make_gateway, aiohttp_server)
    fake.script("/shaped/x", answer)
    err = await _error(await gw.get("/v1/shaped/x"), 502)
    assert err["code"] == "shape_drift" and err["route"] == "shaped" and why in err["message"], err
    assert fake.count("/shaped/x") == 1 and _errors(registry, "shaped", "shape") == 1
    assert registry.get_sample_value("gateway_route_up", {"route": "shaped"}) == 0
    fake.script("/shaped/x", Reply(200, json.dumps({"id": "x", "more": 1}).encode()))
    resp = await gw.get("/v1/shaped/x")
    assert resp.status == 200 and await resp.json() == {"id": "x", "more": 1}  # passed through as it came


async def test_a_raw_answer_streamed_hands_over_on_its_content_type_and_relays_the_next(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    gw, fake, registry = await _gateway(make_gateway, aiohttp_server)
    fake.script("/old-module/x", Reply(200, b"<html>moved</html>", {"Content-Type": "text/html"}))
    fake.script("/module/x", Reply(200, b"export default 1;", JS))
    for _ in range(3):
        resp = await gw.get("/v1/module/x")
        assert resp.status == 200 and await resp.read() == b"export default 1;"
        assert resp.headers["Content-Type"].startswith("application/javascript")
    assert fake.count("/old-module/x") == fake.count("/module/x") == 3
    assert _fallbacks(registry, "module") == 3
    fake.script("/raw/x", Reply(200, b"\x00binary", {"Content-Type": "application/octet-stream"}))
    raw = await gw.get("/v1/raw/x")
    assert raw.status == 200 and await raw.read() == b"\x00binary"


LINKED = """
upstreams:
  fake:
    base_url: {url}
    retries: {{attempts: 1}}
    circuit_breaker: {{failures: 0}}
routes:
  linked:
    stable: GET /v1/linked
    upstream: fake
    auth: none
    pagination: {{style: next_url, next: next, items: results}}
    targets: ["GET /old-list", "GET /new-list"]
    fallback_on: [404]
"""


async def test_a_walk_handed_over_to_a_later_target_follows_that_targets_next_links(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """The first target moved away (404): the walk starts on the second, and its next link is followed
    there, not checked against the first target's path (which made page 2 a 502 pagination_bad_link)."""
    fake, _, url = await start_fake(aiohttp_server)
    fake.script("/old-list", Reply(404, b'{"detail": "gone"}', {"Content-Type": "application/json"}))
    page1 = {"results": [{"id": 1}, {"id": 2}], "next": f"{url}/new-list?page=2"}
    page2 = {"results": [{"id": 3}], "next": None}
    json_type = {"Content-Type": "application/json"}
    fake.script(
        "/new-list",
        Reply(200, json.dumps(page1).encode(), json_type),
        Reply(200, json.dumps(page2).encode(), json_type),
    )
    gw = await make_gateway(LINKED.format(url=url), registry=CollectorRegistry())
    first = await gw.get("/v1/linked", params={"limit": "2"})
    assert first.status == 200
    body = await first.json()
    assert [i["id"] for i in body["items"]] == [1, 2] and body["next_cursor"]
    asked_old = fake.count("/old-list")
    second = await gw.get("/v1/linked", params={"limit": "2", "cursor": body["next_cursor"]})
    assert second.status == 200, await second.text()
    rest = await second.json()
    assert [i["id"] for i in rest["items"]] == [3] and rest["next_cursor"] is None
    assert fake.count("/old-list") == asked_old  # the link is the second target's: the first is not asked
    assert [h.query for h in fake.hits if h.path == "/new-list"][-1] == "page=2"
