"""No 500s: hostile clients get a JSON 4xx, broken upstreams a counted 502, and nothing leaks.

Each case goes through real HTTP (the aiohttp test client, or a raw socket where the
HTTP layer itself is under test), and the last test sweeps every shipped route with a
set of hostile queries, bodies, cursors and headers, asserting no answer is a 500 and
every error is the gateway's JSON error body.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.pagination.common import fingerprint
from gateway.pagination.cursor import _sign
from gateway.server import GATEWAY
from sandbox.runner import Sandboxes
from tests.fake_upstream import FakeUpstream, Reply, start_fake
from tests.helpers.hostile import assert_json_error, raw, request

pytestmark = pytest.mark.hostile

ROUTES_YAML = """
upstreams:
  fake:
    base_url: {url}
    timeouts: {{connect: 1s, read: 1s, total: 3s}}
    retries: {{attempts: 1}}
    max_response_bytes: 4MiB
    auth:
      cookies:
        I: {{env: FAKE_SESSION}}
        T: {{env: FAKE_TOKEN}}
routes:
  get_thing:
    stable: GET /v1/things/{{name}}
    upstream: fake
    targets: ["GET /things/{{name}}"]
  get_item:
    stable: GET /v1/items/{{name}}
    upstream: fake
    targets: ["GET /things/{{name}}"]
    response:
      item: {{id: {{field: id}}, value: {{field: value, optional: true}}}}
  list_things:
    stable: GET /v1/things
    upstream: fake
    targets: ["GET /list"]
    pagination: {{style: offset, items: results, next: next, count: count}}
  feed:
    stable: GET /v1/feed
    upstream: fake
    targets: ["GET /feed"]
    pagination: {{style: before, param: before, field: t}}
  create_thing:
    stable: POST /v1/things
    upstream: fake
    targets: ["POST /things"]
  module:
    stable: GET /v1/modules/{{name}}
    upstream: fake
    targets:
      - request: GET /m/{{name}}.js
        redirect: report
    response:
      item:
        version: {{location: '@(\\d+)\\.js$', type: int}}
  typed:
    stable: GET /v1/typed/{{name}}
    upstream: fake
    targets: ["GET /typed/{{name}}"]
    response: {{raw: true}}
    shape: {{content_type: application/javascript}}
