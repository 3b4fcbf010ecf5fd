"""The pagination styles (page, next_url, cursor; offset and before kept) through real HTTP:
limit, the next_cursor walk, all=true and NDJSON against the PostHog sandbox's paging
variants, and stalled or misdirected upstreams answered 502 naming the route."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.config import ConfigError, parse_config
from sandbox.runner import Sandboxes
from tests.helpers.styles import STYLES_YAML

ND = {"Accept": "application/x-ndjson"}
LIST = "/api/projects/1/notebooks/"


async def _walk(gw: TestClient[Any, Any], url: str, limit: int) -> list[Any]:
    """Follow next_cursor to the end, checking every page but the last is full."""
    items: list[Any] = []
    cursor = None
    for _ in range(1000):
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        resp = await gw.get(url, params=params)
        page = await resp.json()
        assert resp.status == 200, page
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert len(page["items"]) == limit
    raise AssertionError("the cursor never ended")


async def _all(gw: TestClient[Any, Any], url: str) -> tuple[list[Any], list[Any]]:
    """all=true as JSON and as NDJSON."""
    resp = await gw.get(url, params={"all": "true"})
    body = await resp.json()
    assert resp.status == 200 and body["next_cursor"] is None, body
    streamed = await gw.get(url, params={"all": "true"}, headers=ND)
    assert streamed.status == 200 and streamed.headers["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in (await streamed.read()).decode().splitlines()]
    return body["items"], lines


async def _styles_gateway(
    make_gateway: Any, sandbox_env: dict[str, str], registry: CollectorRegistry | None = None
) -> Any:
    return await make_gateway(STYLES_YAML, env=sandbox_env, registry=registry or CollectorRegistry())


def _activity(sandboxes: Sandboxes, updates: int) -> tuple[str, list[str]]:
    """A notebook with ``updates`` more activity entries; its short id and activity newest first."""
    state = sandboxes.posthog_state
    nb = state.visible(1)[3]
    for i in range(updates):
        state.update(nb, {"title": f"edit {i}"})
    return nb.short_id, [a["created_at"] for a in reversed(nb.activity)]


async def test_page_style_walks_posthog_activity_by_page_number(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    short_id, expected = _activity(sandboxes, 24)
    assert len(expected) == 25  # created + 24 updates: three upstream pages of 10
    url = f"/v1/posthog/projects/1/notebooks/{short_id}/activity"
    state = sandboxes.posthog_state
    state.reset_counters()
    first = await (await gw.get(url, params={"limit": "7"})).json()
    assert [i["created_at"] for i in first["items"]] == expected[:7]
    assert state.count("GET", f"{LIST}{short_id}/activity") == 1
    # limit 7 over upstream pages of 10: each next_cursor resumes mid-page, nothing lost or repeated
    assert [i["created_at"] for i in await _walk(gw, url, 7)] == expected
    assert [i["created_at"] for i in await _walk(gw, url, 12)] == expected
    state.reset_counters()
    whole, lines = await _all(gw, url)
    assert [i["created_at"] for i in whole] == expected and lines == whole
    # total_count says 25: pages 1..3 and not one more, per all=true
    assert state.count("GET", f"{LIST}{short_id}/activity") == 6
    # the default limit is 50: one stable page holds all 25
    assert len((await (await gw.get(url)).json())["items"]) == 25


async def test_sandbox_activity_pages_like_posthog(sandboxes: Sandboxes) -> None:
    """The sandbox's page mode answers PostHog's shape: page from 1, limit default 10, offset ignored."""
    import aiohttp

    short_id, expected = _activity(sandboxes, 14)
    state = sandboxes.posthog_state
    key = sorted(state.api_keys)[0]
    url = f"{sandboxes.posthog_url}{LIST}{short_id}/activity"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:
        async with s.get(url, params={"offset": "10"}) as r:
            body = await r.json()
        assert [a["created_at"] for a in body["results"]] == expected[:10]  # offset ignored
        assert body["total_count"] == 15 and body["previous"] is None
        assert "page=2" in body["next"] and body["next"].startswith("http://127.0.0.1")
        async with s.get(body["next"]) as r:
            second = await r.json()
        assert [a["created_at"] for a in second["results"]] == expected[10:] and second["next"] is None
        state.apply_switches({"activity_paging": "offset"})
        async with s.get(url, params={"offset": "10", "limit": "10"}) as r:
            assert [a["created_at"] for a in (await r.json())["results"]] == expected[10:]


async def test_old_offset_activity_still_pages_by_offset(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    short_id, expected = _activity(sandboxes, 30)
    sandboxes.posthog_state.apply_switches({"activity_paging": "offset"})
    gw = await _styles_gateway(make_gateway, sandbox_env)
    url = f"/v1/activity-offset/{short_id}"
    assert [i["created_at"] for i in await _walk(gw, url, 8)] == expected
    whole, lines = await _all(gw, url)
    assert [i["created_at"] for i in whole] == expected and lines == whole


@pytest.mark.parametrize(("route", "switches"), [("by_link", {}), ("by_header", {"list_link_header": True})])
async def test_next_url_follows_the_body_field_or_the_link_header(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes, route: str, switches: dict[str, Any]
) -> None:
    state = sandboxes.posthog_state
    state.apply_switches(switches)
    expected = [nb.short_id for nb in state.visible(1)]
    gw = await _styles_gateway(make_gateway, sandbox_env)
    url = "/v1/" + route.replace("_", "-")
    state.reset_counters()
    page = await (await gw.get(url, params={"limit": "50"})).json()
    assert [i["id"] for i in page["items"]] == expected[:50]
    assert state.count("GET", LIST) == 2  # upstream pages of 40: two make the stable page of 50
    # limit 50 over upstream pages of 40: every cursor resumes mid-page
    assert [i["id"] for i in await _walk(gw, url, 50)] == expected
    whole, lines = await _all(gw, url)
    assert [i["id"] for i in whole] == expected and lines == whole


async def test_cursor_style_sends_the_token_back(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    state = sandboxes.posthog_state
    state.apply_switches({"list_paging": "cursor"})
    expected = [nb.short_id for nb in state.visible(1)]
    gw = await _styles_gateway(make_gateway, sandbox_env)
    assert [i["id"] for i in await _walk(gw, "/v1/by-token", 45)] == expected
    state.reset_counters()
    whole, lines = await _all(gw, "/v1/by-token")
    assert [i["id"] for i in whole] == expected and lines == whole
    assert state.count("GET", LIST) == 2 * 9  # 250 in pages of 30, for JSON and for NDJSON


# ------------------------------------------------------------------ misbehaving upstreams

FAKE_YAML = """
upstreams:
  fake:
    base_url: {url}
    retries: {{attempts: 1}}
    auth:
      bearer: {{env: FAKE_TOKEN}}
