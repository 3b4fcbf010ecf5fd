"""What the pass-through hot path's cuts must keep, through real HTTP: a credential with a line break is
refused before anything is sent (checked where it is resolved, no longer per exchange), a 429 hold-off
binds an upstream without a budget (its credential is worked out only once something is kept for it),
a target path without parameters (rendered once per route) is still what the upstream sees, the gone
check's sample call still asks its own target, and a passed-through answer keeps its ETag/304."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.fake_upstream import Reply, start_fake

JSON = {"Content-Type": "application/json"}

YAML = """
upstreams:
  fake:
    base_url: {url}
    timeouts: {{connect: 1s, read: 1s, total: 3s}}
    retries: {{attempts: 1}}
    auth: {{bearer: {{env: FAKE_KEY}}}}
routes:
  fixed:
    stable: GET /v1/fixed
    upstream: fake
    targets: ["GET /fixed/list?kind=a&n=1"]
  thing:
    stable: GET /v1/things/{{name}}
    upstream: fake
    targets: ["GET /things/{{name}}"]
"""


async def _gateway(make_gateway: Any, aiohttp_server: Any, key: str = "k-123456") -> tuple[Any, TestClient[Any, Any]]:
    fake, _server, url = await start_fake(aiohttp_server)
    gw: TestClient[Any, Any] = await make_gateway(YAML.format(url=url), env={"FAKE_KEY": key})
    return fake, gw


async def _settled() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_credential_with_a_line_break_is_refused_before_anything_is_sent(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    fake, gw = await _gateway(make_gateway, aiohttp_server, key="k-123\r\nX-Injected: yes")
    fake.script("/things/a", Reply(200, b'{"id": "a"}', JSON))
    resp = await gw.get("/v1/things/a")
    body = await resp.json()
    assert resp.status == 502, body
    assert body["error"]["code"] == "bad_upstream_header" and body["error"]["route"] == "thing"
    assert "line break" in body["error"]["message"] and "k-123" not in body["error"]["message"]
    assert fake.count() == 0
    await _settled()
    metrics = await (await gw.get("/metrics")).text()
    # refused before sending: no upstream request counted or timed, the failure counted once
    assert not [ln for ln in metrics.splitlines() if ln.startswith("gateway_upstream_requests_total{")]
    assert 'gateway_upstream_errors_total{kind="config",route="thing",upstream="fake"} 1.0' in metrics


async def test_a_429_hold_off_binds_an_upstream_without_a_budget(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, gw = await _gateway(make_gateway, aiohttp_server)
    fake.script("/things/a", Reply(429, b'{"detail": "slow down"}', {**JSON, "Retry-After": "600"}))
    first = await gw.get("/v1/things/a")
    assert first.status in (429, 502, 503), await first.text()
    assert fake.count() == 1
    second = await gw.get("/v1/things/a")
    body = await second.json()
    assert second.status == 503 and body["error"]["code"] == "upstream_rate_limited", body
    assert int(second.headers["Retry-After"]) > 500
    assert fake.count() == 1  # held off inside the gateway: nothing sent


async def test_a_target_without_parameters_is_asked_as_declared_every_time(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    fake, gw = await _gateway(make_gateway, aiohttp_server)
    fake.script("/fixed/list", Reply(200, b'{"items": []}', JSON))
    for _ in range(3):
        resp = await gw.get("/v1/fixed")
        assert resp.status == 200 and await resp.json() == {"items": []}
    assert [(h.path, h.query) for h in fake.hits] == [("/fixed/list", "kind=a&n=1")] * 3
    assert all(h.headers.get("Authorization") == "Bearer k-123456" for h in fake.hits)
    assert len({h.headers["X-Request-ID"] for h in fake.hits}) == 3


async def test_a_passed_through_answer_keeps_its_etag_and_304(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, gw = await _gateway(make_gateway, aiohttp_server)
    fake.script("/things/a", Reply(200, b'{"id": "a"}', JSON))
    resp = await gw.get("/v1/things/a")
    assert resp.status == 200 and await resp.read() == b'{"id": "a"}'
    etag = resp.headers["ETag"]
    assert etag.startswith('W/"') and resp.headers["Content-Type"] == "application/json; charset=utf-8"
    again = await gw.get("/v1/things/a", headers={"If-None-Match": etag})
    assert again.status == 304 and again.headers["ETag"] == etag and await again.read() == b""
    await _settled()
    metrics = await (await gw.get("/metrics")).text()
    assert "gateway_upstream_buffered_bytes 0.0" in metrics
    ok = 'gateway_upstream_requests_total{outcome="2xx",route="thing",upstream="fake"} 2.0'
    assert ok in metrics, [ln for ln in metrics.splitlines() if "upstream_requests" in ln]


async def test_html_from_the_upstream_never_passes_as_data(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, gw = await _gateway(make_gateway, aiohttp_server)
    fake.script("/things/a", Reply(200, b"<html>sign in</html>", {"Content-Type": "text/html"}))
    resp = await gw.get("/v1/things/a")
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "upstream_bad_json" and body["error"]["route"] == "thing"


async def test_a_one_target_cached_route_still_reads_the_upstream_cache_control(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """The ``answered`` stage stays where a cache fills from a one-target route: the fill is told the
    upstream's Cache-Control (no-store is never kept), and a plain answer is kept."""
    fake, _server, url = await start_fake(aiohttp_server)
    yaml = YAML.format(url=url) + """  kept:
    stable: GET /v1/kept/{name}
    upstream: fake
    targets: ["GET /things/{name}"]
    cache: {ttl: 10m}
"""
    gw: TestClient[Any, Any] = await make_gateway(yaml, env={"FAKE_KEY": "k-123456", "ROUTEGATE_CACHE": "on"})
    fake.script("/things/secret", Reply(200, b'{"id": "s"}', {**JSON, "Cache-Control": "no-store"}))
    fake.script("/things/plain", Reply(200, b'{"id": "p"}', JSON))
    for _ in range(2):
        assert (await gw.get("/v1/kept/secret")).status == 200
        assert (await gw.get("/v1/kept/plain")).status == 200
    assert fake.count("/things/secret") == 2  # never stored
    assert fake.count("/things/plain") == 1  # the second was a hit


async def test_only_a_success_skips_the_status_mapping(make_gateway: Any, aiohttp_server: Any) -> None:
    """2xx answers pass the status stage without ``check_status``; a 300 (the first status past them) is
    still an unexpected redirect, never passed on as data."""
    fake, gw = await _gateway(make_gateway, aiohttp_server)
    fake.script("/things/a", Reply(300, b'{"choices": []}', JSON))
    fake.script("/things/b", Reply(299, b'{"id": "b"}', JSON))
    resp = await gw.get("/v1/things/a")
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "bad_redirect" and body["error"]["route"] == "thing"
    ok = await gw.get("/v1/things/b")
    assert ok.status == 299 and await ok.json() == {"id": "b"}  # a success status is passed on as it came
