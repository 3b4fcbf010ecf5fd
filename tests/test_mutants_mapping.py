"""Request and response mapping: the survivors ``make mutants`` (group ``mapping``) found, each
killed here through real HTTP: what the client gets back, and what the origin (a real aiohttp
server on 127.0.0.1) was sent.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from tests.helpers.mutants import gateway as _gateway

MAPPING = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
routes:
  needy:
    stable: GET /v1/needy
    upstream: origin
    auth: none
    params:
      need: {required: true}
      tag: {}
    targets: ["GET /echo/v-{tag}/{tag}?need={need}&label=v{tag}"]
  keep:
    stable: GET /v1/keep/{name}
    upstream: origin
    auth: none
    targets: ["GET /doc/{name}"]
    response:
      item:
        title: name
        count: {field: meta.count, type: int}
        fixed: {const: 1}
        who: {param: name}
      keep_other_fields: true
  moved:
    stable: GET /v1/moved/{name}
    upstream: origin
    auth: none
    targets:
      - {request: "GET /moved/{name}", redirect: report}
    response:
      item: {version: {location: '@(\\d+)\\.js$', type: int}}
  located:
    stable: GET /v1/located
    upstream: origin
    auth: none
    pagination: {style: offset, items: results, page_size: 3}
    targets: ["GET /list"]
    response: {items: {id: id, where: {location: '(\\w+)', optional: true}}}
"""


class Origin:
    """Echoes what it was sent, serves small documents, and answers ``/moved/`` with a redirect."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/doc/{name}", self.doc)
        app.router.add_get("/moved/{name}", self.moved)
        app.router.add_get("/list", self.list)
        app.router.add_get("/echo/{tail:.*}", self.echo)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        self.seen.append((request.raw_path.partition("?")[0], dict(request.query)))
        return web.json_response({})

    async def doc(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        meta: Any = "a text, not an object" if name == "flat" else {"count": "3", "x": 1}
        return web.json_response({"name": name, "meta": meta, "other": True})

    async def list(self, request: web.Request) -> web.Response:
        return web.json_response({"results": [{"id": 1}, {"id": 2}], "next": None})

    async def moved(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        where = f"/files/{name}@7.js" if name == "ok" else f"/files/{name}.js"
        return web.Response(status=302, headers={"Location": where})


async def _mapping_gateway(make_gateway: Any, aiohttp_server: Any) -> tuple[TestClient[Any, Any], Origin]:
    origin = Origin()
    server: TestServer = await aiohttp_server(origin.app())
    gw = await make_gateway(MAPPING, env={"ORIGIN_URL": str(server.make_url(""))})
    return gw, origin


async def _error(resp: Any) -> dict[str, Any]:
    body = await resp.json()
    assert "error" in body, body
    error: dict[str, Any] = body["error"]
    return error


# --------------------------------------------------------------------------- query params


async def test_a_list_param_may_be_repeated(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors: a repeated list param (``type=a&type=b``, as generated clients send it) refused as
    given more than once, read as its first value only, or joined with something other than ``,``."""
    gw, _, _ = await _gateway(make_gateway, aiohttp_server)
    both = [(10, "a"), (9, "b"), (8, "a"), (7, "b"), (6, "a")]
    for query in ("type=a&type=b", "type=a,b", "type=b&type=a&type=a"):
        resp = await gw.get(f"/v1/merged?{query}&all=true")
        body = await resp.json()
        assert resp.status == 200, (query, body)
        assert [(it["t"], it["type"]) for it in body["items"]] == both, query
    resp = await gw.get("/v1/merged?type=a,,&all=true")  # empty values between commas are dropped
    assert [it["type"] for it in (await resp.json())["items"]] == ["a"] * 3


async def test_an_empty_list_param_is_a_400_naming_it(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: the empty-list problem raised without its text."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/merged?type=,")
    error = await _error(resp)
    assert resp.status == 400 and error["code"] == "bad_query" and error["route"] == "merged"
    assert error["details"] == ["query parameter 'type' is empty"]
    assert not origin.seen


