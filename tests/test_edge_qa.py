"""The QA pass's edge defects, driven through real HTTP: a client that hangs up mid-answer is a 499
(never a 500), a HEAD of ``all=true`` never walks or streams, collections say ``Vary: Accept``,
``all``/``limit`` are read strictly, and an upstream 403 is a missing permission, not a dead key."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway import logs
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES
from tests.fake_upstream import Reply, start_fake
from tests.helpers.cache import _gw as cache_gateway
from tests.helpers.serving import _access, _no_internal_error, _served

PH = "/v1/posthog/projects/1/notebooks"
ND = {"Accept": "application/x-ndjson"}
Lines = tuple[logs.AccessLines, io.StringIO]

YAML = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
routes:
  listed:
    stable: GET /v1/listed
    upstream: origin
    auth: none
    pagination: {style: cursor, token: next, items: results}
    targets: ["GET /listed"]
  raw:
    stable: GET /v1/raw
    upstream: origin
    auth: none
    targets: ["GET /raw"]
    response: {raw: true}
"""

PAGES = 8


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` of a /metrics text (exactly those labels); None when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def scrape(gw: TestClient[Any, Any]) -> str:
    resp = await gw.get("/metrics")
    assert resp.status == 200
    return str(await resp.text())


def _page(n: int) -> Reply:
    """Page ``n`` of the fake's cursor-paged list: three items, the next token, a slow answer."""
    body = {"results": [{"id": f"{n}-{i}"} for i in range(3)], "next": f"t{n + 1}" if n + 1 < PAGES else None}
    return Reply(body=json.dumps(body).encode(), delay=0.3)


async def _fake_gateway(make_gateway: Any, aiohttp_server: Any) -> tuple[TestClient[Any, Any], Any]:
    fake, _, base = await start_fake(aiohttp_server)
    fake.script("/listed", *(_page(n) for n in range(PAGES)))
    gw = await make_gateway(YAML, env={"ORIGIN_URL": base})
    return gw, fake


async def _hang_up(host: str, port: int, path: str, rid: str, accept: str, until: bytes) -> bytes:
    """GET ``path`` over a real socket, read until ``until`` arrived in the body, then hang up."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nX-Request-ID: {rid}\r\n\r\n".encode())
    await writer.drain()
    got = b""
    while until not in got.partition(b"\r\n\r\n")[2]:
        chunk = await asyncio.wait_for(reader.read(4096), 5)
        assert chunk, got
        got += chunk
    writer.transport.abort()  # gone, mid-answer
    return got


# --------------------------------------------------------------------------- 1. client aborts, HEAD


@pytest.mark.parametrize("server", ["served", "test-client"])
async def test_a_client_hanging_up_mid_stream_is_a_499_and_the_walk_stops(
    aiohttp_server: Any, access_lines: Lines, tmp_path: Path, server: str, make_gateway: Any
) -> None:
    """Either way aiohttp tells the handler (a failed write when served, a cancellation under the
    test client's server): an access line 499 ``client_closed``, 4xx, no traceback, the walk stopped."""
    _, stream = access_lines
    fake, _, base = await start_fake(aiohttp_server)
    fake.script("/listed", *(_page(n) for n in range(PAGES)))
    async with contextlib.AsyncExitStack() as stack:
        if server == "served":
            host, port, registry = await stack.enter_async_context(_served(YAML, {"ORIGIN_URL": base}, tmp_path))
        else:
            gw = await make_gateway(YAML, env={"ORIGIN_URL": base})
            host, port = gw.host, gw.port
        head = await _hang_up(host, port, "/v1/listed?all=true", "abort-nd", "application/x-ndjson", b'"0-2"')
        assert head.startswith(b"HTTP/1.1 200") and b"application/x-ndjson" in head
        line = await _access(stream, "abort-nd")
        assert line["status"] == 499 and line["error"] == "client_closed", line
        _no_internal_error(stream)
        # the walk stopped: at most the page in flight when the client left, and nothing after
        calls = fake.count("/listed")
        assert calls <= 4, calls  # (the page in flight when it left, and one more on a slow machine)
        await asyncio.sleep(0.8)
        assert fake.count("/listed") == calls < PAGES
        text = generate_latest(registry).decode() if server == "served" else await scrape(gw)
        assert value(text, "gateway_requests_total", method="GET", route="listed", status_class="4xx") == 1
        assert value(text, "gateway_requests_total", method="GET", route="listed", status_class="5xx") is None
        assert value(text, "gateway_upstream_errors_total", upstream="origin", route="listed", kind="5xx") is None
        assert value(text, "gateway_route_up", route="listed") != 0  # a client that left breaks no route


@pytest.mark.parametrize("server", ["served", "test-client"])
async def test_a_client_hanging_up_on_a_relayed_body_is_a_499(
    aiohttp_server: Any, access_lines: Lines, tmp_path: Path, server: str, make_gateway: Any
) -> None:
    _, stream = access_lines
    fake, _, base = await start_fake(aiohttp_server)
    fake.script("/raw", "flood")  # 16 MiB, chunked: far more than the socket buffers hold
    async with contextlib.AsyncExitStack() as stack:
        if server == "served":
            host, port, registry = await stack.enter_async_context(_served(YAML, {"ORIGIN_URL": base}, tmp_path))
        else:
            gw = await make_gateway(YAML, env={"ORIGIN_URL": base})
            host, port = gw.host, gw.port
        await _hang_up(host, port, "/v1/raw", "abort-raw", "*/*", b"[")
        line = await _access(stream, "abort-raw")
        assert line["status"] == 499 and line["error"] == "client_closed", line
        _no_internal_error(stream)
        text = generate_latest(registry).decode() if server == "served" else await scrape(gw)
        assert value(text, "gateway_requests_total", method="GET", route="raw", status_class="4xx") == 1
        assert value(text, "gateway_requests_total", method="GET", route="raw", status_class="5xx") is None


@pytest.mark.parametrize("path", ["/v1/raw", "/v1/listed?all=true"])
async def test_a_client_gone_before_the_head_went_out_is_a_499(
    aiohttp_server: Any, access_lines: Lines, tmp_path: Path, path: str
) -> None:
    """The client leaves while the gateway still waits on the upstream: the first write (the head) fails."""
    _, stream = access_lines
    fake, _, base = await start_fake(aiohttp_server)
    fake.script("/raw", Reply(body=b"x" * 100, delay=0.5))
    fake.script("/listed", _page(0))
    async with _served(YAML, {"ORIGIN_URL": base}, tmp_path) as (host, port, registry):
        _, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/x-ndjson\r\n"
            "X-Request-ID: early\r\n\r\n".encode()
        )
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.transport.abort()
        line = await _access(stream, "early")
        assert line["status"] == 499 and line["error"] == "client_closed", line
        _no_internal_error(stream)
        text = generate_latest(registry).decode()
        assert value(text, "gateway_requests_total", method="GET", route=line["route"], status_class="5xx") is None


async def test_a_json_walk_for_a_client_that_left_stops_too(
    aiohttp_server: Any, access_lines: Lines, tmp_path: Path
) -> None:
    """``all=true`` as one JSON document: nothing is sent before the walk ends, so the gateway looks
    between pages whether the caller is still there (served as ``gateway serve`` serves)."""
    _, stream = access_lines
    fake, _, base = await start_fake(aiohttp_server)
    fake.script("/listed", *(_page(n) for n in range(PAGES)))
    async with _served(YAML, {"ORIGIN_URL": base}, tmp_path) as (host, port, registry):
        _, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /v1/listed?all=true HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: json-gone\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.45)  # page 1 is in, page 2 on its way
        writer.transport.abort()
        line = await _access(stream, "json-gone")
        assert line["status"] == 499 and line["error"] == "client_closed", line
        _no_internal_error(stream)
        calls = fake.count("/listed")
        await asyncio.sleep(0.8)
        assert fake.count("/listed") == calls <= 4
        text = generate_latest(registry).decode()
        assert value(text, "gateway_requests_total", method="GET", route="listed", status_class="4xx") == 1


async def test_a_complete_stream_is_still_a_200(make_gateway: Any, aiohttp_server: Any, access_lines: Lines) -> None:
    _, stream = access_lines
    gw, fake = await _fake_gateway(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/listed?all=true", headers={**ND, "X-Request-ID": "whole"})
    body = await resp.read()
    assert resp.status == 200 and len(body.splitlines()) == 3 * PAGES
    line = await _access(stream, "whole")
    assert line["status"] == 200 and line["error"] is None and line["upstream_calls"] == PAGES
    assert fake.count("/listed") == PAGES


@pytest.mark.parametrize("accept", ["application/x-ndjson", "application/json"])
async def test_a_head_of_all_answers_a_get_s_head_from_one_upstream_page(
    gw: TestClient[Any, Any], access_lines: Lines, accept: str
) -> None:
    _, stream = access_lines
    get = await gw.get(PH, params={"all": "true"}, headers={"Accept": accept, "X-Request-ID": "get"})
    await get.read()
    assert (await _access(stream, "get"))["upstream_calls"] == 3  # 250 notebooks, 100 a page
    head = await gw.head(PH, params={"all": "true"}, headers={"Accept": accept, "X-Request-ID": "head"})
    assert head.status == 200
    assert await head.read() == b""
    assert head.headers["Content-Type"] == get.headers["Content-Type"]
    assert head.headers["Content-Type"].startswith(accept)
    for name in ("Cache-Control", "Vary"):
        assert head.headers[name] == get.headers[name], name
    line = await _access(stream, "head")
    assert line["status"] == 200 and line["upstream_calls"] == 1 and line["error"] is None, line
    _no_internal_error(stream)


async def test_a_head_of_all_that_fails_on_its_first_page_has_the_get_s_status(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks": {"status": 500}}})
    for accept in ("application/x-ndjson", "application/json"):
        get = await gw.get(PH, params={"all": "true"}, headers={"Accept": accept})
        head = await gw.head(PH, params={"all": "true"}, headers={"Accept": accept})
        assert get.status == head.status == 502
        assert await head.read() == b""


async def test_a_head_of_all_leaves_the_cache_to_the_get(
    make_gateway: Any, sandbox_env: dict[str, str], access_lines: Lines
) -> None:
    """A HEAD's bodiless answer is never stored, nor handed to a GET that asked at the same time."""
    _, stream = access_lines
    gw = await make_gateway(env={**sandbox_env, "ROUTEGATE_CACHE": "on"})
    heads = [gw.head(PH, params={"all": "true"}) for _ in range(3)]
    got = await asyncio.gather(gw.get(PH, params={"all": "true"}), *heads, gw.get(PH, params={"all": "true"}))
    for resp in got[1:-1]:
        assert resp.status == 200 and "X-Cache" not in resp.headers
    for resp in (got[0], got[-1]):
        assert resp.status == 200 and len((await resp.json())["items"]) == 250
    again = await gw.get(PH, params={"all": "true"})
    assert again.headers["X-Cache"] == "HIT" and len((await again.json())["items"]) == 250
    _no_internal_error(stream)


async def test_a_head_of_a_page_is_the_page_s_head(gw: TestClient[Any, Any]) -> None:
    for headers in ({}, ND):
        get = await gw.get(PH, params={"limit": "5"}, headers=headers)
        head = await gw.head(PH, params={"limit": "5"}, headers=headers)
        assert head.status == 200 and await head.read() == b""
        for name in ("Content-Type", "Content-Length", "Vary", "X-Next-Cursor", "ETag"):
            assert head.headers.get(name) == get.headers.get(name), name


# --------------------------------------------------------------------------- 2. Vary: Accept


def _vary(resp: Any) -> list[str]:
    return [v.strip().lower() for v in resp.headers.get("Vary", "").split(",") if v.strip()]


async def test_every_collection_answer_varies_on_accept(gw: TestClient[Any, Any]) -> None:
    for params in ({"limit": "5"}, {"all": "true"}):
        for headers in ({}, ND, {"Accept-Encoding": "gzip"}, {**ND, "Accept-Encoding": "gzip"}):
            resp = await gw.get(PH, params=params, headers=headers)
            await resp.read()
            assert resp.status == 200
            vary = _vary(resp)
            assert "accept" in vary and len(vary) == len(set(vary)), (params, headers, vary)
    big = await gw.get(PH, params={"all": "true"}, headers={"Accept-Encoding": "gzip"})
    assert {"accept", "accept-encoding"} <= set(_vary(big)) and big.headers["Content-Encoding"] == "gzip"
    one = await gw.get(f"{PH}/{(await (await gw.get(PH, params={'limit': '1'})).json())['items'][0]['id']}")
    assert "accept" not in _vary(one)  # an entity has one form


async def test_vary_accept_is_kept_on_a_304_and_on_cache_hits(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    gw = await make_gateway(env={**sandbox_env, "ROUTEGATE_CACHE": "on"})
    first = await gw.get(PH, params={"limit": "3"})
    hit = await gw.get(PH, params={"limit": "3"})
    assert hit.headers["X-Cache"] == "HIT" and "accept" in _vary(hit)
    again = await gw.get(PH, params={"limit": "3"}, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304 and "accept" in _vary(again)


async def test_an_ndjson_stream_and_a_keyed_gateway_keep_every_vary(
    make_gateway: Any, sandbox_env: dict[str, str]
) -> None:
    key = "ak_" + "a" * 30
    clients = "\nclients:\n  keys:\n    alice: {key: {env: ALICE_KEY}}\n"
    gw = await make_gateway(ROUTES.read_text() + clients, env={**sandbox_env, "ALICE_KEY": key})
    for params in ({"all": "true"}, {"limit": "2"}):
        resp = await gw.get(PH, params=params, headers={**ND, "X-API-Key": key})
        assert resp.status == 200, await resp.text()
        await resp.read()
        vary = _vary(resp)
        assert {"accept", "authorization", "x-api-key"} <= set(vary) and len(vary) == len(set(vary)), vary


# --------------------------------------------------------------------------- 3. strict flags


@pytest.mark.parametrize("raw", ["yes", "1", "TRUE", "True", "", "no", "0", "on", " true"])
async def test_all_is_true_or_false_and_nothing_else(gw: TestClient[Any, Any], raw: str) -> None:
    resp = await gw.get(PH, params={"all": raw})
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "bad_query", body
    assert body["error"]["route"] == "posthog_notebooks"


async def test_all_false_is_a_page_and_all_true_everything(gw: TestClient[Any, Any]) -> None:
    page = await (await gw.get(PH, params={"all": "false"})).json()
    assert len(page["items"]) == 50 and page["next_cursor"]
    whole = await (await gw.get(PH, params={"all": "true"})).json()
    assert len(whole["items"]) == 250 and whole["next_cursor"] is None


@pytest.mark.parametrize("raw", ["1_0", "\uff15", "\u0665", "+5", " 5", "5 ", "0x10", "5.0", "0", "201", "9" * 40])
async def test_limit_is_plain_ascii_digits(gw: TestClient[Any, Any], raw: str) -> None:
    resp = await gw.get(PH, params={"limit": raw})
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "bad_limit", body


async def test_limit_in_ascii_digits_still_works(gw: TestClient[Any, Any]) -> None:
    for raw, n in (("10", 10), ("007", 7), ("200", 200)):
        assert len((await (await gw.get(PH, params={"limit": raw})).json())["items"]) == n


async def test_all_true_wins_over_limit_which_is_still_checked(gw: TestClient[Any, Any]) -> None:
    """Documented (pagination.md): generated clients send ``limit``'s declared default with every
    call, so ``all=true&limit=50`` must mean everything, as ``all=true`` alone does."""
    whole = await (await gw.get(PH, params={"all": "true", "limit": "2"})).json()
    assert len(whole["items"]) == 250 and whole["next_cursor"] is None
    streamed = await gw.get(PH, params={"all": "true", "limit": "2"}, headers=ND)
    assert len((await streamed.read()).splitlines()) == 250
    for raw in ("0", "1_0", "\uff15"):
        resp = await gw.get(PH, params={"all": "true", "limit": raw})
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "bad_limit", raw
    ok = await gw.get(PH, params={"all": "false", "limit": "2"})
    assert len((await ok.json())["items"]) == 2


# --------------------------------------------------------------------------- 4. a 403 is not a dead key

ACTIVITY = "/v1/posthog/projects/1/notebooks/{}/activity"
NOTEBOOK_SCOPES = ["notebook:read", "notebook:write"]


async def test_a_missing_scope_is_upstream_forbidden_not_a_credential_to_renew(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(registry=registry)
    state = sandboxes.posthog_state
    key = sandbox_env["POSTHOG_API_KEY"]
    short_id = state.visible(1)[0].short_id
    assert (await gw.get(ACTIVITY.format(short_id))).status == 200
    state.apply_switches({"key_scopes": {key: NOTEBOOK_SCOPES}})
    resp = await gw.get(ACTIVITY.format(short_id))
    err = (await resp.json())["error"]
    assert resp.status == 502 and err["code"] == "upstream_forbidden", err
    assert err["route"] == "posthog_notebook_activity"
    assert err["message"] == (
        "upstream 'posthog' refused this call with the configured credential (403): it lacks a permission or"
        " scope this route needs (API key missing required scope 'activity_log:read'); grant it"
    )
    assert "renew" not in err["message"].lower() and key not in err["message"]
    text = await scrape(gw)
    labels = {"upstream": "posthog", "route": "posthog_notebook_activity"}
    assert value(text, "gateway_upstream_errors_total", **labels, kind="forbidden") == 1
    assert value(text, "gateway_upstream_errors_total", **labels, kind="credentials_rejected") is None
    info = {"route": "posthog_notebook_activity", "code": "upstream_forbidden"}
    assert value(text, "gateway_route_failure_info", **info) == 1  # the route is down: every call fails alike
    # the notebooks, which the key may still read, are unaffected; a key PostHog does not know is still a 401
    assert (await gw.get(PH, params={"limit": "1"})).status == 200
    state.apply_switches({"key_scopes": {key: None}})
    assert (await gw.get(ACTIVITY.format(short_id))).status == 200


async def test_an_unknown_key_is_still_a_credential_to_renew(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    gw = await make_gateway(env={**sandbox_env, "POSTHOG_API_KEY": "phx_" + "x" * 40})
    resp = await gw.get(PH, params={"limit": "1"})
    err = (await resp.json())["error"]
    assert resp.status == 502 and err["code"] == "upstream_auth_rejected" and err["message"].endswith("renew them")
    text = await scrape(gw)
    kind = {"upstream": "posthog", "route": "posthog_notebooks", "kind": "credentials_rejected"}
    assert value(text, "gateway_upstream_errors_total", **kind) == 1


async def test_a_403_gets_no_stale_copy(make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes) -> None:
    """What the credential may no longer read is not served from the cache either (a 5xx would be)."""
    gw, clock = await cache_gateway(make_gateway, sandbox_env)
    state = sandboxes.posthog_state
    url = f"/v1/posthog/projects/1/notebooks/{state.visible(1)[0].short_id}"
    assert (await gw.get(url)).status == 200
    clock.now += 90  # past the ttl, inside the stale window
    state.apply_switches({"key_scopes": {sandbox_env["POSTHOG_API_KEY"]: ["notebook:write"]}})
    resp = await gw.get(url)
    assert resp.status == 502 and "X-Cache" not in resp.headers
    assert (await resp.json())["error"]["code"] == "upstream_forbidden"
    state.apply_switches({"key_scopes": {sandbox_env["POSTHOG_API_KEY"]: None}})
    state.apply_switches({"faults": {"/api/projects/1/notebooks": {"status": 500}}})
    assert (await gw.get(url)).headers["X-Cache"] == "STALE"  # the control: the same entry, a 5xx


SESSION = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
    auth:
      bearer: {env: ORIGIN_KEY}
      check: {request: GET /me, expect: login}
routes:
  mine:
    stable: GET /v1/mine
    upstream: origin
    pagination: {style: cursor, token: next, items: results}
    targets: ["GET /mine"]
"""


async def test_a_session_check_answered_403_is_no_verdict_on_the_session(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """A check path the credential may not read says nothing about the session: an empty list is
    served (not cached), and the credential is not reported dead ("renew it" would be wrong)."""
    fake, _, base = await start_fake(aiohttp_server)
    fake.script("/mine", Reply(body=b'{"results": [], "next": null}'))
    fake.script("/me", Reply(403, body=b'{"detail": "missing scope user:read"}'))
    registry = CollectorRegistry()
    gw = await make_gateway(SESSION, env={"ORIGIN_URL": base, "ORIGIN_KEY": "k" * 32}, registry=registry)
    resp = await gw.get("/v1/mine")
    assert resp.status == 200 and (await resp.json())["items"] == []
    assert fake.count("/me") >= 1
    text = await scrape(gw)
    assert value(text, "gateway_upstream_credential_valid", upstream="origin", credential="bearer") != 0
    fake.script("/me", Reply(401))
    gw2 = await make_gateway(SESSION, env={"ORIGIN_URL": base, "ORIGIN_KEY": "k" * 32})
    err = (await (await gw2.get("/v1/mine")).json())["error"]
    assert err["code"] == "upstream_auth_rejected"  # the control: a 401 there is a dead session
