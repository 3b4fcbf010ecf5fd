"""Hostile and broken input, through real sockets: every case gets a clear answer, nothing is
forwarded that should not be, and the gateway is still healthy afterwards.

Requests that aiohttp's client refuses to send (``..`` segments, absolute-form request
targets, raw CR/LF, slowloris pacing) go through ``asyncio.open_connection``.  An "evil"
upstream that no route points at proves that nothing ever reaches another host.
Generic upstream failures (timeout, 5xx, malformed JSON, size, loops) also have tests in
test_gateway.py; here they are extended to what the upstream saw and to gateway health.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sandbox.runner import Sandboxes
from tests.fake_upstream import CUT, FLOOD, HANG, RESET, FakeUpstream, Reply, start_fake
from tests.helpers.hostile import FAKE_YAML, assert_healthy, assert_json_error, raw, read_response, request

pytestmark = pytest.mark.hostile


@pytest.fixture
async def evil(aiohttp_server: Any) -> tuple[FakeUpstream, str]:
    """A host no route points at: it must never see a request.  (fake, "127.0.0.1:port")"""
    fake, server, _ = await start_fake(aiohttp_server)
    return fake, f"127.0.0.1:{server.port}"


@pytest.fixture
async def fake_gw(make_gateway: Any, aiohttp_server: Any) -> tuple[TestClient[Any, Any], FakeUpstream, str]:
    fake, server, url = await start_fake(aiohttp_server)
    gw = await make_gateway(FAKE_YAML.format(url=url), env={"FAKE_KEY": "fake-upstream-key"})
    return gw, fake, f"127.0.0.1:{server.port}"


# --------------------------------------------------------------------------- path escapes, SSRF


async def test_path_escapes_never_leave_the_template(
    gw: TestClient[Any, Any], sandboxes: Sandboxes, evil: tuple[FakeUpstream, str]
) -> None:
    evil_fake, evil_host = evil
    obs = sandboxes.observable_state
    targets = [
        "/v1/observable/notebooks/..",  # dot segments, raw
        "/v1/observable/notebooks/../../../admin/reload",
        "/v1/observable/notebooks/%2e%2e",
        "/v1/observable/notebooks/%2E%2E/%2e%2e/document",
        "/v1/observable/notebooks/a%2fb",  # an encoded slash would make one segment two
        "/v1/observable/notebooks/%2F%2F" + evil_host,
        "/v1/observable/notebooks/a%5c..%5cb",  # backslashes
        "/v1/observable/notebooks/x%0d%0aHost:%20" + evil_host,  # CR/LF
        "/v1/observable/notebooks/%00",
        "/v1/observable/notebooks/%ff%fe",  # not UTF-8
        "//" + evil_host + "/v1/observable/notebooks",  # a scheme-relative request target
        "http://" + evil_host + "/v1/observable/notebooks",  # absolute-form request target
        "http://" + evil_host + "/",
    ]
    for target in targets:
        resp = await raw(gw, request(f"GET {target} HTTP/1.1"))
        assert_json_error(resp.status, resp.json(), (400, 404))
    assert obs.total_requests == 0
    # CONNECT and a raw CR in the request line are refused outright
    resp = await raw(gw, request(f"CONNECT {evil_host} HTTP/1.1"))
    assert 400 <= resp.status < 500
    resp = await raw(gw, b"GET /v1/observable/notebooks/a\rHost: x HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert resp.status == 400
    # userinfo-looking ids stay one encoded segment on the configured host
    resp = await gw.get(f"/v1/observable/notebooks/@{evil_host}")
    assert resp.status == 404
    assert obs.count("GET", f"/document/@{evil_host}") == 1
    resp = await gw.get(f"/v1/observable/users/@{evil_host}/notebooks")
    assert resp.status in (404, 200)
    assert evil_fake.count() == 0
    # the two requests (the user list's 404 handed over to its second target, which asks the same path),
    # plus what the 404s' probe-sample checks asked (gateway.verdict), all on the template
    paths = [entry["path"] for entry in obs.log]
    evil = [f"/document/@{evil_host}", f"/documents/@@{evil_host}", f"/documents/@@{evil_host}"]
    assert [p for p in paths if evil_host in p] == evil, paths
    # (and the session check that an empty signed-in list runs: gateway.session)
    assert all(p.startswith(("/document", "/user/documents")) or p == "/user" for p in paths), paths
    await assert_healthy(gw, "/v1/observable/notebooks?limit=1")


async def test_query_values_cannot_add_parameters(
    fake_gw: tuple[TestClient[Any, Any], FakeUpstream, str],
) -> None:
    gw, fake, _ = fake_gw
    resp = await gw.get("/v1/things/a", params={"q": "x&admin=1#frag\r\nX-Evil: 1"})
    assert resp.status == 200
    hit = fake.hits[-1]
    assert hit.path == "/things/a"
    assert hit.query == "q=x%26admin%3D1%23frag%0D%0AX-Evil%3A%201"
    assert "X-Evil" not in hit.headers
    # undeclared params are refused, not forwarded
    resp = await gw.get("/v1/things/a?q=1&admin=1")
    assert_json_error(resp.status, await resp.json(), (400,))
    assert fake.count() == 1


async def test_unknown_routes_are_404_and_never_forwarded(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    for method, path in [
        ("GET", "/"),
        ("GET", "/v1"),
        ("GET", "/user/documents"),  # an upstream path is not a stable one
        ("GET", "/api/projects/1/notebooks/"),
        ("POST", "/v1/observable/notebooks/extra/segments/here"),
        ("PROPFIND", "/v1/observable/notebooks/x"),
    ]:
        resp = await gw.request(method, path)
        assert_json_error(resp.status, await resp.json(), (404, 405))
    assert sandboxes.observable_state.total_requests == 0
    assert sandboxes.posthog_state.total_requests == 0
    await assert_healthy(gw, "/v1/posthog/projects/1/notebooks?limit=1")


# --------------------------------------------------------------------------- bodies


async def test_oversize_bodies_are_413_whatever_the_framing(
    fake_gw: tuple[TestClient[Any, Any], FakeUpstream, str],
) -> None:
    gw, fake, _ = fake_gw
    big = json.dumps({"title": "x" * 2000}).encode()
    resp = await gw.post("/v1/things", data=big, headers={"Content-Type": "application/json"})
    body = await resp.json()
    assert resp.status == 413 and body["error"]["code"] == "payload_too_large"
    assert body["error"]["route"] == "create_thing"
    assert "1024 bytes" in body["error"]["message"]

    async def chunks() -> Any:  # chunked: no Content-Length to refuse up front
        for _ in range(4):
            yield b'{"t": "' + b"y" * 400 + b'"}'

    resp = await gw.post("/v1/things", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 413
    # a lying Content-Length (small, then more bytes) cannot smuggle a second request
    resp = await raw(
        gw,
        request("POST /v1/things HTTP/1.1", "Content-Type: application/json", "Content-Length: 2", body=b"{}GET /x"),
    )
    assert resp.status in (200, 400)
    assert fake.count() <= 1
    # at the limit: forwarded byte-exact
    fit = json.dumps({"title": "z" * 990}).encode()
    assert len(fit) <= 1024
    before = fake.count()
    resp = await gw.post("/v1/things", data=fit, headers={"Content-Type": "application/json"})
    assert resp.status == 200
    assert fake.count() == before + 1
    assert json.loads(fake.hits[-1].body) == json.loads(fit)
    await assert_healthy(gw, "/v1/things/ok")


async def test_a_large_allowed_body_arrives_whole(make_gateway: Any, aiohttp_server: Any) -> None:
    """Bodies arrive in many TCP segments; all of them are read before the JSON is parsed."""
    fake, _, url = await start_fake(aiohttp_server)
    gw = await make_gateway(
        FAKE_YAML.format(url=url).replace("max_body_bytes: 1KiB", "max_body_bytes: 2MiB"), env={"FAKE_KEY": "k"}
    )
    doc = {"items": [{"n": i, "text": "lorem ipsum " * 10} for i in range(8000)]}
    data = json.dumps(doc).encode()
    assert len(data) > 1_000_000
    resp = await gw.post("/v1/things", data=io.BytesIO(data), headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert json.loads(fake.hits[-1].body) == doc


async def test_malformed_json_and_wrong_content_type(
    gw: TestClient[Any, Any], sandboxes: Sandboxes, fake_gw: tuple[TestClient[Any, Any], FakeUpstream, str]
) -> None:
    for data, ctype, status, code in [
        (b'{"title": ', "application/json", 400, "malformed_json"),
        (b"\xff\xfe{}", "application/json", 400, "malformed_json"),
        (b"[1, 2,]", "application/json", 400, "malformed_json"),
        (b"title=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"title": "x"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"title": "x"}', "", 415, "unsupported_media_type"),
    ]:
        headers = {"Content-Type": ctype} if ctype else {}
        resp = await gw.post("/v1/posthog/projects/1/notebooks", data=data, headers=headers)
        body = await resp.json()
        assert resp.status == status, (data, ctype, body)
        assert body["error"]["code"] == code
        assert body["error"]["route"] == "posthog_notebook_create"
    assert sandboxes.posthog_state.total_requests == 0
    fake_client, fake, _ = fake_gw
    resp = await fake_client.post("/v1/things", data=b"{nope", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert fake.count() == 0
    await assert_healthy(gw, "/v1/posthog/projects/1/notebooks?limit=1")


# --------------------------------------------------------------------------- headers


async def test_client_headers_are_never_forwarded(fake_gw: tuple[TestClient[Any, Any], FakeUpstream, str]) -> None:
    gw, fake, fake_host = fake_gw
    resp = await gw.get(
        "/v1/things/a",
        headers={
            "Authorization": "Bearer client-supplied",
            "Cookie": "session=client-supplied",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-For": "10.0.0.1",
            "X-Original-URL": "/admin",
            "X-HTTP-Method-Override": "DELETE",
            "X-Static": "overridden?",
        },
    )
    assert resp.status == 200
    sent = {k.lower(): v for k, v in fake.hits[-1].headers.items()}
    assert sent["authorization"] == "Bearer fake-upstream-key"
    assert sent["host"] == fake_host
    assert sent["x-static"] == "static-value"
    for name in ("cookie", "x-forwarded-host", "x-forwarded-for", "x-original-url", "x-http-method-override"):
        assert name not in sent, name
    assert fake.hits[-1].method == "GET"


async def test_header_injection_is_refused(fake_gw: tuple[TestClient[Any, Any], FakeUpstream, str]) -> None:
    gw, fake, _ = fake_gw
    for headers in [
        ("X-Request-ID: a\rX-Evil: 1",),  # a bare CR inside a value
        ("X-Request-ID: a\nX-Evil: 1",),  # a bare LF
        (" X-Folded: continued",),  # obsolete line folding
        ("Content-Length: 5", "Content-Length: 6"),  # conflicting lengths
        ("Transfer-Encoding: chunked", "Content-Length: 3"),  # the classic smuggling pair
        ("Bad Header: x",),
    ]:
        resp = await raw(gw, request("GET /v1/things/a HTTP/1.1", *headers))
        assert 400 <= resp.status < 500, headers
    # a request id that is not a plain token is replaced, never echoed into a header
    resp = await gw.get("/v1/things/a", headers={"X-Request-ID": "x" * 200})
    assert resp.status == 200 and len(resp.headers["X-Request-ID"]) == 32
    assert fake.count() == 1  # only the last, well-formed request
    assert fake.hits[0].headers["X-Request-ID"] == resp.headers["X-Request-ID"]
    await assert_healthy(gw, "/v1/things/ok")


async def test_very_long_urls_and_headers_are_clean_4xx(
    fake_gw: tuple[TestClient[Any, Any], FakeUpstream, str],
) -> None:
    gw, fake, _ = fake_gw
    cases = [
        request("GET /v1/things/" + "a" * 20_000 + " HTTP/1.1"),
        request("GET /v1/things/a?q=" + "b" * 20_000 + " HTTP/1.1"),
        request("GET /v1/things/a HTTP/1.1", "X-Long: " + "c" * 20_000),
        request("GET /v1/things/a HTTP/1.1", *(f"X-H{i}: v" for i in range(500))),
    ]
    for data, status in zip(cases, (414, 414, 431, 431), strict=True):
        resp = await raw(gw, data)
        assert resp.status == status, (resp.status, resp.body[:200])
        assert json.loads(resp.body)["error"]["code"] in ("uri_too_long", "headers_too_large")
    # far beyond any sane size the HTTP parser itself refuses (plain text), still a 4xx
    resp = await raw(gw, request("GET /v1/things/" + "a" * 100_000 + " HTTP/1.1"))
    assert 400 <= resp.status < 500
    assert fake.count() == 0
    await assert_healthy(gw, "/v1/things/ok")


# --------------------------------------------------------------------------- slow clients


async def test_slowloris_headers_are_cut_off(fake_gw: tuple[TestClient[Any, Any], FakeUpstream, str]) -> None:
    """A client dribbling its headers (a byte every 0.2 s) is disconnected by the header timeout (1 s)."""
    gw, fake, _ = fake_gw
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    started = time.monotonic()
    payload = b"GET /v1/things/a HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"z" * 200
    closed_after: float | None = None
    try:
        for byte in payload:
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(1024), 0.2)
            except TimeoutError:
                continue
            if data == b"" or data.startswith(b"HTTP/1.1 4"):
                closed_after = time.monotonic() - started
                break
    except (ConnectionResetError, BrokenPipeError):
        closed_after = time.monotonic() - started
    finally:
        writer.close()
    assert closed_after is not None, "the slow client was never disconnected"
    assert closed_after < len(payload) * 0.2  # long before it could have finished its headers
    assert fake.count() == 0
    await assert_healthy(gw, "/v1/things/ok")


async def test_slow_body_is_408(fake_gw: tuple[TestClient[Any, Any], FakeUpstream, str]) -> None:
    gw, fake, _ = fake_gw
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    writer.write(request("POST /v1/things HTTP/1.1", "Content-Type: application/json", "Content-Length: 100"))
    await writer.drain()
    try:
        for _ in range(15):  # 1.5 s of dribbling (15 of the 100 bytes); the body timeout is 1 s
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)
    except (ConnectionResetError, BrokenPipeError):
        pass
    resp = await read_response(reader)
    writer.close()
    body = resp.json()
    assert resp.status == 408 and body["error"]["code"] == "request_timeout"
    assert body["error"]["route"] == "create_thing"
    assert fake.count() == 0
    await assert_healthy(gw, "/v1/things/ok")


# --------------------------------------------------------------------------- upstream faults


async def test_upstream_faults_are_clear_errors(
    fake_gw: tuple[TestClient[Any, Any], FakeUpstream, str], evil: tuple[FakeUpstream, str]
) -> None:
    gw, fake, _ = fake_gw
    evil_fake, evil_host = evil
    cases: dict[str, tuple[Any, int, str]] = {
        "timeout": (HANG, 504, "upstream_timeout"),
        "reset": (RESET, 502, "upstream_reset"),
        "cut": (CUT, 502, "upstream_reset"),
        "truncated": (Reply(200, body=b'{"value": [1, 2'), 502, "upstream_bad_json"),
        "html": (
            Reply(200, body=b"<html>maintenance</html>", headers={"Content-Type": "text/html"}),
            502,
            "upstream_bad_json",
        ),
        "empty": (Reply(200, body=b""), 502, "upstream_bad_json"),
        "flood": (FLOOD, 502, "upstream_too_large"),
        "big": (Reply(200, body=b'"' + b"x" * 100_000 + b'"'), 502, "upstream_too_large"),
        "loop": (Reply(302, headers={"Location": "/things/loop?q="}), 502, "redirect_loop"),
        "chain": (Reply(307, headers={"Location": "/things/chain2"}), 200, ""),
        "offhost": (Reply(302, headers={"Location": f"http://{evil_host}/steal"}), 502, "redirect_off_host"),
        "schemeless": (Reply(301, headers={"Location": f"//{evil_host}/x"}), 502, "redirect_off_host"),
    }
    for name, (step, _, _) in cases.items():
        fake.script(f"/things/{name}", step)
    for name, (_, status, code) in cases.items():
        resp = await gw.get(f"/v1/things/{name}")
        body = await resp.json()
        assert resp.status == status, (name, body)
        if code:
            assert body["error"]["code"] == code, (name, body)
            assert body["error"]["route"] == "get_thing"
            assert "'fake'" in body["error"]["message"]
        await assert_healthy(gw, "/v1/things/ok")
    # redirects to other hosts are not followed, loops stop at once
    assert evil_fake.count() == 0
    assert fake.count("/things/loop") == 2  # followed once, then the loop was seen; not retried
    assert fake.count("/things/chain2") == 1


async def test_refused_upstream_is_502_and_the_gateway_stays_up(make_gateway: Any, aiohttp_server: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gw = await make_gateway(FAKE_YAML.format(url=f"http://127.0.0.1:{port}"), env={"FAKE_KEY": "k"})
    for _ in range(3):
        resp = await gw.get("/v1/things/a")
        body = await resp.json()
        assert resp.status == 502 and body["error"]["code"] == "upstream_unreachable"
        assert body["error"]["route"] == "get_thing"
    assert (await gw.get("/healthz")).status == 200