routes:
  offset_list:
    stable: GET /v1/offset
    upstream: fake
    pagination: {{style: offset, page_size: 3}}
    targets: ["GET /offset"]
  page_list:
    stable: GET /v1/page
    upstream: fake
    pagination: {{style: page, page_size: 3, size_param: per_page, first_page: 0}}
    targets: ["GET /page"]
  link_list:
    stable: GET /v1/link
    upstream: fake
    pagination: {{style: next_url, items: data, next: links.next}}
    targets: ["GET /link"]
  token_list:
    stable: GET /v1/token
    upstream: fake
    pagination: {{style: cursor, items: data, token: next}}
    targets: ["GET /token"]
  cycle_list:
    stable: GET /v1/cycle
    upstream: fake
    pagination: {{style: next_url, items: data, next: links.next}}
    targets: ["GET /cycle"]
  before_list:
    stable: GET /v1/before
    upstream: fake
    pagination: {{style: before, param: before, field: t}}
    targets: ["GET /before"]
"""
TOKEN = "fake_secret_token_0123456789"


def _fake_app(seen: list[str], link: dict[str, str]) -> web.Application:
    """An upstream that ignores every paging parameter (and whose next link is ``link['next']``)."""

    async def offset(request: web.Request) -> web.Response:
        seen.append(str(request.rel_url))
        return web.json_response({"next": "http://x/more", "results": [{"id": 1}, {"id": 2}, {"id": 3}]})

    async def page(request: web.Request) -> web.Response:
        seen.append(str(request.rel_url))
        return web.json_response({"results": [{"id": 1}, {"id": 2}, {"id": 3}]})

    async def linked(request: web.Request) -> web.Response:
        seen.append(str(request.rel_url))
        nxt = link["next"].replace("ORIGIN", f"{request.scheme}://{request.host}")
        return web.json_response({"data": [{"id": len(seen)}], "links": {"next": nxt}})

    async def token(request: web.Request) -> web.Response:
        seen.append(str(request.rel_url))
        return web.json_response({"data": [{"id": len(seen)}], "next": "same-token"})

    async def before(request: web.Request) -> web.Response:
        seen.append(str(request.rel_url))
        return web.json_response([{"t": "2026-01-03"}, {"t": "2026-01-02"}])

    async def cycle(request: web.Request) -> web.Response:
        seen.append(str(request.rel_url))
        after = int(request.query.get("after", "0"))
        nxt = f"/cycle?after={after % 2 + 1}"  # 0 -> 1 -> 2 -> 1 -> ...
        return web.json_response({"data": [{"id": after}], "links": {"next": nxt}})

    app = web.Application()
    app.router.add_get("/cycle", cycle)
    for path, handler in (("/offset", offset), ("/page", page), ("/link", linked), ("/token", token)):
        app.router.add_get(path, handler)
    app.router.add_get("/before", before)
    return app


async def _fake_gateway(make_gateway: Any, aiohttp_server: Any, link: dict[str, str]) -> tuple[Any, list[str], Any]:
    seen: list[str] = []
    upstream = await aiohttp_server(_fake_app(seen, link))
    registry = CollectorRegistry()
    url = str(upstream.make_url("/")).rstrip("/")
    gw = await make_gateway(FAKE_YAML.format(url=url), env={"FAKE_TOKEN": TOKEN}, registry=registry)
    return gw, seen, registry


async def _stalled(gw: TestClient[Any, Any], url: str, route: str, registry: CollectorRegistry, code: str) -> None:
    resp = await gw.get(url)
    body = await resp.json()
    assert resp.status == 502, body
    assert body["error"]["code"] == code and body["error"]["route"] == route
    assert registry.get_sample_value("gateway_route_up", {"route": route}) == 0


@pytest.mark.parametrize(
    ("path", "route"), [("offset", "offset_list"), ("page", "page_list"), ("before", "before_list")]
)
async def test_an_upstream_ignoring_the_paging_parameter_stalls_the_cursor_walk(
    make_gateway: Any, aiohttp_server: Any, path: str, route: str
) -> None:
    """Across separate requests, not only inside all=true (it used to answer page one forever)."""
    gw, seen, registry = await _fake_gateway(make_gateway, aiohttp_server, {"next": "/link"})
    first = await gw.get(f"/v1/{path}", params={"limit": "2" if path == "before" else "3"})
    page = await first.json()
    assert first.status == 200 and page["next_cursor"], page
    await _stalled(gw, f"/v1/{path}?limit=3&cursor={page['next_cursor']}", route, registry, "pagination_stalled")
    await _stalled(gw, f"/v1/{path}?all=true", route, registry, "pagination_stalled")
    assert len(seen) <= 6  # before: a page that ran out is asked again from above its last run first


async def test_a_next_link_or_token_equal_to_the_current_one_stalls(make_gateway: Any, aiohttp_server: Any) -> None:
    link = {"next": "ORIGIN/link?after=1"}
    gw, seen, registry = await _fake_gateway(make_gateway, aiohttp_server, link)
    await _stalled(gw, "/v1/link?all=true", "link_list", registry, "pagination_stalled")
    assert seen == ["/link", "/link?after=1"]  # the second answer's next link is itself
    # across requests: the cursor points at /link?after=1, whose next is itself
    first = await (await gw.get("/v1/link", params={"limit": "1"})).json()
    await _stalled(gw, f"/v1/link?limit=1&cursor={first['next_cursor']}", "link_list", registry, "pagination_stalled")
    await _stalled(gw, "/v1/token?all=true", "token_list", registry, "pagination_stalled")
    first = await (await gw.get("/v1/token", params={"limit": "1"})).json()
    await _stalled(gw, f"/v1/token?limit=1&cursor={first['next_cursor']}", "token_list", registry, "pagination_stalled")


@pytest.mark.parametrize(
    "next_link",
    ["OTHER/link?after=1", "https://127.0.0.1:PORT/link", "ORIGIN/elsewhere?after=1", "//evil.example/link"],
)
async def test_a_next_link_off_the_upstream_or_its_path_is_a_502(
    make_gateway: Any, aiohttp_server: Any, next_link: str
) -> None:
    """Another port on the same host is another origin: it never sees a request, let alone the token."""
    elsewhere: list[tuple[str, str | None]] = []

    async def record(request: web.Request) -> web.Response:
        elsewhere.append((str(request.rel_url), request.headers.get("Authorization")))
        return web.json_response({"data": [], "links": {}})

    other_app = web.Application()
    other_app.router.add_get("/{tail:.*}", record)
    other = await aiohttp_server(other_app)
    link = {"next": next_link.replace("OTHER", str(other.make_url("")).rstrip("/"))}
    gw, seen, registry = await _fake_gateway(make_gateway, aiohttp_server, link)
    link["next"] = link["next"].replace("PORT", str(gw.server.port))
    for url in ("/v1/link?all=true", "/v1/link?limit=5"):
        resp = await gw.get(url)
        body = await resp.json()
        assert resp.status == 502, body
        assert body["error"]["code"] == "pagination_bad_link" and body["error"]["route"] == "link_list"
        assert TOKEN not in json.dumps(body)
    assert registry.get_sample_value("gateway_route_up", {"route": "link_list"}) == 0
    assert all(s == "/link" for s in seen)  # nothing else was fetched with the credentials
    assert elsewhere == []


# ------------------------------------------------------------------ gateway check

BASE_YAML = """
upstreams:
  api: {base_url: "http://127.0.0.1:9"}
