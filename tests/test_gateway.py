"""Generic gateway behaviour: fallbacks, routing errors, request ids, upstream failures, own endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from sandbox.runner import Sandboxes
from tests.processes import free_port

FALLBACK_YAML = """
upstreams:
  observable:
    base_url: ${OBSERVABLE_API_URL}
    headers: {Origin: https://observablehq.com}
    auth:
      cookies:
        I: {env: OBSERVABLE_SESSION}
        T: {env: OBSERVABLE_TOKEN}
routes:
  public_list:
    stable: GET /v1/public
    upstream: observable
    pagination: {style: before, param: before, field: update_time}
    targets:
      - GET /user/public                      # the old route, gone upstream
      - GET /user/documents?types=public      # its replacement
    response:
      items: {id: id, updated_at: update_time}
"""


async def test_fallback_target_takes_over_on_404(make_gateway: Any, sandboxes: Sandboxes) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(FALLBACK_YAML, registry=registry)
    state = sandboxes.observable_state
    resp = await gw.get("/v1/public?all=true")
    body = await resp.json()
    assert resp.status == 200, body
    assert [i["id"] for i in body["items"]] == [nb.id for nb in state.by_kind("public")]
    # 75 items in pages of 30, each next page asked from above the last run served (docs/pagination.md):
    # 30, 29 new, 16 new, the last item again, the empty page; the first page again (the list did not move)
    assert state.count("GET", "/user/public") == 6  # tried first on each of the 6 pages
    assert state.count("GET", "/user/documents") == 6
    assert registry.get_sample_value("gateway_fallback_total", {"route": "public_list", "target": "1"}) == 6
    # the old route comes back: the first target answers again, no fallback needed
    state.legacy_routes = True
    state.reset_counters()
    resp = await gw.get("/v1/public?limit=10")
    assert resp.status == 200
    assert state.count("GET", "/user/documents") == 0
    assert registry.get_sample_value("gateway_fallback_total", {"route": "public_list", "target": "1"}) == 6


async def test_last_target_gone_is_a_502_naming_the_route(make_gateway: Any, sandboxes: Sandboxes) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(registry=registry)
    sandboxes.observable_state.apply_switches({"faults": {"/user/documents": {"status": 404}}})
    resp = await gw.get("/v1/observable/notebooks")
    err = await resp.json()
    assert resp.status == 502
    assert err["error"]["route"] == "observable_notebooks"
    assert err["error"]["code"] == "upstream_route_gone"
    assert "/user/documents" in err["error"]["message"]
    assert registry.get_sample_value("gateway_route_up", {"route": "observable_notebooks"}) == 0
    assert (
        registry.get_sample_value(
            "gateway_upstream_errors_total", {"upstream": "observable", "route": "observable_notebooks", "kind": "4xx"}
        )
        == 1
    )


async def test_dropped_field_is_shape_drift_not_null(make_gateway: Any, sandboxes: Sandboxes) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(registry=registry)
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks": {"drop_field": "title"}}})
    resp = await gw.get("/v1/posthog/projects/1/notebooks?limit=5")
    err = await resp.json()
    assert resp.status == 502
    assert err["error"]["code"] == "shape_drift"
    assert "'title'" in err["error"]["message"]
    assert (
        registry.get_sample_value(
            "gateway_upstream_errors_total", {"upstream": "posthog", "route": "posthog_notebooks", "kind": "shape"}
        )
        == 1
    )


async def test_unknown_route_is_404_and_wrong_method_405(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    resp = await gw.get("/v1/observable/nothing-here")
    body = await resp.json()
    assert resp.status == 404 and body["error"]["code"] == "no_route"
    resp = await gw.put("/v1/posthog/projects/1/notebooks/abc")
    body = await resp.json()
    assert resp.status == 405
    assert resp.headers["Allow"] == "DELETE, GET, HEAD, PATCH"
    resp = await gw.delete("/v1/observable/notebooks")
    assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD, POST"
    assert sandboxes.observable_state.total_requests == 0
    assert sandboxes.posthog_state.total_requests == 0


async def test_path_params_cannot_escape_their_segment(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    for raw in ["..", "%2e%2e", "a%2Fb", "%2F%2Fevil.example", "a%5Cb", "x%0d%0aSet-Cookie:%20a=b", "%00"]:
        resp = await gw.get(f"/v1/observable/notebooks/{raw}", allow_redirects=False)
        assert resp.status in (400, 404), raw
        body = await resp.json()
        assert "error" in body
    assert sandboxes.observable_state.total_requests == 0
    # a harmless but unusual id is forwarded percent-encoded, still as one segment
    resp = await gw.get("/v1/observable/notebooks/@host:80")
    assert resp.status == 404
    assert sandboxes.observable_state.count("GET", "/document/@host:80") == 1


async def test_request_id_is_echoed_or_generated(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    resp = await gw.get("/v1/observable/notebooks?limit=1", headers={"X-Request-ID": "job-42.run-7"})
    assert resp.headers["X-Request-ID"] == "job-42.run-7"
    resp = await gw.get("/v1/nope")
    assert len(resp.headers["X-Request-ID"]) == 32
    resp = await gw.get("/healthz", headers={"X-Request-ID": "bad id\twith tab"})
    assert resp.headers["X-Request-ID"] != "bad id\twith tab"


async def test_own_endpoints(gw: TestClient[Any, Any]) -> None:
    resp = await gw.get("/healthz")
    assert resp.status == 200 and (await resp.json())["status"] == "ok"
    resp = await gw.get("/readyz")
    body = await resp.json()
    assert resp.status == 200 and body["routes"] == 12
    await gw.get("/v1/observable/notebooks?limit=1")
    resp = await gw.get("/metrics")
    text = await resp.text()
    assert 'gateway_requests_total{method="GET",route="observable_notebooks",status_class="2xx"} 1.0' in text
    assert 'gateway_route_up{route="posthog_notebooks"}' in text


UPSTREAM_YAML = """
upstreams:
  flaky:
    base_url: {url}
    timeouts: {{connect: 1s, read: 0.3s, total: 1s}}
    max_response_bytes: 1KiB
routes:
  thing:
    stable: GET /v1/thing/{{name}}
    upstream: flaky
    targets: ["GET /{{name}}"]
    response:
      item: {{value: value}}
"""


async def _fake_upstream(aiohttp_server: Any) -> TestServer:
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({"value": 1})

    async def boom(_: web.Request) -> web.Response:
        return web.json_response({"detail": "database on fire"}, status=503)

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(text="{not json", content_type="application/json")

    async def huge(_: web.Request) -> web.Response:
        return web.json_response({"value": "x" * 5000})

    async def loop(_: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def offhost(_: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data")

    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"value": 42, "extra": "not exposed"})

    app = web.Application()
    for name, handler in [
        ("slow", slow),
        ("boom", boom),
        ("garbage", garbage),
        ("huge", huge),
        ("loop", loop),
        ("offhost", offhost),
        ("ok", ok),
    ]:
        app.router.add_get(f"/{name}", handler)
    server: TestServer = await aiohttp_server(app)
    return server


async def test_upstream_failures_name_the_route(make_gateway: Any, aiohttp_server: Any) -> None:
    upstream = await _fake_upstream(aiohttp_server)
    gw = await make_gateway(UPSTREAM_YAML.format(url=str(upstream.make_url("/")).rstrip("/")), env={})
    cases = {
        "ok": (200, None),
        "slow": (504, "upstream_timeout"),
        "boom": (502, "upstream_failed"),
        "garbage": (502, "upstream_bad_json"),
        "huge": (502, "upstream_too_large"),
        "loop": (502, "redirect_loop"),
        "offhost": (502, "redirect_off_host"),
    }
    for name, (status, code) in cases.items():
        resp = await gw.get(f"/v1/thing/{name}")
        body = await resp.json()
        assert resp.status == status, (name, body)
        if code is None:
            assert body == {"value": 42}
        else:
            assert body["error"]["code"] == code, (name, body)
            assert body["error"]["route"] == "thing"
    assert "database on fire" in (await (await gw.get("/v1/thing/boom")).json())["error"]["message"]


async def test_refused_connection_is_502(make_gateway: Any) -> None:
    port = free_port()
    gw = await make_gateway(UPSTREAM_YAML.format(url=f"http://127.0.0.1:{port}"), env={})
    resp = await gw.get("/v1/thing/x")
    body = await resp.json()
    assert resp.status == 502
    assert body["error"]["code"] == "upstream_unreachable"
    assert body["error"]["route"] == "thing"
    assert "flaky" in body["error"]["message"]


STALLED_YAML = """
upstreams:
  stuck:
    base_url: {url}
    retries: {{attempts: 1}}
routes:
  before_list:
    stable: GET /v1/before
    upstream: stuck
    pagination: {{style: before, param: before, field: t}}
    targets: ["GET /before"]
  offset_list:
    stable: GET /v1/offset
    upstream: stuck
    pagination: {{style: offset, page_size: 2, max_items: 50}}
    targets: ["GET /offset"]
  big_list:
    stable: GET /v1/big
    upstream: stuck
    pagination: {{style: offset, page_size: 10, max_items: 25}}
    targets: ["GET /big"]
"""


async def test_an_upstream_that_ignores_paging_is_stopped(make_gateway: Any, aiohttp_server: Any) -> None:
    """Without a guard an upstream ignoring before/offset would make all=true loop forever."""
    calls = {"before": 0, "offset": 0}

    async def before(_: web.Request) -> web.Response:
        calls["before"] += 1
        return web.json_response([{"t": "2026-01-02"}, {"t": "2026-01-01"}])  # `before` ignored

    async def offset(_: web.Request) -> web.Response:
        calls["offset"] += 1
        return web.json_response({"next": "http://x/more", "results": [{"id": 1}, {"id": 2}]})  # no count

    async def big(request: web.Request) -> web.Response:
        o = int(request.query["offset"])
        return web.json_response({"count": 1000, "next": "http://x/n", "results": [{"id": o + i} for i in range(10)]})

    app = web.Application()
    app.router.add_get("/before", before)
    app.router.add_get("/offset", offset)
    app.router.add_get("/big", big)
    upstream = await aiohttp_server(app)
    gw = await make_gateway(STALLED_YAML.format(url=str(upstream.make_url("/")).rstrip("/")), env={})
    for path, kind in (("/v1/before?all=true", "before"), ("/v1/offset?all=true", "offset")):
        resp = await gw.get(path)
        body = await resp.json()
        assert resp.status == 502, body
        assert body["error"]["code"] == "pagination_stalled"
        # before: the page that ran out is asked again from above its last run first, then the stall is seen;
        # offset: the second page does not start with the item served last, and one more at another offset
        # answers the same page (gateway.pagination.offset)
        assert calls[kind] == 3, (kind, calls)
    resp = await gw.get("/v1/big?all=true")
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "collection_too_large"
    # paging with a cursor still works
    resp = await gw.get("/v1/big?limit=10")
    assert resp.status == 200 and len((await resp.json())["items"]) == 10


ECHO_YAML = """
upstreams:
  echo:
    base_url: {url}
    retries: {{attempts: 1}}
    auth:
      bearer: {{env: ECHO_TOKEN}}
routes:
  echoed:
    stable: GET /v1/echo/{{what}}
    upstream: echo
    targets: ["GET /{{what}}"]
"""


async def test_an_upstream_echoing_the_credential_never_leaks_it(make_gateway: Any, aiohttp_server: Any) -> None:
    token = "phx_echo_secret_0123456789abcdef"

    async def echo(request: web.Request) -> web.Response:
        status = {"auth": 401, "bad": 400, "boom": 500}[request.match_info["what"]]
        return web.json_response({"detail": f"got {request.headers['Authorization']}"}, status=status)

    app = web.Application()
    app.router.add_get("/{what}", echo)
    upstream = await aiohttp_server(app)
    gw = await make_gateway(ECHO_YAML.format(url=str(upstream.make_url("/")).rstrip("/")), env={"ECHO_TOKEN": token})
    for what, status in (("auth", 502), ("bad", 502), ("boom", 502)):  # a GET's 400 is the route breaking
        resp = await gw.get(f"/v1/echo/{what}")
        text = await resp.text()
        assert resp.status == status, text
        assert "[redacted]" in text and token not in text
    for page in ("/status", "/metrics"):
        resp = await gw.get(page)
        assert token not in await resp.text()
