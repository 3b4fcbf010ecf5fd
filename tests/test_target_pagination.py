"""A target that pages its own way (issue 13.5): Observable's public list as a bare array paged by
``before`` or as ``{"results": [...]}`` paged by ``page`` (sandbox switch ``public_list_results``),
served by the shipped routes.yaml either way through real HTTP: limit, the next_cursor walk,
all=true and NDJSON; a walk whose target stops answering mid-way is a 502, never wrong data."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import ConfigError, parse_config
from gateway.pagination import Position, decode_cursor, encode_cursor
from gateway.pagination.cursor import _sign
from sandbox.observable import PAGE_SIZE, SANDBOX_LOGIN, SANDBOX_OTHER_LOGIN, ObservableState
from sandbox.runner import Sandboxes

URL = f"/v1/observable/users/{SANDBOX_OTHER_LOGIN}/notebooks"
UPSTREAM = f"/documents/@{SANDBOX_OTHER_LOGIN}"
ROUTE = "observable_user_notebooks"


def _expected(state: ObservableState) -> list[str]:
    ids = [nb.id for nb in state.by_kind("public", SANDBOX_OTHER_LOGIN)]
    assert len(ids) > PAGE_SIZE + 7, "the walk must cross upstream pages"
    return ids


def _queries(state: ObservableState) -> list[str]:
    return [e["query_string"] for e in state.log if e["path"] == UPSTREAM]


async def _walk(gw: TestClient[Any, Any], limit: int, cursor: str | None = None) -> list[str]:
    ids: list[str] = []
    for _ in range(100):
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        resp = await gw.get(URL, params=params)
        page = await resp.json()
        assert resp.status == 200, page
        ids += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return ids
        assert len(page["items"]) == limit
    raise AssertionError("the cursor never ended")


async def _everything(gw: TestClient[Any, Any]) -> tuple[list[str], list[str]]:
    resp = await gw.get(URL, params={"all": "true"})
    body = await resp.json()
    assert resp.status == 200 and body["next_cursor"] is None, body
    streamed = await gw.get(URL, params={"all": "true"}, headers={"Accept": "application/x-ndjson"})
    assert streamed.status == 200
    lines = [json.loads(line)["id"] for line in (await streamed.read()).decode().splitlines()]
    return [i["id"] for i in body["items"]], lines


async def _metric(gw: TestClient[Any, Any], name: str) -> float | None:
    text = await (await gw.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + "{") and f'route="{ROUTE}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def _fallbacks(gw: TestClient[Any, Any]) -> float:
    return await _metric(gw, "gateway_fallback_total") or 0.0


async def test_bare_array_is_walked_by_before(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    state = sandboxes.observable_state
    expected = _expected(state)
    state.reset_counters()
    first = await (await gw.get(URL, params={"limit": "7"})).json()
    assert [i["id"] for i in first["items"]] == expected[:7]
    assert _queries(state) == [""]  # the first target, its first page: no paging parameter
    assert await _walk(gw, 7) == expected
    assert all("page=" not in q for q in _queries(state))
    assert await _everything(gw) == (expected, expected)
    assert await _fallbacks(gw) == 0


async def test_results_shape_is_walked_by_page_on_the_second_target(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    state = sandboxes.observable_state
    expected = _expected(state)
    state.apply_switches({"public_list_results": True})
    state.reset_counters()
    resp = await gw.get(URL, params={"limit": "7"})
    first = await resp.json()
    assert resp.status == 200, first
    assert [i["id"] for i in first["items"]] == expected[:7]
    assert set(first["items"][0]) == {"id", "slug", "title", "type", "version", "likes", "updated_at"}
    # the first target's answer is not a bare array: handed over, and the second asked for page 1
    assert _queries(state) == ["", "page=1"]
    assert await _fallbacks(gw) == 1
    # limit 7 over upstream pages of 30: every cursor resumes mid-page on the second target directly
    state.reset_counters()
    assert await _walk(gw, 7) == expected
    queries = _queries(state)
    assert queries.count("") == 1  # only the walk's first request tried the first target
    assert all(q.startswith("page=") for q in queries[2:])
    assert await _walk(gw, 200) == expected
    assert await _everything(gw) == (expected, expected)


async def test_a_walk_whose_target_switches_mid_way_is_a_502(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw = await make_gateway(env={**sandbox_env, "ROUTEGATE_CACHE": "on"})  # the shipped default
    state = sandboxes.observable_state
    expected = _expected(state)
    resp = await gw.get(URL, params={"limit": "5"})
    first = await resp.json()
    assert [i["id"] for i in first["items"]] == expected[:5]
    assert (await gw.get(URL, params={"limit": "5"})).headers["X-Cache"] == "HIT"
    state.apply_switches({"public_list_results": True})  # the upstream switches during the walk
    resp = await gw.get(URL, params={"limit": "5", "cursor": first["next_cursor"]})
    body = await resp.json()
    assert resp.status == 502, body
    assert body["error"]["code"] == "pagination_switched" and body["error"]["route"] == ROUTE
    assert "start it again without a cursor" in body["error"]["message"]
    # the route itself works: a new walk is served by the second target, whole, even from the same
    # first-page URL (the route caches 5m: its cached first page, with the dead cursor, is gone)
    assert await _walk(gw, 5) == expected
    assert await _metric(gw, "gateway_route_up") == 1  # not down: new walks work
    text = await (await gw.get("/metrics")).text()
    assert [line for line in text.splitlines() if "switched" in line] == [
        f'gateway_upstream_errors_total{{kind="switched",route="{ROUTE}",upstream="observable"}} 1.0'
    ]


async def test_a_results_cursor_stops_when_the_upstream_switches_back(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    """The mirror: a walk on the second (last) target, then the bare array again.  The last target's
    misfit mid-walk is the upstream switching, not drift: 502 pagination_switched, the route stays
    up, the cached first page (with the dead cursor) goes, and the restarted walk is whole."""
    gw = await make_gateway(env={**sandbox_env, "ROUTEGATE_CACHE": "on"})
    state = sandboxes.observable_state
    expected = _expected(state)
    state.apply_switches({"public_list_results": True})
    first = await (await gw.get(URL, params={"limit": "5"})).json()
    assert [i["id"] for i in first["items"]] == expected[:5]
    state.apply_switches({"public_list_results": False})  # the second target now answers a bare array
    cached = await gw.get(URL, params={"limit": "5"})
    assert cached.headers["X-Cache"] == "HIT" and (await cached.json())["next_cursor"] == first["next_cursor"]
    resp = await gw.get(URL, params={"limit": "5", "cursor": first["next_cursor"]})
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "pagination_switched", body
    assert await _metric(gw, "gateway_route_up") == 1
    restarted = await gw.get(URL, params={"limit": "5"})
    assert restarted.headers["X-Cache"] == "MISS"
    assert await _walk(gw, 5) == expected


MIXED = """
upstreams:
  up: {base_url: "http://127.0.0.1:9"}