"""
SESSION = "SESSION_secret_I_1f2e3d4c5b6a"
TOKEN = "TOKEN_secret_T_9a8b7c6d5e4f"
ENV = {"FAKE_SESSION": SESSION, "FAKE_TOKEN": TOKEN}


@pytest.fixture
async def fake_gw(make_gateway: Any, aiohttp_server: Any) -> tuple[TestClient[Any, Any], FakeUpstream]:
    fake, _server, url = await start_fake(aiohttp_server)
    gw = await make_gateway(ROUTES_YAML.format(url=url), env=ENV, registry=CollectorRegistry())
    return gw, fake


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _cursor(payload: Any, gw: TestClient[Any, Any] | None = None) -> str:
    """A cursor carrying ``payload``: signed with ``gw``'s own key (so only the strict checks stand
    between it and the upstream), or unsigned."""
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return body if gw is None else _signed(gw, body)


def _signed(gw: TestClient[Any, Any], body: str) -> str:
    return f"{body}.{_sign(gw.app[GATEWAY].runtime.proxy.cursor_secret, body)}"


async def _metric(gw: TestClient[Any, Any], name: str, **labels: str) -> float:
    text = await (await gw.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _route_state(gw: TestClient[Any, Any], route: str) -> str:
    page = await (await gw.get("/status")).text()
    start = page.index(f'data-route="{route}"')
    return page[start : page.index(">", start)]


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [(r.name, r.getMessage()) for r in bad]


# --------------------------------------------------------------------------- client input: 4xx


async def test_a_deeply_nested_body_is_a_400_not_a_500(
    fake_gw: tuple[TestClient[Any, Any], FakeUpstream], caplog: pytest.LogCaptureFixture
) -> None:
    gw, fake = fake_gw
    caplog.set_level(logging.INFO)
    for body in (_deep(100_000), b"[" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000):
        resp = await gw.post("/v1/things", data=body, headers={"Content-Type": "application/json"})
        got = await resp.json()
        assert resp.status == 400, got
        assert got["error"]["code"] == "json_too_deep" and got["error"]["route"] == "create_thing"
        assert "nested deeper than 1024" in got["error"]["message"]
    # as deep as JSON may be here (1024 levels) is accepted and forwarded whole
    resp = await gw.post("/v1/things", data=_deep(1024), headers={"Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    assert fake.count("/things", "POST") == 1 and fake.hits[-1].body == _deep(1024)
    _no_traceback(caplog)
    access = [r for r in caplog.records if r.name == "gateway.access"]
    assert len(access) == 4  # one line per request, nothing else


async def test_nan_and_infinity_bodies_are_malformed_json(fake_gw: tuple[TestClient[Any, Any], FakeUpstream]) -> None:
    gw, fake = fake_gw
    for body in (b'{"a": NaN}', b"[Infinity]", b"[-Infinity]"):
        resp = await gw.post("/v1/things", data=body, headers={"Content-Type": "application/json"})
        got = await resp.json()
        assert resp.status == 400 and got["error"]["code"] == "malformed_json", got
    assert fake.count() == 0


@pytest.mark.parametrize(
    "payload",
    [
        {"r": "list_things", "p": {"": "ten"}},  # an offset that is text
        {"r": "list_things", "p": {"": -5}},
        {"r": "list_things", "p": {"": 1.5}},
        {"r": "list_things", "p": {"": [1]}},
        {"r": "list_things", "p": {"": {"a": 1}}},
        {"r": "list_things", "p": {"": True}},
        {"r": "list_things", "p": {"": 10}, "e": [1, 2]},
        {"r": "list_things", "p": {"": 10}, "e": "x"},
        {"r": "list_things", "p": []},
        {"r": "list_things", "p": None},
        {"r": "list_things"},
        {"r": "feed", "p": {"": 10}},  # another route's cursor
        ["list_things"],
        "list_things",
        12,
        None,
    ],
)
async def test_offset_cursors_of_unexpected_types_are_400(
    fake_gw: tuple[TestClient[Any, Any], FakeUpstream], payload: Any
) -> None:
    gw, fake = fake_gw
    resp = await gw.get("/v1/things", params={"cursor": _cursor(payload, gw)})
    got = await resp.json()
    assert resp.status == 400 and got["error"]["code"] == "bad_cursor", got
    assert fake.count() == 0


async def test_before_cursors_of_unexpected_types_are_400(fake_gw: tuple[TestClient[Any, Any], FakeUpstream]) -> None:
    gw, fake = fake_gw
    hostile = [
        _cursor({"r": "feed", "p": {"": [1, 2]}}, gw),
        _cursor({"r": "feed", "p": {"": {"$gt": 1}}}, gw),
        _cursor({"r": "feed", "p": {"": True}}, gw),
        _signed(gw, base64.urlsafe_b64encode(b'{"r":"feed","p":{"":Infinity}}').decode()),
        _signed(gw, base64.urlsafe_b64encode(b'{"r":"feed","p":{"":NaN}}').decode()),
        _signed(gw, base64.urlsafe_b64encode(b'{"r":"feed","p":{"":' + _deep(2000) + b"}}").decode()),
        _signed(gw, base64.urlsafe_b64encode(b"[" * 3000).decode()),
        _signed(gw, base64.urlsafe_b64encode(b"\xff\xfe").decode()),
        "!!!",
    ]
    for cursor in hostile:
        resp = await gw.get("/v1/feed", params={"cursor": cursor})
        got = await resp.json()
        assert resp.status == 400 and got["error"]["code"] == "bad_cursor", (cursor[:40], got)
    assert fake.count() == 0
    # what encode_cursor writes still works: a scalar position is sent on as ?before=; at the walk's end the
    # first page is asked again, and its head (an empty list) is the one the walk began with (the ``t`` mark)
    fake.script("/feed", Reply(200, body=b"[]"))
    empty_head = fingerprint([["", [None, []]]])
    cursor = _cursor({"r": "feed", "p": {"": "2024-01-01"}, "m": {"t": empty_head}}, gw)
    resp = await gw.get("/v1/feed", params={"cursor": cursor})
    assert resp.status == 200, await resp.text()
    assert [h.query for h in fake.hits[-2:]] == ["before=2024-01-01", ""]


async def test_thousands_of_unknown_query_parameters_make_a_small_error(
    fake_gw: tuple[TestClient[Any, Any], FakeUpstream],
) -> None:
    gw, fake = fake_gw
    query = "&".join(f"p{i:x}" for i in range(1500))  # fits the 8 KiB URL limit
    resp = await gw.get(f"/v1/things?{query}")
    body = await resp.read()
    assert resp.status == 400 and len(body) < 2048, len(body)
    err = json.loads(body)["error"]
    assert err["code"] == "bad_query"
    assert err["message"].startswith("unknown query parameters 'p0', 'p1'")
    assert "and 1490 more" in err["message"] and "'pa'" not in err["message"]
    # one unknown name still reads as before; a repeated known one is named once
    resp = await gw.get("/v1/things?typ=1&limit=1&limit=2&limit=3")
    err = (await resp.json())["error"]
    assert err["details"] == [
        "unknown query parameter 'typ'; this route takes: all, cursor, limit",
        "query parameter 'limit' is given more than once",
    ]
    assert fake.count() == 0


# --------------------------------------------------------------------------- upstream answers: counted 502


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (_deep(100_000), "nested deeper than 1024"),
        (b'{"id": 1, "value": ' + _deep(2000) + b"}", "nested deeper than 1024"),
        (b'{"id": 1, "value": NaN}', "NaN is not JSON"),
        (b'{"id": 1, "value": Infinity}', "Infinity is not JSON"),
        (b'{"id": 1, "value": -Infinity}', "-Infinity is not JSON"),
    ],
)
async def test_upstream_json_that_is_not_json_is_a_counted_502(
    fake_gw: tuple[TestClient[Any, Any], FakeUpstream], caplog: pytest.LogCaptureFixture, body: bytes, why: str
) -> None:
    gw, fake = fake_gw
    caplog.set_level(logging.INFO)
    for path, route in (("/v1/things/x", "get_thing"), ("/v1/items/x", "get_item"), ("/v1/things", "list_things")):
        fake.script("/things/x", Reply(200, body=body))
        fake.script("/list", Reply(200, body=body))
        resp = await gw.get(path)
        got = await resp.json()
        assert resp.status == 502, (route, got)
        assert got["error"]["code"] == "upstream_bad_json" and got["error"]["route"] == route
        assert why in got["error"]["message"]
        assert await _metric(gw, "gateway_upstream_errors_total", route=route, kind="shape") == 1
        assert 'data-state="down"' in await _route_state(gw, route)
    _no_traceback(caplog)


async def test_deep_but_allowed_upstream_json_is_passed_on(fake_gw: tuple[TestClient[Any, Any], FakeUpstream]) -> None:
    gw, fake = fake_gw
    fake.script("/things/x", Reply(200, body=b'{"id": 1, "value": ' + _deep(1000) + b"}"))
    resp = await gw.get("/v1/items/x")  # re-serialized deeper than orjson writes
    assert resp.status == 200
    assert await resp.read() == b'{"id":1,"value":' + _deep(1000) + b"}"


# --------------------------------------------------------------------------- one redactor


async def _echoing(request: web.Request) -> web.StreamResponse:
    """An upstream that puts the Cookie it got into a redirect target, a content type or an error."""
    cookie = request.headers.get("Cookie", "")
    if request.path.startswith("/m/"):  # a redirect target the route cannot parse
        return web.Response(status=302, headers={"Location": f"/m/x.js?c={cookie.replace(' ', '')}"})
    if request.path.startswith("/typed/"):  # a content type the route does not expect
        return web.Response(body=b"x", headers={"Content-Type": f"text/x-{cookie.replace(' ', '')}"})
    return web.json_response({"detail": f"bad cookie {cookie}"}, status=500)


async def _echo_gateway(make_gateway: Any, aiohttp_server: Any, yaml_text: str, env: dict[str, str]) -> Any:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echoing)
    server = await aiohttp_server(app)
    return await make_gateway(yaml_text.format(url=str(server.make_url("")).rstrip("/")), env=env)


async def test_an_upstream_echoing_the_cookie_leaks_nothing(
    make_gateway: Any, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = await _echo_gateway(make_gateway, aiohttp_server, ROUTES_YAML, ENV)
    bodies = []
    for path in ("/v1/modules/a", "/v1/typed/a", "/v1/things/a"):
        resp = await gw.get(path)
        text = await resp.text()
        assert resp.status == 502, text
        assert "[redacted]" in text, text
        bodies.append(text)
    bodies += [await (await gw.get(page)).text() for page in ("/status", "/metrics")]
    logged = "\n".join(r.getMessage() + repr(getattr(r, "fields", "")) for r in caplog.records)
    for secret in (SESSION, TOKEN):
        assert all(secret not in b for b in bodies)
        assert secret not in logged
    assert "[redacted]" in bodies[3]  # the /status reasons are the redacted messages


async def test_the_redactor_sees_a_secret_renewed_a_moment_ago(
    make_gateway: Any, aiohttp_server: Any, tmp_path: Any
) -> None:
    cookies = tmp_path / "cookies.json"
    cookies.write_text(json.dumps({"I": "first_session_value_123", "T": "first_token_value_456"}))
    yaml_text = ROUTES_YAML.replace(
        "I: {{env: FAKE_SESSION}}\n        T: {{env: FAKE_TOKEN}}",
        f"I: {{{{file: {cookies}, json_key: I}}}}\n        T: {{{{file: {cookies}, json_key: T}}}}",
    )
    assert "json_key" in yaml_text
    gw = await _echo_gateway(make_gateway, aiohttp_server, yaml_text, {})
    text = await (await gw.get("/v1/things/a")).text()
    assert "first_session" not in text and "[redacted]" in text
    cookies.write_text(json.dumps({"I": "renewed_session_value_789", "T": "renewed_token_value_012"}))
    text = await (await gw.get("/v1/things/a")).text()
    assert "renewed_session" not in text and "renewed_token" not in text and "[redacted]" in text


# --------------------------------------------------------------------------- HTTP edges, raw sockets


async def test_http_0_9_and_2_0_request_lines_are_505(fake_gw: tuple[TestClient[Any, Any], FakeUpstream]) -> None:
    gw, fake = fake_gw
    for line in ("GET /v1/things/a HTTP/2.0", "GET /v1/things/a HTTP/0.9", "GET /healthz HTTP/2.0"):
        resp = await raw(gw, request(line))
        assert resp.status == 505, (line, resp.body)
        assert resp.json()["error"]["code"] == "http_version_not_supported"
    resp = await raw(gw, b"GET /v1/things/a\r\n\r\n")  # a bare HTTP/0.9 line
    assert resp.status == 505 and resp.json()["error"]["code"] == "http_version_not_supported"
    assert fake.count() == 0
    for line in ("GET /v1/things/a HTTP/1.1", "GET /v1/things/a HTTP/1.0"):
        assert (await raw(gw, request(line))).status == 200
    assert fake.count() == 2


async def test_absolute_form_targets_are_400_everywhere(fake_gw: tuple[TestClient[Any, Any], FakeUpstream]) -> None:
    gw, fake = fake_gw
    for target in (
        "http://gateway.test/v1/things/a",
        "http://127.0.0.1/healthz",  # the gateway's own endpoints alike
        "https://gateway.test/metrics",
        "HTTP://gateway.test/v1/things",
    ):
        resp = await raw(gw, request(f"GET {target} HTTP/1.1"))
        assert_json_error(resp.status, resp.json(), (400,))
        assert resp.json()["error"]["code"] == "absolute_form_target"
    assert fake.count() == 0


# --------------------------------------------------------------------------- the sweep

_HOSTILE_QUERIES = [
    "limit=-1",
    "limit=1e9",
    "limit=99999999999999999999999",
    "limit=%00",
    "all=%ff",
    "cursor=",
    "cursor=%00%00",
    "cursor=" + "A" * 4000,
    "cursor=" + _cursor({"r": "x"}),
    "cursor=" + _cursor([1, 2]),
    "cursor=" + base64.urlsafe_b64encode(b"[" * 5000).decode(),
    "type=%ff%fe",
    "type=,,,,",
    "type=" + "a," * 500,
    "%ff=1",
    "a=1&" * 300 + "b=2",
    "id=%0d%0a",
    "reindex=maybe",
    "project_id=-1",
]
_HOSTILE_BODIES = [
    _deep(100_000),
    b'{"a": NaN}',
    b"{" * 3000,
    b'"\\ud800"',
    b"\xff\xfe\xfd",
    b"[1e999999]",
    b'{"nodes": [' + b"[" * 1100 + b"]" * 1100 + b"]}",
    b'{"nodes": "x", "version": 1e400}',
    b"123456789012345678901234567890123456789",
    b"null",
    b"[]",
]
_HOSTILE_HEADERS: list[dict[str, str]] = [
    {"Accept": "application/x-ndjson"},
    {"X-Request-ID": "\u00e9" * 10},
    {"Content-Type": "application/json; charset=utf-7"},
    {"Content-Type": "application/merge-patch+json"},
    {"Authorization": "Bearer " + "x" * 5000},
    {"If-None-Match": '"' + "x" * 3000 + '"'},
]


async def test_sweep_no_route_answers_500(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    """Every shipped route x hostile query strings, bodies and headers: never a 500, always a JSON error."""
    assert gw.app is not None
    config = gw.app[GATEWAY].runtime.config
    seen = 0
    for route in config.routes:
        path = route.stable.split(" ", 1)[1]
        for name in ("id", "login", "project_id", "short_id", "{"):
            path = path.replace("{" + name + "}", "1" if name == "project_id" else "x")
        cases: list[tuple[str, bytes | None, dict[str, str]]] = [(f"?{q}", None, {}) for q in _HOSTILE_QUERIES]
        cases += [("", b, {"Content-Type": "application/json"}) for b in _HOSTILE_BODIES]
        cases += [("", b"{}", h) for h in _HOSTILE_HEADERS]
        methods = [route.method] * len(cases) + ["OPTIONS", "HEAD", "PROPFIND", "TRACE"]
        cases += [("", b"x", {})] * 4
        for method, (query, body, headers) in zip(methods, cases, strict=True):
            resp = await gw.request(method, path + query, data=body, headers=headers)
            data = await resp.read()
            seen += 1
            assert resp.status != 500, (route.name, method, query[:60], (body or b"")[:40], headers, data[:300])
            if resp.status >= 400 and method != "HEAD":
                err = json.loads(data)["error"]
                assert err["code"] and err["message"], (route.name, data[:300])
    assert seen > 300
    metrics = await (await gw.get("/metrics")).text()
    assert 'status="5xx"' not in "".join(
        ln for ln in metrics.splitlines() if ln.startswith("gateway_requests_total") and 'route="(none)"' in ln
    )


async def test_a_forged_position_of_the_wrong_type_is_the_clients_400_not_the_routes_502(
    fake_gw: tuple[TestClient[Any, Any], FakeUpstream],
) -> None:
    gw, fake = fake_gw
    fake.script("/feed", Reply(200, body=b'[{"t": "2024-01-02"}, {"t": "2024-01-01"}]'))
    resp = await gw.get("/v1/feed", params={"cursor": _cursor({"r": "feed", "p": {"": 5}}, gw)})
    got = await resp.json()
    assert resp.status == 400 and got["error"]["code"] == "bad_cursor", got
    assert await _metric(gw, "gateway_upstream_errors_total", route="feed") == 0
    assert 'data-state="down"' not in await _route_state(gw, "feed")
    # an upstream whose own paging field changes type mid-way is still the route breaking
    fake.script(
        "/feed",
        Reply(200, body=b'[{"t": "2024-01-02"}, {"t": "2024-01-01"}]'),
        Reply(200, body=b'[{"t": 3}, {"t": 2}]'),
    )
    resp = await gw.get("/v1/feed", params={"all": "true"})
    assert resp.status == 502 and (await resp.json())["error"]["code"] == "pagination_stalled"


async def test_probe_results_on_status_are_redacted_too(make_gateway: Any, aiohttp_server: Any) -> None:
    yaml_text = ROUTES_YAML.replace(
        'targets: ["GET /things/{{name}}"]\n  get_item:',
        'targets: ["GET /things/{{name}}"]\n    probe: {{params: {{name: a}}}}\n  get_item:',
    )
    assert "probe:" in yaml_text
    gw = await _echo_gateway(make_gateway, aiohttp_server, yaml_text, ENV)
    assert gw.app is not None
    results = await gw.app[GATEWAY].prober.run_round()
    assert [r.outcome for r in results] == ["broken"] and "[redacted]" in results[0].message
    page = await (await gw.get("/status")).text()
    assert SESSION not in page and TOKEN not in page and SESSION.lower() not in page.lower()
