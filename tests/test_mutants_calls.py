"""Mutant tests of the call-level stack and the per-route pipeline's composition (``make mutants``, group
``calls``): gateway/pipeline/{calls,stages,core,__init__}.py and gateway/proxy/{__init__,targets,answer}.py.

Each test drives the gateway through real HTTP against the scriptable upstream (tests/fake_upstream.py)
and asserts what a caller or the upstream sees; its docstring names the wrong changes it catches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.server import GATEWAY
from tests.fake_upstream import RESET, FakeUpstream, Hit, Reply, start_fake

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


async def _gateway(
    make_gateway: Any, aiohttp_server: Any
) -> tuple[TestClient[Any, Any], FakeUpstream, CollectorRegistry]:
    fake, _, url = await start_fake(aiohttp_server)
    registry = CollectorRegistry()
    gw = await make_gateway(YAML.format(url=url), env={"CALLS_TOKEN": TOKEN}, registry=registry)
    return gw, fake, registry


def _gateway_of(gw: Any) -> Any:
    """The Gateway behind a test client (its prober, its runtime's proxy)."""
    return gw.server.app[GATEWAY]


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


# --- the call-level stack's other routes: a next link's path check, failures counted, raw answers, cache

STACK = """
upstreams:
  fake:
    base_url: {url}
    retries: {{attempts: 1}}
    circuit_breaker: {{failures: 0}}
    auth: {{bearer: {{file_env: STACK_TOKEN_FILE}}}}
  retrying:
    base_url: {url}
    retries: {{attempts: 2, backoff: 1ms, max_backoff: 1ms}}
    circuit_breaker: {{failures: 0}}
  dead:
    base_url: {dead}
    retries: {{attempts: 1}}
    circuit_breaker: {{failures: 0}}
  keyless:
    base_url: {url}
    retries: {{attempts: 1}}
    auth: {{bearer: {{env: STACK_UNSET_TOKEN}}}}
  session:
    base_url: {url}
    retries: {{attempts: 1}}
    circuit_breaker: {{failures: 0}}
    auth:
      bearer: {{env: STACK_SESSION}}
      check: {{request: GET /me, expect: login}}
routes:
  item:
    stable: GET /v1/item/{{name}}
    upstream: fake
    params:
      lang: {{}}
      color: {{enum: [red, blue]}}
    targets: ["GET /item/{{name}}?lang={{lang}}"]
    response: {{item: {{name: id}}}}
    probe: {{params: {{name: known, lang: en}}}}
  listed:
    stable: GET /v1/listed
    upstream: fake
    auth: none
    pagination: {{style: next_url, next: next, items: results}}
    targets: ["GET /list"]
    response: {{items: {{id: id}}}}
    cache: {{ttl: 60s}}
  slashed:
    stable: GET /v1/slashed
    upstream: fake
    auth: none
    pagination: {{style: next_url, next: next, items: results}}
    targets: ["GET /slashed/"]
  feed:
    stable: GET /v1/feed
    upstream: fake
    auth: none
    pagination: {{style: next_url, next: next, items: results}}
    targets: ["GET /feed"]
  feedx:
    stable: GET /v1/feedx
    upstream: fake
    auth: none
    pagination: {{style: next_url, next: next, items: results}}
    targets: ["GET /feedX"]
  retry:
    stable: GET /v1/retry
    upstream: retrying
    auth: none
    targets: ["GET /retry"]
  dead:
    stable: GET /v1/dead
    upstream: dead
    auth: none
    targets: ["GET /dead"]
  keyless:
    stable: GET /v1/keyless
    upstream: keyless
    targets: ["GET /keyless"]
  blob:
    stable: GET /v1/blob/{{name}}
    upstream: fake
    auth: none
    targets: ["GET /blob/{{name}}"]
    response:
      raw: true
      headers: {{X-Name: {{param: name}}}}
    probe: {{params: {{name: probed}}}}
  kept:
    stable: GET /v1/kept/{{name}}
    upstream: fake
    auth: none
    targets: ["GET /kept/{{name}}"]
    response: {{raw: true}}
    cache: {{ttl: 60s}}
  upload:
    stable: POST /v1/upload/{{name}}
    upstream: fake
    auth: none
    targets: ["POST /upload/{{name}}"]
    response:
      raw: true
      headers: {{X-Name: {{param: name}}}}
  script:
    stable: GET /v1/script/{{name}}
    upstream: fake
    auth: none
    targets: ["GET /script/{{name}}"]
    shape: {{content_type: application/javascript}}
    response: {{raw: true}}
  owned:
    stable: GET /v1/owned/{{name}}
    upstream: fake
    auth: none
    pagination: {{style: next_url, next: next, items: results}}
    fallback_on: [404]
    targets: ["GET /retired/{{name}}", "GET /owned/{{name}}"]
  moved:
    stable: GET /v1/moved/{{name}}
    upstream: fake
    auth: none
    fallback_on: [404]
    targets: ["GET /old/{{name}}", "GET /new/{{name}}"]
    probe: {{params: {{name: known}}}}
  doc:
    stable: GET /v1/doc/{{name}}
    upstream: fake
    auth: none
    targets: ["GET /doc/{{name}}"]
    cache: {{ttl: 60s}}
  doc_edit:
    stable: PATCH /v1/doc/{{name}}
    upstream: fake
    auth: none
    targets: ["PATCH /doc/{{name}}"]
  signed:
    stable: GET /v1/signed
    upstream: session
    pagination: {{style: next_url, next: next, items: results}}
    targets: ["GET /signed"]
  mixed:
    stable: GET /v1/mixed
    upstream: fake
    auth: none
    pagination: {{style: before, param: before, field: t}}
    fallback_on: [404, shape]
    targets:
      - GET /mixed-a
      - request: GET /mixed-b
        pagination: {{style: page, items: results}}
"""
NDJSON = {"Accept": "application/x-ndjson"}


def _closed_port_url() -> str:
    """A 127.0.0.1 URL nothing listens on (the port was just bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class Stack:
    """A gateway on STACK in front of the scriptable upstream, with its metrics and the token's file."""

    def __init__(self, gw: TestClient[Any, Any], fake: FakeUpstream, registry: CollectorRegistry, token: Path) -> None:
        self.gw, self.fake, self.registry, self.token = gw, fake, registry, token

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def hits(self, path: str) -> list[Hit]:
        return [h for h in self.fake.hits if h.path == path]


async def _stack(make_gateway: Any, aiohttp_server: Any, tmp_path: Path) -> Stack:
    fake, _, url = await start_fake(aiohttp_server)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    registry = CollectorRegistry()
    env = {"STACK_TOKEN_FILE": str(token), "STACK_SESSION": "sess_" + "s" * 27}
    gw = await make_gateway(STACK.format(url=url, dead=_closed_port_url()), env=env, registry=registry)
    return Stack(gw, fake, registry, token)


def _page(items: list[Any], next_link: str | None = None) -> Reply:
    return Reply(200, json.dumps({"results": items, "next": next_link}).encode())


async def _error(resp: Any, status: int) -> dict[str, Any]:
    body = await resp.json()
    assert resp.status == status, body
    err: dict[str, Any] = body["error"]
    return err


async def test_a_next_link_on_the_targets_path_is_followed_with_its_whole_query(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills (``_followed``): the query split at its last '?' instead of the first, blank values dropped,
    the path's trailing slash no longer ignored on either side."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/list", _page([{"id": 1}], "/list/?page=2&q=&x=a?b"))
    s.fake.script("/list/", _page([{"id": 2}]))
    resp = await s.gw.get("/v1/listed?all=true")
    assert resp.status == 200, await resp.text()
    assert [i["id"] for i in (await resp.json())["items"]] == [1, 2]
    second = parse_qs(s.hits("/list/")[0].query, keep_blank_values=True)
    assert second == {"page": ["2"], "q": [""], "x": ["a?b"]}
    s.fake.script("/slashed/", _page([{"id": 3}], "/slashed?page=2"), _page([{"id": 4}]))
    s.fake.script("/slashed", _page([{"id": 4}]))
    resp = await s.gw.get("/v1/slashed?all=true")
    assert resp.status == 200, await resp.text()
    assert [i["id"] for i in (await resp.json())["items"]] == [3, 4]


async def test_a_next_link_off_the_targets_path_is_a_502_naming_the_route(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills (``_followed``): a link to a longer or shorter path taken for the target's (``rstrip`` of
    other characters), the error's code changed."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    for route, path, link in (
        ("feed", "/feed", "/feedX?page=2"),
        ("feedx", "/feedX", "/feed?page=2"),
        ("listed", "/list", "/other?page=2"),
    ):
        s.fake.script(path, _page([{"id": 1}], link))
        err = await _error(await s.gw.get(f"/v1/{route}?all=true"), 502)
        assert err["code"] == "pagination_bad_link" and err["route"] == route, err
        assert "next link off the route's target path" in err["message"]
    assert [h for h in s.fake.hits if h.query] == []  # no link followed


async def test_an_exchange_that_fails_is_counted_timed_and_on_the_access_line(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Kills (``Targets.upstream``): a failed exchange not counted (or counted under other labels), its time
    measured wrong, left off the request's access line; a call refused before sending counted."""
    caplog.set_level(logging.INFO, logger="gateway.access")
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    err = await _error(await s.gw.get("/v1/dead", headers={"X-Request-ID": "calls-dead"}), 502)
    assert err["route"] == "dead"
    labels = {"upstream": "dead", "route": "dead"}
    outcomes = [
        (sample.labels["outcome"], sample.value)
        for metric in s.registry.collect()
        if metric.name == "gateway_upstream_requests"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["route"] == "dead"
    ]
    assert outcomes == [("connect", 1.0)] and s.value("gateway_upstream_requests_total", **labels, outcome="connect")
    assert s.value("gateway_upstream_request_duration_seconds_count", **labels) == 1
    assert 0 <= (s.value("gateway_upstream_request_duration_seconds_sum", **labels) or -1) < 10
    line = _access(caplog, "calls-dead")
    assert line["upstream_calls"] == 1 and line["upstream_status"] is None
    # no credential: refused before anything is sent, so no upstream request is counted or timed
    err = await _error(await s.gw.get("/v1/keyless"), 502)
    assert err["code"] == "upstream_credentials_missing" and err["route"] == "keyless", err
    assert s.hits("/keyless") == []
    assert s.value("gateway_upstream_request_duration_seconds_count", upstream="keyless", route="keyless") is None
    assert not any(
        sample.labels.get("route") == "keyless"
        for metric in s.registry.collect()
        if metric.name == "gateway_upstream_requests"
        for sample in metric.samples
    )


async def test_a_retried_call_is_counted_under_its_route(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills: the route's name not passed to the upstream client (its retries counted under no route)."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/retry", 503, 200)
    assert (await s.gw.get("/v1/retry")).status == 200
    assert s.value("gateway_upstream_retries_total", upstream="retrying", route="retry", reason="503") == 1


def _access(caplog: pytest.LogCaptureFixture, rid: str) -> dict[str, Any]:
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == rid]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    fields: dict[str, Any] = lines[0].fields  # type: ignore[attr-defined]
    return fields


async def test_a_raw_answer_streamed_or_whole_carries_its_declared_header_and_marks_the_route_up(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills (``answer``): the params lost on the way to the relayed or rebuilt head (its ``X-Name``), a
    write's body not sent, the whole-answer path not rebuilt, the route not marked up again (either path)."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    for method, path in (("GET", "/blob/b1"), ("POST", "/upload/u1")):
        route, name = path.split("/")[1:]
        body = {"k": 1} if method == "POST" else None
        s.fake.script(path, 500, Reply(200, b"\x00raw bytes", {"Content-Type": "application/octet-stream"}))
        assert (await s.gw.request(method, f"/v1{path}", json=body)).status == 502
        assert s.value("gateway_route_up", route=route) == 0
        resp = await s.gw.request(method, f"/v1{path}", json=body)
        assert resp.status == 200 and await resp.read() == b"\x00raw bytes"
        assert resp.headers["X-Name"] == name
        assert s.value("gateway_route_up", route=route) == 1
    assert json.loads(s.hits("/upload/u1")[-1].body) == {"k": 1}


async def test_a_cached_raw_answer_is_stored_whole_and_the_upstreams_no_store_is_kept(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Kills: a cache fill of a raw route streamed instead of stored (``relay`` not cleared, or ignored), the
    answering target's headers not handed to the fill (no-store ignored), the cache's verdict left off the
    access line."""
    caplog.set_level(logging.INFO, logger="gateway.access")
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/kept/a", Reply(200, b"A-bytes", {"Content-Type": "application/octet-stream"}))
    for rid, verdict in (("kept-1", "miss"), ("kept-2", "hit")):
        resp = await s.gw.get("/v1/kept/a", headers={"X-Request-ID": rid})
        assert resp.status == 200 and await resp.read() == b"A-bytes"
        assert resp.headers["X-Cache"] == verdict.upper()
        assert _access(caplog, rid)["cache"] == verdict
    assert len(s.hits("/kept/a")) == 1
    s.fake.script("/kept/b", Reply(200, b"B", {"Content-Type": "text/plain", "Cache-Control": "no-store"}))
    for _ in range(2):
        resp = await s.gw.get("/v1/kept/b")
        assert resp.status == 200 and await resp.read() == b"B"
    assert len(s.hits("/kept/b")) == 2  # the upstream said no-store: never kept


async def test_a_write_drops_the_cached_read_of_what_it_wrote(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills: the write's path params not passed to the invalidation."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/doc/d", Reply(200, b'{"v": 1}'), Reply(200, b'{"v": 2}'))
    assert await (await s.gw.get("/v1/doc/d")).json() == {"v": 1}
    assert (await s.gw.get("/v1/doc/d")).headers["X-Cache"] == "HIT"
    s.fake.script("/doc/d", Reply(200, b'{"v": 2}'))
    assert (await s.gw.patch("/v1/doc/d", json={"v": 2})).status == 200
    resp = await s.gw.get("/v1/doc/d")
    assert resp.headers["X-Cache"] == "MISS" and await resp.json() == {"v": 2}


async def test_an_ndjson_stream_of_a_cached_collection_is_streamed_not_cached(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills: the cache stage passing no exchange on for a streamed collection; the cache stage not
    telling a collection from a one-call route (the stream then went through a cache fill, which
    cannot store a stream: an internal error counted as a 5xx after the lines went out)."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/list", _page([{"id": 1}, {"id": 2}]))
    for _ in range(2):
        resp = await s.gw.get("/v1/listed?all=true", headers=NDJSON)
        assert resp.status == 200 and "X-Cache" not in resp.headers
        assert [json.loads(line)["id"] for line in (await resp.text()).splitlines()] == [1, 2]
    assert len(s.hits("/list")) == 2
    await asyncio.sleep(0)  # each answer is counted once it is on the wire
    assert s.value("gateway_requests_total", route="listed", method="GET", status_class="2xx") == 2
    assert s.value("gateway_requests_total", route="listed", method="GET", status_class="5xx") is None


async def test_a_malformed_collection_page_is_a_502_naming_the_route(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills: the route not passed to the page's JSON parsing (``Proxy._json``)."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/feed", Reply(200, b'{"results": [1, '))
    err = await _error(await s.gw.get("/v1/feed"), 502)
    assert err["code"] == "upstream_bad_json" and err["route"] == "feed"


async def test_an_empty_signed_in_list_is_checked_against_the_session(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills: the proxy not given the session checks (an empty list from a dead session served as empty)."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/signed", _page([]))
    s.fake.script("/me", Reply(200, b'{"login": null}'))
    err = await _error(await s.gw.get("/v1/signed"), 502)
    assert err["code"] == "upstream_auth_rejected" and len(s.hits("/me")) == 1


async def test_a_fresh_walk_on_the_last_target_judges_its_404_instead_of_handing_over(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills (``fallback``): the last target handing over on a walk not yet under way there (a 500:
    nothing left to hand over to)."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/mixed-a", 404)
    s.fake.script("/mixed-b", 404)
    err = await _error(await s.gw.get("/v1/mixed"), 502)
    assert err["code"] == "upstream_route_gone" and err["route"] == "mixed", err
    assert len(s.hits("/mixed-a")) == len(s.hits("/mixed-b")) == 1
    s.fake.script("/mixed-b", _page([{"t": 1}]))
    resp = await s.gw.get("/v1/mixed")
    assert resp.status == 200 and (await resp.json())["items"] == [{"t": 1}]
    assert s.value("gateway_fallback_total", route="mixed", target="1") == 1


async def test_a_404_is_judged_by_the_probe_sample_asked_with_its_query(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills (``_sample_status``): the sample's query not parsed (its ``lang`` lost); a failing sample call
    not counted against the route."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/item/gone", 404)
    s.fake.script("/item/known", 404)
    err = await _error(await s.gw.get("/v1/item/gone?lang=fr"), 502)
    assert err["code"] == "upstream_route_gone" and err["route"] == "item"
    (sample,) = s.hits("/item/known")
    assert parse_qs(sample.query) == {"lang": ["en"]}
    assert sample.headers["Authorization"] == f"Bearer {TOKEN}"


async def test_a_404_of_a_later_target_is_judged_by_the_sample_on_that_target(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills (``_sample_status``): the sample asked of the first target instead of the one that answered
    404 (the retired first target 404s for everything, so the missing entity read as the route gone)."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/old/missing", 404)
    s.fake.script("/old/known", 404)
    s.fake.script("/new/missing", 404)
    s.fake.script("/new/known", Reply(200, b'{"name": "known"}'))
    err = await _error(await s.gw.get("/v1/moved/missing"), 404)
    assert err["route"] == "moved" and err["code"] == "not_found", err
    assert len(s.hits("/new/known")) == 1 and not s.hits("/old/known")


async def test_a_next_link_of_a_target_with_path_params_resumes_from_a_cursor(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills (``_link_target``): the cursor's link matched against the targets' paths without the request's
    path params (the walk, handed over to the second target, could not find it again: a 500)."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/retired/ann", 404)
    s.fake.script("/owned/ann", _page([{"id": 1}], "/owned/ann?page=2"))
    first = await s.gw.get("/v1/owned/ann?limit=1")
    body = await first.json()
    assert first.status == 200 and body["items"] == [{"id": 1}] and body["next_cursor"], body
    s.fake.script("/owned/ann", _page([{"id": 2}]))
    resp = await s.gw.get(f"/v1/owned/ann?limit=1&cursor={body['next_cursor']}")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["items"] == [{"id": 2}]
    assert s.hits("/owned/ann")[-1].query == "page=2" and len(s.hits("/retired/ann")) == 1


async def test_a_sample_call_that_fails_is_counted_and_the_404_stands(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills (``_sample_status``): the failed sample call not counted against the route (or a 500)."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/item/gone", 404)
    s.fake.script("/item/known", RESET)
    err = await _error(await s.gw.get("/v1/item/gone"), 404)
    assert err["route"] == "item"
    kinds = {
        sample.labels["kind"]: sample.value
        for metric in s.registry.collect()
        if metric.name == "gateway_upstream_errors"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["route"] == "item"
    }
    assert kinds == {"reset": 1.0}, kinds


async def test_probes_run_the_routes_call_with_its_sample(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills (``Proxy.probe``): the sample's query or the route dropped from the probe's exchange; a raw
    route's probe (no HTTP request) taken for a GET to stream."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/item/known", Reply(200, b'{"id": "known"}'))
    s.fake.script("/blob/probed", Reply(200, b"bytes", {"Content-Type": "application/octet-stream"}))
    prober = _gateway_of(s.gw).prober
    results = {r.route: r for r in await prober.run_round(["item", "blob"])}
    assert {name: r.outcome for name, r in results.items()} == {"item": "ok", "blob": "ok"}, results
    assert parse_qs(s.hits("/item/known")[0].query) == {"lang": ["en"]}
    assert len(s.hits("/blob/probed")) == 1
    assert s.value("gateway_route_up", route="blob") == s.value("gateway_route_up", route="item") == 1


async def test_a_bad_query_never_echoes_a_secret_even_one_renewed_a_moment_ago(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills (``Proxy.scrub``): the message redacted without re-reading the secrets first (a credential
    file rotated a second ago leaks), the details list not redacted."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    err = await _error(await s.gw.get(f"/v1/item/x?color={TOKEN}"), 400)
    assert TOKEN not in json.dumps(err) and err["details"]
    renewed = "tok_" + "r" * 40
    s.token.write_text(renewed)
    err = await _error(await s.gw.get(f"/v1/item/x?color={renewed}"), 400)
    assert err["code"] == "bad_query" and err["route"] == "item"
    assert renewed not in json.dumps(err), err
    assert s.fake.hits == []  # bad input is never forwarded


REPLICA = """
{server}
upstreams:
  fake:
    base_url: {url}
    retries: {{attempts: 1}}
    auth: {{bearer: {{env: REPLICA_TOKEN}}}}
routes:
  feed:
    stable: GET /v1/feed
    upstream: fake
    pagination: {{style: next_url, next: next, items: results}}
    targets: ["GET /feed"]
"""


async def test_a_cursor_is_signed_with_the_configured_key_else_one_derived_from_the_credentials(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Kills (``_cursor_secret``): ``server.cursor_key`` ignored (replicas holding other credentials refuse
    each other's cursors), the derived key not taken from the upstreams' credentials (a gateway with
    other credentials accepts the cursor)."""
    fake, _, url = await start_fake(aiohttp_server)

    async def replica(token: str, keyed: bool) -> TestClient[Any, Any]:
        server = "server:\n  cursor_key: {env: REPLICA_CURSOR_KEY}" if keyed else ""
        env = {"REPLICA_TOKEN": token, "REPLICA_CURSOR_KEY": "ck_" + "k" * 40}
        gw: TestClient[Any, Any] = await make_gateway(REPLICA.format(server=server, url=url), env=env)
        return gw

    for keyed, other_token_accepts in ((True, True), (False, False)):
        fake.script("/feed", _page([{"id": 1}], "/feed?page=2"), _page([{"id": 2}]))
        first = await replica("tok_" + "a" * 30, keyed)
        body = await (await first.get("/v1/feed?limit=1")).json()
        cursor = body["next_cursor"]
        assert cursor
        same = await replica("tok_" + "a" * 30, keyed)
        assert (await same.get("/v1/feed", params={"cursor": cursor})).status == 200
        other = await replica("tok_" + "b" * 30, keyed)
        resp = await other.get("/v1/feed", params={"cursor": cursor})
        if other_token_accepts:
            assert resp.status == 200, await resp.text()
        else:
            assert (await _error(resp, 400))["code"] == "bad_cursor"


WIRE = """
upstreams:
  wire:
    base_url: {url}
    retries: {{attempts: 1}}
  typed:
    base_url: {url}
    retries: {{attempts: 1}}
    headers: {{Content-Type: application/merge-patch+json, Accept: application/merge-patch+json}}
routes:
  write:
    stable: POST /v1/write
    upstream: wire
    auth: none
    targets: ["POST /write"]
  lookup:
    stable: POST /v1/lookup
    upstream: wire
    auth: none
    targets: ["GET /lookup"]
  erase:
    stable: DELETE /v1/erase
    upstream: typed
    auth: none
    targets:
      - request: PATCH /erase
        body: {{const: {{deleted: true}}}}
    response: {{status: 204}}
  listed:
    stable: GET /v1/listed
    upstream: wire
    auth: none
    pagination: {{style: next_url, next: next, items: results}}
    targets: ["GET /list"]
"""


async def _wire(
    make_gateway: Any, aiohttp_server: Any
) -> tuple[TestClient[Any, Any], list[tuple[str, list[tuple[str, str]], bytes]]]:
    """A gateway in front of an origin recording each request's header lines as sent (duplicates too)."""
    seen: list[tuple[str, list[tuple[str, str]], bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        lines = [(k.decode().lower(), v.decode()) for k, v in request.raw_headers]
        seen.append((f"{request.method} {request.path}", lines, await request.read()))
        return web.json_response({"results": [], "next": None, "ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await aiohttp_server(app)
    gw = await make_gateway(WIRE.format(url=str(server.make_url("/")).rstrip("/")), env={})
    return gw, seen


async def test_a_body_is_sent_with_exactly_one_content_type_and_only_where_the_target_takes_it(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Kills (``Targets.headers``/``send``): the body's Content-Type set under another name (sent twice, or
    a stray header), a body sent to a target that takes none, an upstream's own Content-Type replaced."""
    gw, seen = await _wire(make_gateway, aiohttp_server)
    assert (await gw.post("/v1/write", json={"a": 1})).status == 200
    assert (await gw.post("/v1/lookup", json={"a": 1})).status == 200
    assert (await gw.delete("/v1/erase")).status == 204
    (write, write_lines, write_body), (lookup, lookup_lines, lookup_body), (erase, erase_lines, erase_body) = seen
    assert write == "POST /write" and json.loads(write_body) == {"a": 1}
    assert [v for k, v in write_lines if k == "content-type"] == ["application/json"]
    assert not [k for k, _ in write_lines if "content" in k and k not in ("content-type", "content-length")]
    assert lookup == "GET /lookup" and lookup_body == b""  # the stable body is checked, never forwarded
    assert [k for k, _ in lookup_lines if k == "content-type"] == []
    assert erase == "PATCH /erase" and json.loads(erase_body) == {"deleted": True}
    assert [v for k, v in erase_lines if k == "content-type"] == ["application/merge-patch+json"]
    assert [v for k, v in erase_lines if k == "accept"] == ["application/merge-patch+json"]
    for _, lines, _ in seen:
        names = [k for k, _ in lines]
        assert len(names) == len(set(names)), lines  # no header sent twice


async def test_a_collection_asked_without_an_accept_header_answers_json(make_gateway: Any, aiohttp_server: Any) -> None:
    """Kills: a missing Accept read as None instead of '' (a 500) when choosing NDJSON."""
    gw, _ = await _wire(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/listed", skip_auto_headers=["Accept"])
    assert resp.status == 200 and await resp.json() == {"items": [], "next_cursor": None}


async def test_each_composed_pipeline_names_its_route(make_gateway: Any, aiohttp_server: Any) -> None:
    """Kills: a pipeline or call-level stack composed under no route name (what /status and the stage lists
    read it by)."""
    gw, _ = await _wire(make_gateway, aiohttp_server)
    proxy = _gateway_of(gw).runtime.proxy
    for table in (proxy.pipelines, proxy.probes, proxy.calls):
        assert {name: p.route for name, p in table.items()} == {n: n for n in ("write", "lookup", "erase", "listed")}


async def test_a_410_is_judged_like_a_404_and_a_streamed_answers_drift_is_a_502(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """Kills (``Targets.status``): a 410 not judged by the probe sample (a missing entity answered 502);
    (``Targets.shape``): a streamed answer of the wrong type not released properly (a 500)."""
    s = await _stack(make_gateway, aiohttp_server, tmp_path)
    s.fake.script("/item/gone", 410)
    s.fake.script("/item/known", Reply(200, b'{"id": "known"}'))
    err = await _error(await s.gw.get("/v1/item/gone"), 404)
    assert err["route"] == "item" and len(s.hits("/item/known")) == 1
    s.fake.script("/script/a", Reply(200, b"<html>moved</html>", {"Content-Type": "text/html"}))
    err = await _error(await s.gw.get("/v1/script/a"), 502)
    assert err["code"] == "shape_drift" and err["route"] == "script"
    s.fake.script("/script/a", Reply(200, b"export default 1;", {"Content-Type": "application/javascript"}))
    resp = await s.gw.get("/v1/script/a")
    assert resp.status == 200 and await resp.read() == b"export default 1;"