routes:
  one:
    stable: GET /v1/one
    upstream: up
    auth: none
    pagination: {style: before, param: before, field: t}
    fallback_on: [404, shape]
    targets:
      - GET /a
      - request: GET /b
        pagination: {style: page, items: results}
    response: {items: {id: id}}
  plain:
    stable: GET /v1/plain
    upstream: up
    auth: none
    pagination: {style: before, param: before, field: t}
    targets: [GET /a]
    response: {items: {id: id}}
"""


def test_the_cursor_names_the_target_and_is_checked_against_it() -> None:
    config = parse_config(MIXED, env={})
    mixed, plain = config.routes
    assert mixed.mixed_paging and not plain.mixed_paging
    pag = mixed.paging(1)
    assert pag is not None and pag.style == "page" and pag.max_limit == mixed.pagination.max_limit  # type: ignore[union-attr]
    secret = b"k" * 32
    cursor = encode_cursor(mixed, [None], Position({"": {"t": 3, "s": 4}}, target=1), secret, {})
    assert cursor is not None
    streams, position = decode_cursor(mixed, cursor, secret, {})
    assert streams == [""]
    assert position.target == 1 and position.pos == {"": {"t": 3, "s": 4}}
    # a second target's position is not the first target's kind of value: refused before any call
    with pytest.raises(Exception, match="not valid") as err:
        wrong = encode_cursor(mixed, [None], Position({"": "2024"}, target=1), secret, {})
        decode_cursor(mixed, wrong or "", secret, {})
    assert getattr(err.value, "code", None) == "bad_cursor"
    # a target past the route's last is refused, whatever else the (validly signed) cursor says
    for beyond in (2, 5):
        raw = json.dumps({"r": "one", "p": {"": {"t": 1, "s": 0}}, "k": beyond}).encode()
        body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        with pytest.raises(Exception, match="not valid"):
            decode_cursor(mixed, f"{body}.{_sign(secret, body)}", secret, {})
    # a reload that changes the walked target (its path or how it pages) refuses its old cursors:
    # the operator's change, not the client's mistake (409 route_changed, gateway.pagination.stale)
    for edit in (("GET /b", "GET /c"), ("style: page, items: results", "style: cursor, token: next")):
        edited = parse_config(MIXED.replace(*edit), env={}).routes[0]
        with pytest.raises(Exception, match="route was changed") as err:
            decode_cursor(edited, cursor, secret, {})
        assert getattr(err.value, "code", None) == "route_changed" and getattr(err.value, "status", None) == 409
    # a route whose targets page alike never issues a target; one naming a target is refused
    forged = encode_cursor(plain, [None], Position({"": "2024"}, target=1), secret, {})
    with pytest.raises(Exception, match="not valid"):
        decode_cursor(plain, forged or "", secret, {})


@pytest.mark.parametrize(
    ("route", "needle"),
    [
        (
            "    targets:\n      - request: GET /b\n        pagination: {style: page}\n",
            "routes.r.targets[0].pagination: only a collection's targets page",
        ),
        (
            "    pagination: {style: before}\n    fallback_on: [shape]\n    targets:\n      - GET /a\n"
            "      - request: GET /b\n        pagination: {style: page, max_limit: 10}\n",
            "routes.r.targets[1].pagination.max_limit: max_limit is the route's",
        ),
        (
            "    params: {k: {enum: [x, y], fan_out: true}}\n    pagination: {style: before}\n"
            "    fallback_on: [shape]\n    targets:\n      - GET /a?k={k}\n"
            "      - request: GET /b?k={k}\n        pagination: {style: page}\n",
            "routes.r.targets[1].pagination.style: fan_out merges streams",
        ),
        (
            "    pagination: {style: before}\n    fallback_on: [shape]\n    targets:\n      - GET /a\n"
            "      - request: GET /b\n        pagination: {style: pages}\n",
            "routes.r.targets[1].pagination.style: expected 'before'",
        ),
    ],
)
def test_a_target_pagination_mistake_names_its_line_and_key(route: str, needle: str) -> None:
    text = (
        "upstreams:\n  up: {base_url: 'http://127.0.0.1:9'}\nroutes:\n  r:\n    stable: GET /v1/r\n"
        "    upstream: up\n    auth: none\n" + route
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, "routes.yaml", env={})
    message = str(err.value)
    assert needle in message, message
    assert "routes.yaml:" in message


def test_routes_and_status_say_which_target_pages_its_own_way(capsys: pytest.CaptureFixture[str]) -> None:
    """Two targets asking one path differ only in how they page: the operator's views say so."""
    from gateway.cli import main
    from tests.conftest import ROUTES

    assert main(["routes", str(ROUTES)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(ROUTE))
    assert line.endswith("GET /documents/@{login} | GET /documents/@{login} (paged by page)"), line


SIZELESS = """
upstreams:
  up: {{base_url: "{base}"}}
routes:
  r:
    stable: GET /v1/r
    upstream: up
    auth: none
    pagination: {{style: page, items: results, size_param: null, total: count}}
    targets: [GET /list]
    response: {{items: {{id: id}}}}
  mixed:
    stable: GET /v1/mixed
    upstream: up
    auth: none
    pagination: {{style: before, param: before, field: t}}
    fallback_on: [404, 410, shape]
    targets:
      - GET /list
      - request: GET /list
        pagination: {{style: page, items: results, size_param: null, total: count}}
    response: {{items: {{id: id}}}}
"""


async def test_a_page_size_the_gateway_does_not_send_ends_no_walk_early(aiohttp_server: Any, make_gateway: Any) -> None:
    """size_param: null: the upstream pages 10 at a time, its own size; neither a guessed size nor
    ``total`` at that size may end the walk before an empty page (25 items, not 10)."""
    items = [{"id": f"n{i:02d}"} for i in range(25)]

    async def listing(request: web.Request) -> web.Response:
        assert "limit" not in request.query
        page = int(request.query.get("page", "1"))
        return web.json_response({"results": items[(page - 1) * 10 : page * 10], "count": len(items)})

    app = web.Application()
    app.router.add_get("/list", listing)
    up = await aiohttp_server(app)
    gw = await make_gateway(SIZELESS.format(base=str(up.make_url("")).rstrip("/")), env={"ROUTEGATE_CACHE": "off"})
    for path in ("/v1/r", "/v1/mixed"):
        body = await (await gw.get(path, params={"all": "true"})).json()
        assert [i["id"] for i in body["items"]] == [i["id"] for i in items], (path, body)
        walked: list[str] = []
        cursor = None
        for _ in range(10):
            page = await (await gw.get(path, params={"limit": "7", **({"cursor": cursor} if cursor else {})})).json()
            walked += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert walked == [i["id"] for i in items], path


async def test_a_cursor_holds_only_for_the_path_it_was_issued_for(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    """Another login's cursor is refused before any upstream call: its position is not this walk's
    (it would skip or repeat items), and it must not pass for the upstream switching mid-walk."""
    first = await (await gw.get(URL, params={"limit": "3"})).json()
    state = sandboxes.observable_state
    state.reset_counters()
    other = f"/v1/observable/users/{SANDBOX_LOGIN}/notebooks"
    resp = await gw.get(other, params={"limit": "3", "cursor": first["next_cursor"]})
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "bad_cursor", body
    assert state.total_requests == 0
    assert (await gw.get(URL, params={"limit": "3", "cursor": first["next_cursor"]})).status == 200
