"""What the cache hit's and the framing's cuts (issue 15 point 5) must keep, through real HTTP: the edge
checks made in one pass (and the TCP question asked only when it matters), a static route's match made
once, the cache verdicts and headers, the metrics children found once, and the access line redacted per
batched write and still stepping aside for any other logging set-up."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway import logs, metrics
from gateway.server import build_app
from tests.fake_upstream import Reply, start_fake
from tests.helpers.hostile import raw, request

YAML = """
upstreams:
  fake:
    base_url: {url}
    timeouts: {{connect: 1s, read: 1s, total: 3s}}
routes:
  notebook:
    stable: GET /v1/notebook
    upstream: fake
    targets: ["GET /notebook"]
    cache: {{ttl: 10m}}
  item:
    stable: GET /v1/items/{{name}}
    upstream: fake
    targets: ["GET /items/{{name}}"]
    cache: {{ttl: 10m}}
  write_item:
    stable: PUT /v1/items/{{name}}
    upstream: fake
    targets: ["PUT /items/{{name}}"]
"""
JSON = {"Content-Type": "application/json"}


async def _gateway(make_gateway: Any, aiohttp_server: Any) -> tuple[Any, TestClient[Any, Any]]:
    fake, _server, url = await start_fake(aiohttp_server)
    gw: TestClient[Any, Any] = await make_gateway(YAML.format(url=url), env={})
    fake.script("/notebook", Reply(200, b'{"id": "nb"}', JSON))
    for name in ("a", "b"):
        fake.script(f"/items/{name}", Reply(200, json.dumps({"id": name}).encode(), JSON))
    fake.script("/items/a", Reply(200, b'{"id": "a"}', JSON))
    return fake, gw


async def _settled() -> None:
    """Requests are counted and logged just after their answer is written (a callback of the same loop)."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_cache_hit_keeps_its_verdict_headers_and_validator(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, gw = await _gateway(make_gateway, aiohttp_server)
    first = await gw.get("/v1/notebook")
    assert first.status == 200 and first.headers["X-Cache"] == "MISS" and await first.json() == {"id": "nb"}
    hit = await gw.get("/v1/notebook")
    assert hit.status == 200 and hit.headers["X-Cache"] == "HIT" and await hit.json() == {"id": "nb"}
    assert hit.headers["Age"] == "0" and hit.headers["Date"] and hit.headers["ETag"].startswith('W/"')
    assert hit.headers["Cache-Control"] == "private" and len(hit.headers["X-Request-ID"]) == 32
    # the static route's one match serves a trailing slash and HEAD alike
    assert (await gw.get("/v1/notebook/")).headers["X-Cache"] == "HIT"
    head = await gw.head("/v1/notebook")
    assert head.status == 200 and head.headers["X-Cache"] == "HIT" and await head.read() == b""
    unchanged = await gw.get("/v1/notebook", headers={"If-None-Match": hit.headers["ETag"]})
    assert unchanged.status == 304 and await unchanged.read() == b""
    assert unchanged.headers["ETag"] == hit.headers["ETag"] and unchanged.headers["X-Cache"] == "HIT"
    # a caller's no-cache still goes upstream, its no-store is a bypass
    assert (await gw.get("/v1/notebook", headers={"Cache-Control": "no-cache"})).headers["X-Cache"] == "BYPASS"
    assert (await gw.get("/v1/notebook", headers={"Cache-Control": "no-store"})).headers["X-Cache"] == "BYPASS"
    assert fake.count("/notebook") == 3


