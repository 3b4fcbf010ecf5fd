"""What the hot path's framing without aiohttp middleware must keep, through real HTTP: every request
framed (request id, edge checks, JSON errors), both request metrics exact per status class, one access
line as the JSON formatter writes it, and every stable answer (streams too) private."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from gateway import logs
from gateway.cache.policy import CacheKey
from gateway.cache.store import Entry, MemoryBackend
from gateway.fastmetrics import FastCounter, FastHistogram
from gateway.metrics import BUCKETS, status_class
from gateway.server import GATEWAY
from gateway.trace import RequestTrace
from tests.fake_upstream import Reply, start_fake
from tests.helpers.hostile import FAKE_YAML

RAW_YAML = (
    FAKE_YAML
    + """  raw_thing:
    stable: GET /v1/raw/{{name}}
    upstream: fake
    targets: ["GET /things/{{name}}"]
    response: {{raw: true}}
"""
)
JSON = {"Content-Type": "application/json"}


async def _gateway(make_gateway: Any, aiohttp_server: Any) -> tuple[Any, TestClient[Any, Any]]:
    fake, _server, url = await start_fake(aiohttp_server)
    gw: TestClient[Any, Any] = await make_gateway(RAW_YAML.format(url=url), env={"FAKE_KEY": "k-123456"})
    return fake, gw


async def _settled() -> None:
    """Requests are counted just after their answer is written (a callback of the same loop)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_metrics_count_each_status_class_exactly(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, gw = await _gateway(make_gateway, aiohttp_server)
    fake.script("/things/a", *[Reply(200, b'{"id": "a"}', JSON)] * 3)
    fake.script("/things/gone", Reply(404, b'{"detail": "no"}', JSON))
    fake.script("/things/bad", *[Reply(500, b"{}", JSON)] * 4)  # retried once, then a 502
    for _ in range(3):
        assert (await gw.get("/v1/things/a")).status == 200
    assert (await gw.get("/v1/things/gone")).status == 404
    for _ in range(2):
        assert (await gw.get("/v1/nothing-here")).status == 404  # no route: route "(none)"
    assert (await gw.get("/v1/things/bad")).status == 502
    assert (await gw.get("/healthz")).status == 200  # own endpoints are not counted
    assert (await gw.post("/healthz")).status == 405  # an own path with another method is: a 4xx of no route
    await _settled()
    text = await (await gw.get("/metrics")).text()
    counted = sorted(ln for ln in text.splitlines() if ln.startswith("gateway_requests_total{"))
    assert counted == [
        'gateway_requests_total{method="GET",route="(none)",status_class="4xx"} 2.0',
        'gateway_requests_total{method="GET",route="get_thing",status_class="2xx"} 3.0',
        'gateway_requests_total{method="GET",route="get_thing",status_class="4xx"} 1.0',
        'gateway_requests_total{method="GET",route="get_thing",status_class="5xx"} 1.0',
        'gateway_requests_total{method="POST",route="(none)",status_class="4xx"} 1.0',
    ]
    assert "# HELP gateway_requests_total Stable-side requests answered." in text
    assert "# TYPE gateway_request_duration_seconds histogram" in text
    registry = gw.server.app[GATEWAY].registry
    labels = {"route": "get_thing", "method": "GET"}
    assert registry.get_sample_value("gateway_request_duration_seconds_count", labels) == 5
    buckets = [
        registry.get_sample_value("gateway_request_duration_seconds_bucket", {**labels, "le": le})
        for le in [*(str(b) for b in BUCKETS), "+Inf"]
    ]
    assert buckets == sorted(buckets) and buckets[-1] == 5  # cumulative, +Inf is the count
    assert 0 < (registry.get_sample_value("gateway_request_duration_seconds_sum", labels) or 0) < 30
    assert 'gateway_request_duration_seconds_count{method="GET",route="(none)"} 2.0' in text


def _families(registry: CollectorRegistry, multiprocess: bool) -> tuple[FastCounter, FastHistogram]:
    return (
        FastCounter(
            "gateway_requests_total",
            "Stable-side requests answered.",
            ["route", "method", "status_class"],
            registry=registry,
            multiprocess=multiprocess,
        ),
        FastHistogram(
            "gateway_request_duration_seconds",
            "Stable-side request latency.",
            ["route", "method"],
            buckets=BUCKETS,
            registry=registry,
            multiprocess=multiprocess,
        ),
    )


def test_both_metric_modes_expose_the_same_text() -> None:
    """One process (a collector) and --workers (flushed into the client's own types): the same /metrics."""
    seen = [("r", "GET", 200, 0.0004), ("r", "GET", 200, 0.003), ("r", "POST", 503, 2.0), ("(none)", "GET", 404, 99.0)]
    texts = []
    for multiprocess in (False, True):
        registry = CollectorRegistry()
        requests, seconds = _families(registry, multiprocess)
        for route, method, status, elapsed in seen:
            requests.labels(route, method, status_class(status)).inc()
            seconds.labels(route, method).observe(elapsed)
        requests.flush()
        seconds.flush()
        texts.append(generate_latest(registry).decode())
    assert texts[0] == texts[1]
    assert 'gateway_request_duration_seconds_bucket{le="0.0005",method="GET",route="r"} 1.0' in texts[0]
    assert 'gateway_request_duration_seconds_bucket{le="0.005",method="GET",route="r"} 2.0' in texts[0]
    assert 'gateway_request_duration_seconds_bucket{le="+Inf",method="GET",route="(none)"} 1.0' in texts[0]
    assert 'gateway_request_duration_seconds_sum{method="GET",route="(none)"} 99.0' in texts[0]
    assert 'gateway_requests_total{method="POST",route="r",status_class="5xx"} 1.0' in texts[0]
    with pytest.raises(ValueError, match="expected labels"):
        requests.labels("r", "GET")


async def test_multiprocess_counts_reach_the_shared_values_at_the_end_of_the_loop_turn() -> None:
    registry = CollectorRegistry()
    requests, seconds = _families(registry, True)
    for _ in range(3):
        requests.labels("r", "GET", "2xx").inc()
        seconds.labels("r", "GET").observe(0.01)
    labels = {"route": "r", "method": "GET", "status_class": "2xx"}
    assert registry.get_sample_value("gateway_requests_total", labels) == 0  # not yet: one flush per turn
    await asyncio.sleep(0)
    assert registry.get_sample_value("gateway_requests_total", labels) == 3
    requests.labels("r", "GET", "2xx").inc()
    seconds.labels("r", "GET").observe(0.01)
    await asyncio.sleep(0)
    assert registry.get_sample_value("gateway_requests_total", labels) == 4
    timed = {"route": "r", "method": "GET"}
    assert registry.get_sample_value("gateway_request_duration_seconds_count", timed) == 4
    assert registry.get_sample_value("gateway_request_duration_seconds_bucket", {**timed, "le": "0.01"}) == 4
    assert registry.get_sample_value("gateway_request_duration_seconds_sum", timed) == pytest.approx(0.04)


async def test_own_endpoints_are_framed_like_stable_ones(make_gateway: Any, aiohttp_server: Any) -> None:
    _fake, gw = await _gateway(make_gateway, aiohttp_server)
    ids = set()
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/nothing-here"):
        resp = await gw.get(path)
        ids.add(resp.headers["X-Request-ID"])
    assert len(ids) == 5  # one id per request
    resp = await gw.get("/healthz", headers={"X-Request-ID": "trace-me.1"})
    assert resp.headers["X-Request-ID"] == "trace-me.1"
    resp = await gw.get("/healthz", headers={"X-Request-ID": "bad id\u00e9"})
    assert resp.headers["X-Request-ID"] != "bad id\u00e9" and len(resp.headers["X-Request-ID"]) == 32
    # an own endpoint's error is the same JSON error, with its id
    resp = await gw.post("/admin/reload", headers={"X-Request-ID": "admin-1"})
    assert resp.status == 403 and resp.headers["X-Request-ID"] == "admin-1"
    assert (await resp.json())["error"]["code"] == "admin_disabled"
    # the edge and size checks run before an own endpoint too
    resp = await gw.get("/healthz", headers={"X-Big": "x" * 9000})
    assert resp.status == 431 and resp.content_type == "application/json" and "X-Request-ID" in resp.headers
    resp = await gw.get("/readyz", headers={"Host": "evil.example"})
    assert resp.status in (400, 421) and resp.content_type == "application/json"


async def test_an_own_path_with_another_method_is_a_405_that_says_what_is_allowed(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """GET /admin/reload or POST /metrics is the wrong method on a known path, not an unknown stable route."""
    _fake, gw = await _gateway(make_gateway, aiohttp_server)
    for method, path, allow in (
        ("GET", "/admin/reload", "POST"),
        ("POST", "/metrics", "GET, HEAD"),
        ("DELETE", "/admin/cache/purge", "POST"),
        ("PUT", "/status", "GET, HEAD"),
    ):
        resp = await gw.request(method, path)
        assert resp.status == 405, (method, path)
        assert resp.headers["Allow"] == allow and "X-Request-ID" in resp.headers
        error = (await resp.json())["error"]
        assert error["code"] == "method_not_allowed" and allow in error["message"]
    # every path the app registers an own handler for answers another method so
    registered: dict[str, set[str]] = {}
    for route in gw.server.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if "path" in info and route.method != "*":
            registered.setdefault(info["path"], set()).add(route.method)
    assert set(registered) >= {"/healthz", "/readyz", "/metrics", "/openapi.json", "/status", "/admin/reload"}
    for path, methods in registered.items():
        resp = await gw.request("PATCH", path)
        assert resp.status == 405 and resp.headers["Allow"] == ", ".join(sorted(methods)), path


async def test_a_relayed_raw_answer_is_private_and_counted(make_gateway: Any, aiohttp_server: Any) -> None:
    """A streamed answer's head goes out inside the pipeline; it is marked before, not after."""
    fake, gw = await _gateway(make_gateway, aiohttp_server)
    fake.script("/things/r", Reply(200, b"raw bytes", {"Content-Type": "application/octet-stream"}))
    resp = await gw.get("/v1/raw/r")
    assert resp.status == 200 and await resp.read() == b"raw bytes"
    assert resp.headers["Cache-Control"] == "private" and "X-Request-ID" in resp.headers
    await _settled()
    text = await (await gw.get("/metrics")).text()
    assert 'gateway_requests_total{method="GET",route="raw_thing",status_class="2xx"} 1.0' in text


@pytest.mark.parametrize(
    "path",
    ['/v1/x/a"b\\c', "/v1/x/\x01\x1f\x7f", "/v1/x/\u00e9\u2028\U0001f600", "/v1/x/secret-key-123456", "/v1/x"],
)
def test_the_request_line_is_the_formatters_line(access_lines: tuple[logs.AccessLines, io.StringIO], path: str) -> None:
    fast, stream = access_lines
    trace = RequestTrace(route="x", client="ci", upstream_calls=2, upstream_status=201, upstream_seconds=0.0123456)
    trace.cache, trace.error = "miss", "upstream_timeout"
    fast.write_request("rid-1", "GET", path, "x", 504, 12.345, trace)
    fast.write_request("rid-2", "PATCH", path, "(none)", 404, 0.0, RequestTrace())
    fields = [
        {
            "event": "request",
            "request_id": "rid-1",
            "method": "GET",
            "path": path,
            "route": "x",
            "client": "ci",
            "status": 504,
            "upstream_status": 201,
            "upstream_calls": 2,
            "duration_ms": 12.345,
            "upstream_ms": 12.346,
            "cache": "miss",
            "error": "upstream_timeout",
        },
        {
            "event": "request",
            "request_id": "rid-2",
            "method": "PATCH",
            "path": path,
            "route": "(none)",
            "client": None,
            "status": 404,
            "upstream_status": None,
            "upstream_calls": 0,
            "duration_ms": 0.0,
            "upstream_ms": 0.0,
            "cache": None,
            "error": None,
        },
    ]
    lines = stream.getvalue().split("\n")[:-1]  # (not splitlines: U+2028 is no line end in JSON)
    assert len(lines) == 2
    for line, want in zip(lines, fields, strict=True):
        record = logging.LogRecord("gateway.access", logging.INFO, __file__, 1, "m", None, None)
        record.fields = want
        slow = fast.formatter.format(record)
        assert re.sub(r'"ts":"[^"]*"', "", line) == re.sub(r'"ts":"[^"]*"', "", slow)  # byte for byte
        assert list(json.loads(line)) == ["ts", "level", "logger", *want]
    if "secret" in path:
        assert "secret-key-123456" not in stream.getvalue() and logs.REDACTED in stream.getvalue()


async def test_the_memory_cache_evicts_the_least_recently_used_by_bytes() -> None:
    """A hit makes its entry the most recently used; storing past max_bytes drops the least recently used."""
    backend = MemoryBackend(max_bytes=1500)
    keys = [CacheKey("r", f"/v1/r/{n}", "d") for n in "abcd"]
    entry = Entry(200, (), b"x" * 400, 0.0, 60.0, 60.0, 0)
    size = entry.size(keys[0])
    assert 2 * size < 1500 < 3 * size  # room for two entries
    for key in keys[:2]:
        await backend.store(key, entry, 60)
    assert (await backend.lookup(keys[0], ("m",))).entry is entry  # a is now the most recent
    await backend.store(keys[2], entry, 60)  # c pushes out b, not a
    assert [(await backend.lookup(k, ("m",))).entry is entry for k in keys[:3]] == [True, False, True]
    assert backend.usage() == (2, 2 * size)
    await backend.store(keys[2], entry, 60)  # storing again replaces, counted once
    assert backend.usage() == (2, 2 * size)
    await backend.discard(keys[0])
    assert backend.usage() == (1, size)
    await backend.store(CacheKey("r", "/v1/r/huge", "d"), Entry(200, (), b"x" * 2000, 0.0, 1.0, 1.0, 0), 60)
    assert backend.usage() == (1, size)  # larger than the whole cache: not stored, nothing dropped