routes:
  things:
    stable: GET /v1/things
    upstream: api
    targets: ["GET /things"]
    pagination: %s
"""


@pytest.mark.parametrize(
    ("pagination", "expected"),
    [
        ("{style: cursor}", "routes.things.pagination.style: style 'cursor' needs 'token'"),
        ("{style: page, first_page: 2}", "routes.things.pagination.first_page: must be at most 1"),
        ("{style: page, token: x}", "routes.things.pagination.token: not a key of style 'page'"),
        ("{style: next_url, count: total}", "routes.things.pagination.count: not a key of style 'next_url'"),
        ("{style: cursor, token: 'meta..next'}", "routes.things.pagination.token: expected a dotted field path"),
        ("{style: page, page_param: p, size_param: p}", "routes.things.pagination.page_param: page_param and"),
        ("{style: pages}", "routes.things.pagination.style: expected 'before'"),
    ],
)
def test_gateway_check_names_the_line_and_key(pagination: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE_YAML % pagination, "routes.yaml", {})
    got = [str(p) for p in info.value.problems]
    assert any(p.startswith("routes.yaml:9: ") and expected in p for p in got), got


def test_every_style_parses_with_its_keys() -> None:
    cfg = parse_config(
        BASE_YAML
        % "{style: page, page_param: p, size_param: n, first_page: 0, total: meta.total, has_more: meta.more}",
        "routes.yaml",
        {},
    )
    pag = cfg.routes[0].pagination
    assert pag is not None and pag.style == "page" and pag.first_page == 0
    assert pag.total_path == ("meta", "total") and pag.has_more_path == ("meta", "more")


async def test_an_upstream_going_round_in_a_loop_is_stopped(make_gateway: Any, aiohttp_server: Any) -> None:
    gw, seen, registry = await _fake_gateway(make_gateway, aiohttp_server, {"next": "/link"})
    await _stalled(gw, "/v1/cycle?all=true", "cycle_list", registry, "pagination_stalled")
    assert seen == ["/cycle", "/cycle?after=1", "/cycle?after=2", "/cycle?after=1"]


async def test_a_relative_next_link_resolves_against_the_page_it_came_from(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    gw, seen, registry = await _fake_gateway(make_gateway, aiohttp_server, {"next": "?after=1"})
    # followed (not a bad link), and then recognised as pointing at itself
    await _stalled(gw, "/v1/link?all=true", "link_list", registry, "pagination_stalled")
    assert seen == ["/link", "/link?after=1"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('<https://a.example/x?page=2>; rel="next"', "https://a.example/x?page=2"),
        ('<https://a/x?p=1>; rel="prev", <https://a/x?p=3>; rel="next"', "https://a/x?p=3"),
        ('<https://a/x?p=3>; title="n"; rel=next', "https://a/x?p=3"),
        ('<https://a/x?p=3>; rel="prefetch next"', "https://a/x?p=3"),
        ('<https://a/x?p=1>; rel="prev"', None),
        ("", None),
    ],
)
def test_link_header_parsing(header: str, expected: str | None) -> None:
    from gateway.pagination.next_url import link_next

    assert link_next(header) == expected


HAS_MORE_YAML = """
upstreams:
  fake: {{base_url: "{url}", retries: {{attempts: 1}}}}
