"""Mutant tests of the call-level stack and the per-route pipeline's composition (``make mutants``, group
``calls``): gateway/pipeline/{calls,stages,core,__init__}.py and gateway/proxy/{__init__,targets,answer}.py.

Each test drives the gateway through real HTTP against the scriptable upstream (tests/fake_upstream.py)
and asserts what a caller or the upstream sees; its docstring names the wrong changes it catches.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from tests.fake_upstream import FakeUpstream, Reply, start_fake

TOKEN = "tok_" + "c" * 28

YAML = """
upstreams:
  fake:
    base_url: {url}
    retries: {{attempts: 1}}
    circuit_breaker: {{failures: 0}}
    headers: {{X-Team: blue}}
    auth: {{bearer: {{env: CALLS_TOKEN}}}}
  accepting:
    base_url: {url}
    retries: {{attempts: 1}}
    headers: {{Accept: text/csv}}
routes:
  item:
    stable: GET /v1/item/{{name}}
    upstream: fake
    targets: ["GET /item/{{name}}"]
    response: {{item: {{name: id}}}}
  open:
    stable: GET /v1/open/{{name}}
    upstream: fake
    auth: none
    targets: ["GET /open/{{name}}"]
  write:
    stable: POST /v1/write
    upstream: fake
    targets: ["POST /write"]
  erase:
    stable: DELETE /v1/erase/{{name}}
    upstream: fake
    targets:
      - request: PATCH /erase/{{name}}
        body: {{const: {{deleted: true}}}}
    response: {{status: 204}}
  csv:
    stable: GET /v1/csv
    upstream: accepting
    auth: none
    targets: ["GET /csv"]
    response: {{raw: true}}
"""


async def _gateway(make_gateway: Any, aiohttp_server: Any) -> tuple[TestClient[Any, Any], FakeUpstream, CollectorRegistry]:
    fake, _, url = await start_fake(aiohttp_server)
    registry = CollectorRegistry()
    gw = await make_gateway(YAML.format(url=url), env={"CALLS_TOKEN": TOKEN}, registry=registry)
    return gw, fake, registry


def _seen(fake: FakeUpstream, path: str) -> dict[str, str]:
    hits = [h for h in fake.hits if h.path == path]
    assert len(hits) == 1, hits
    return hits[0].headers


async def test_the_upstream_request_carries_credentials_the_request_id_and_the_upstreams_headers(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Kills: the Accept default, X-Request-ID, the upstream's own headers or the credentials dropped or
    renamed (``Targets.headers``); Content-Type sent on a GET."""
    gw, fake, _ = await _gateway(make_gateway, aiohttp_server)
    fake.script("/item/x", Reply(200, json.dumps({"id": "x"}).encode()))
    resp = await gw.get("/v1/item/x", headers={"X-Request-ID": "req-calls-1"})
    assert resp.status == 200 and await resp.json() == {"name": "x"}
    seen = _seen(fake, "/item/x")
    assert seen["Authorization"] == f"Bearer {TOKEN}"
    assert seen["X-Request-ID"] == resp.headers["X-Request-ID"]
    assert seen["Accept"] == "application/json, */*;q=0.5"
    assert seen["X-Team"] == "blue"
    assert "Content-Type" not in seen


async def test_an_open_route_sends_no_credentials_and_an_upstreams_accept_is_kept(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Kills: credentials sent on an ``auth: none`` route; the upstream's own Accept overwritten."""
    gw, fake, _ = await _gateway(make_gateway, aiohttp_server)
    assert (await gw.get("/v1/open/x")).status == 200
    assert "Authorization" not in _seen(fake, "/open/x")
    fake.script("/csv", Reply(200, b"a,b\n1,2\n", {"Content-Type": "text/csv"}))
    resp = await gw.get("/v1/csv")
    assert resp.status == 200 and await resp.read() == b"a,b\n1,2\n"
    assert _seen(fake, "/csv")["Accept"] == "text/csv"


async def test_a_writes_body_reaches_the_upstream_as_json(make_gateway: Any, aiohttp_server: Any) -> None:
    """Kills: the body dropped on its way to ``send``; Content-Type not set for a body."""
    gw, fake, _ = await _gateway(make_gateway, aiohttp_server)
    fake.script("/write", Reply(201, json.dumps({"id": "w1", "title": "t"}).encode()))
    resp = await gw.post("/v1/write", json={"title": "t"})
    assert resp.status == 201 and await resp.json() == {"id": "w1", "title": "t"}
    hit = next(h for h in fake.hits if h.path == "/write")
    assert hit.method == "POST" and json.loads(hit.body) == {"title": "t"}
    assert hit.headers["Content-Type"] == "application/json"


async def test_a_const_body_is_sent_with_its_content_type(make_gateway: Any, aiohttp_server: Any) -> None:
    """Kills: a const body not sent (or the request's sent instead), its Content-Type missing."""
    gw, fake, _ = await _gateway(make_gateway, aiohttp_server)
    fake.script("/erase/x", Reply(200, json.dumps({"id": "x", "deleted": True}).encode()))
    resp = await gw.delete("/v1/erase/x")
    assert resp.status == 204
    hit = next(h for h in fake.hits if h.path == "/erase/x")
    assert hit.method == "PATCH" and json.loads(hit.body) == {"deleted": True}
    assert hit.headers["Content-Type"] == "application/json"


async def test_each_upstream_call_is_counted_and_timed_by_its_status_class(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Kills: the per-upstream request counter or latency histogram not written, or under other labels."""
    gw, fake, registry = await _gateway(make_gateway, aiohttp_server)
    fake.script("/open/x", 200)
    fake.script("/open/y", 500)
    assert (await gw.get("/v1/open/x")).status == 200
    assert (await gw.get("/v1/open/y")).status == 502
    labels = {"upstream": "fake", "route": "open"}
    assert registry.get_sample_value("gateway_upstream_requests_total", {**labels, "outcome": "2xx"}) == 1
    assert registry.get_sample_value("gateway_upstream_requests_total", {**labels, "outcome": "5xx"}) == 1
    assert registry.get_sample_value("gateway_upstream_request_duration_seconds_count", labels) == 2