async def test_a_write_makes_its_entity_a_miss_and_leaves_the_others_hits(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """A parameter route's matches are per request: each name its own entry, each write its own marker."""
    fake, gw = await _gateway(make_gateway, aiohttp_server)
    fake.script("/items/b", Reply(200, b'{"id": "b"}', JSON))
    for name in ("a", "b"):
        assert (await gw.get(f"/v1/items/{name}")).headers["X-Cache"] == "MISS"
        got = await gw.get(f"/v1/items/{name}")
        assert got.headers["X-Cache"] == "HIT" and await got.json() == {"id": name}
    fake.script("/items/a", Reply(200, b'{"id": "a", "v": 2}', JSON))
    assert (await gw.put("/v1/items/a", json={"v": 2})).status == 200
    after = await gw.get("/v1/items/a")
    assert after.headers["X-Cache"] == "MISS" and await after.json() == {"id": "a", "v": 2}
    assert (await gw.get("/v1/items/b")).headers["X-Cache"] == "HIT"
    assert fake.count("/items/a", "GET") == 2 and fake.count("/items/b", "GET") == 1


async def test_the_edge_checks_in_one_pass_refuse_what_they_refused(make_gateway: Any, aiohttp_server: Any) -> None:
    fake, gw = await _gateway(make_gateway, aiohttp_server)
    ok = await gw.get("/v1/notebook", headers={"Origin": "https://elsewhere.example"})  # a read: any origin
    assert ok.status == 200
    foreign = await gw.get("/v1/notebook", headers={"Host": "evil.example"})
    assert foreign.status == 421 and foreign.content_type == "application/json" and "X-Request-ID" in foreign.headers
    cross = await gw.put("/v1/items/a", json={}, headers={"Origin": "https://evil.example"})
    assert cross.status == 403 and (await cross.json())["error"]["code"] == "cross_origin_write"
    assert fake.count("/items/a", "PUT") == 0  # never forwarded
    same = await gw.put("/v1/items/a", json={}, headers={"Origin": f"http://{gw.host}:{gw.port}"})
    assert same.status == 200 and fake.count("/items/a", "PUT") == 1
    assert (await gw.get("/v1/notebook", headers={"X-Big": "x" * 9000})).status == 431
    assert (await gw.get("/v1/notebook?" + "q" * 9000)).status == 414
    many = {f"X-H{i}": "v" for i in range(101)}
    assert (await gw.get("/v1/notebook", headers=many)).status == 431
    absolute = await raw(gw, request("GET http://evil.example/v1/notebook HTTP/1.1"))
    assert absolute.status == 400 and absolute.json()["error"]["code"] == "absolute_form_target"
    old = await raw(gw, request("GET /v1/notebook HTTP/1.0"))
    assert old.status == 200 and old.json() == {"id": "nb"}


async def test_over_a_unix_socket_the_host_is_not_checked_but_over_tcp_it_is(
    tmp_path: Path, aiohttp_server: Any
) -> None:
    """The workers' Unix sockets are no browser's: a foreign Host passes there, and only there."""
    fake, _server, url = await start_fake(aiohttp_server)
    fake.script("/notebook", Reply(200, b'{"id": "nb"}', JSON))
    routes = tmp_path / "routes.yaml"
    routes.write_text(YAML.format(url=url))
    runner = web.AppRunner(build_app(routes, registry=CollectorRegistry(), env={}))
    await runner.setup()
    sock = tmp_path / "gw.sock"
    unix, tcp = web.UnixSite(runner, str(sock)), web.TCPSite(runner, "127.0.0.1", 0)
    await unix.start()
    await tcp.start()
    try:
        port = runner.addresses[-1][1]
        unix_session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(sock)))
        async with unix_session as session, session.get("http://evil.example/v1/notebook") as resp:
            assert resp.status == 200 and await resp.json() == {"id": "nb"}
        async with aiohttp.ClientSession() as session:
            url_tcp = f"http://127.0.0.1:{port}/v1/notebook"
            async with session.get(url_tcp, headers={"Host": "evil.example"}) as resp:
                assert resp.status == 421
            async with session.get(url_tcp) as resp:
                assert resp.status == 200 and resp.headers["X-Cache"] == "HIT"
    finally:
        await runner.cleanup()