routes:
  flagged:
    stable: GET /v1/flagged
    upstream: fake
    pagination: {pagination}
    targets: ["GET /flagged"]
"""


@pytest.mark.parametrize(
    "pagination",
    [
        "{style: before, items: data, field: t, has_more: meta.more}",
        "{style: offset, items: data, has_more: meta.more}",
        "{style: page, items: data, page_size: 2, has_more: meta.more}",
        "{style: next_url, items: data, next: meta.next, has_more: meta.more}",
        "{style: cursor, items: data, token: meta.next, has_more: meta.more}",
    ],
)
async def test_has_more_false_ends_the_walk_in_every_style(
    make_gateway: Any, aiohttp_server: Any, pagination: str
) -> None:
    calls: list[str] = []

    async def flagged(request: web.Request) -> web.Response:
        calls.append(str(request.rel_url))
        # every other signal says "more": a full page, a next link, a token
        meta = {"more": False, "next": "/flagged?n=2"}
        return web.json_response({"data": [{"t": "2026-01-02"}, {"t": "2026-01-01"}], "next": "x", "meta": meta})

    app = web.Application()
    app.router.add_get("/flagged", flagged)
    upstream = await aiohttp_server(app)
    url = str(upstream.make_url("/")).rstrip("/")
    gw = await make_gateway(HAS_MORE_YAML.format(url=url, pagination=pagination), env={})
    resp = await gw.get("/v1/flagged", params={"all": "true"})
    body = await resp.json()
    assert resp.status == 200, body
    # (``before`` then asks the first page again: the list must not have moved under the walk)
    assert len(body["items"]) == 2 and len(calls) == (2 if "before" in pagination else 1)
    assert "before" not in pagination or calls == ["/flagged", "/flagged"]
    page = await (await gw.get("/v1/flagged", params={"limit": "2"})).json()
    assert page["next_cursor"] is None


async def test_an_upstream_capping_its_page_size_still_fills_the_stable_page(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Offset: asked for 5, the upstream gives at most 3; the gateway asks again to fill the page."""
    data = [{"id": i} for i in range(11)]

    async def capped(request: web.Request) -> web.Response:
        offset, limit = int(request.query["offset"]), min(int(request.query["limit"]), 3)
        more = offset + limit < len(data)
        return web.json_response({"count": len(data), "next": "n" if more else None, "results": data[offset:][:limit]})

    app = web.Application()
    app.router.add_get("/flagged", capped)
    upstream = await aiohttp_server(app)
    url = str(upstream.make_url("/")).rstrip("/")
    gw = await make_gateway(HAS_MORE_YAML.format(url=url, pagination="{style: offset}"), env={})
    assert await _walk(gw, "/v1/flagged", 5) == data