async def test_unknown_params_come_first_and_two_are_plural(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors: the unknown-parameter problem no longer first among several; two unknown
    parameters named in the singular."""
    gw, origin, _ = await _gateway(make_gateway, aiohttp_server)
    takes = "this route takes: color, first, flag, n, second"
    resp = await gw.get("/v1/echo/x?first=1&first=2&zzz=1")
    assert resp.status == 400
    assert (await _error(resp))["details"] == [
        f"unknown query parameter 'zzz'; {takes}",
        "query parameter 'first' is given more than once",
    ]
    resp = await gw.get("/v1/echo/x?a=1&b=1")
    assert (await _error(resp))["details"] == [f"unknown query parameters 'a', 'b'; {takes}"]
    assert not origin.seen


async def test_a_missing_required_param_is_a_400_naming_it(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: the required-param problem recorded without its text (a 500)."""
    gw, origin = await _mapping_gateway(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/needy?tag=t")
    error = await _error(resp)
    assert resp.status == 400 and error["code"] == "bad_query", error
    assert error["details"] == ["query parameter 'need' is required"] and error["route"] == "needy"
    assert not origin.seen


# --------------------------------------------------------------------------- templates


async def test_a_query_param_in_a_path_segment_stays_one_encoded_segment(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Survivors in ``render``: a value put into a path segment, whole (``{tag}``) or in part
    (``v-{tag}``), must be percent-encoded (``/``, ``?``, ``&``, space), and a value put into the
    query must not be encoded twice."""
    gw, origin = await _mapping_gateway(make_gateway, aiohttp_server)
    value = "a/b?c d&e#f"
    resp = await gw.get(URL(f"/v1/needy?need=1&tag={quote(value, safe='')}", encoded=True))
    assert resp.status == 200, await resp.text()
    encoded = quote(value, safe="")
    assert origin.seen[-1] == (f"/echo/v-{encoded}/{encoded}", {"need": "1", "label": f"v{value}"})


async def test_an_absent_param_leaves_its_place_empty(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors: an absent param rendered as ``None`` or a placeholder inside a template
    (``v{tag}`` → ``vNone``), or its whole path segment filled with a placeholder."""
    gw, origin = await _mapping_gateway(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/needy?need=1")
    assert resp.status == 200, await resp.text()
    assert origin.seen[-1] == ("/echo/v-/", {"need": "1", "label": "v"})


# --------------------------------------------------------------------------- responses


async def test_keep_other_fields_passes_the_rest_and_drops_only_what_was_renamed(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    """Survivors in ``_renamed`` and ``apply_mapping``: only an upstream field taken whole under
    another name (``title: name``) leaves the passed-through rest; a nested one (``meta.count``),
    a const or a param takes nothing away."""
    gw, _ = await _mapping_gateway(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/keep/n1")
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {
        "meta": {"count": "3", "x": 1},
        "other": True,
        "title": "n1",
        "count": 3,
        "fixed": 1,
        "who": "n1",
    }


async def test_a_path_through_a_non_object_is_a_lost_field(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: ``meta.count`` looked up in a ``meta`` that is a string (a 500, not a 502)."""
    gw, _ = await _mapping_gateway(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/keep/flat")
    error = await _error(resp)
    assert resp.status == 502 and error["code"] == "shape_drift" and error["route"] == "keep", error
    assert error["message"] == "upstream response lost field 'meta.count' (stable field 'count')"


async def test_a_redirect_that_does_not_match_is_a_502_naming_it(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivors in ``evaluate``'s location branch: the drift raised without its message, with
    another code, or naming ``None`` rather than the redirect target."""
    gw, _ = await _mapping_gateway(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/moved/ok")
    assert resp.status == 200 and await resp.json() == {"version": 7}
    resp = await gw.get("/v1/moved/bad")
    error = await _error(resp)
    assert resp.status == 502 and error["code"] == "shape_drift" and error["route"] == "moved", error
    assert error["message"].startswith("upstream redirect target ") and "/files/bad.js" in error["message"]
    assert "does not match '@(\\\\d+)\\\\.js$'" in error["message"], error["message"]


async def test_a_list_item_has_no_redirect_location(make_gateway: Any, aiohttp_server: Any) -> None:
    """Survivor: a missing location searched as the text ``None`` (which ``(\\w+)`` matches), so an
    optional location field of a list item read ``"None"`` instead of null."""
    gw, _ = await _mapping_gateway(make_gateway, aiohttp_server)
    resp = await gw.get("/v1/located")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["items"] == [{"id": 1, "where": None}, {"id": 2, "where": None}]