async def test_answers_are_counted_exactly_when_the_children_memo_starts_over(
    make_gateway: Any, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "_ANSWERED_KEPT", 2)
    _fake, gw = await _gateway(make_gateway, aiohttp_server)
    for _ in range(3):
        assert (await gw.get("/v1/notebook")).status == 200
        assert (await gw.get("/v1/nothing")).status == 404
        assert (await gw.request("PATCH", "/v1/notebook")).status == 405
        assert (await gw.request("PURGE", "/v1/nothing")).status == 404
    await _settled()
    text = await (await gw.get("/metrics")).text()
    counted = sorted(ln for ln in text.splitlines() if ln.startswith("gateway_requests_total{"))
    assert counted == [
        'gateway_requests_total{method="GET",route="(none)",status_class="4xx"} 3.0',
        'gateway_requests_total{method="GET",route="notebook",status_class="2xx"} 3.0',
        'gateway_requests_total{method="PATCH",route="(none)",status_class="4xx"} 3.0',
        'gateway_requests_total{method="PURGE",route="(none)",status_class="4xx"} 3.0',
    ]
    assert 'gateway_request_duration_seconds_count{method="GET",route="notebook"} 3.0' in text


async def test_access_lines_of_a_turn_are_redacted_in_their_one_write(
    make_gateway: Any, aiohttp_server: Any, access_lines: tuple[logs.AccessLines, io.StringIO]
) -> None:
    _fake, gw = await _gateway(make_gateway, aiohttp_server)
    _, stream = access_lines
    answers = await asyncio.gather(
        gw.get("/v1/notebook"), gw.get("/v1/items/secret-key-123456"), gw.get("/v1/nothing/SECRET-KEY-123456")
    )
    assert sorted(a.status for a in answers) == [200, 200, 404]
    await _settled()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    requests = [line for line in lines if line.get("event") == "request"]
    assert sorted(line["path"] for line in requests) == sorted(
        ["/v1/notebook", f"/v1/items/{logs.REDACTED}", f"/v1/nothing/{logs.REDACTED}"]
    )
    assert "secret-key-123456" not in stream.getvalue().lower()
    nb = next(line for line in requests if line["route"] == "notebook")
    assert nb["status"] == 200 and nb["client"] == "-" and nb["upstream_calls"] == 1 and nb["upstream_ms"] > 0
    assert nb["cache"] == "miss" and nb["error"] is None and nb["upstream_status"] == 200
    assert (await gw.get("/v1/notebook")).headers["X-Cache"] == "HIT"
    await _settled()
    hit = _access(stream)[-1]
    assert hit["cache"] == "hit" and hit["upstream_calls"] == 0 and hit["upstream_ms"] == 0.0
    assert hit["upstream_status"] is None


async def test_the_access_line_steps_aside_once_another_handler_is_added(
    make_gateway: Any, aiohttp_server: Any, access_lines: tuple[logs.AccessLines, io.StringIO]
) -> None:
    """The set-up is checked once a loop turn: a handler added between requests gets real records."""
    _fake, gw = await _gateway(make_gateway, aiohttp_server)
    _, stream = access_lines
    assert (await gw.get("/v1/notebook")).status == 200
    await _settled()
    written = len(_access(stream))
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    try:
        assert (await gw.get("/v1/notebook")).status == 200
        await _settled()
    finally:
        logging.getLogger().removeHandler(keep)
    access = [r for r in records if r.name == "gateway.access"]
    assert len(access) == 1 and access[0].fields["cache"] == "hit"  # type: ignore[attr-defined]
    lines = _access(stream)
    assert len(lines) == written + 1 and lines[-1]["cache"] == "hit"  # the same line, through the formatter


def _access(stream: io.StringIO) -> list[dict[str, Any]]:
    """The access lines written (the test server's own aiohttp.access lines left out)."""
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["logger"] == "gateway.access"]
