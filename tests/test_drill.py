"""The upstream-change drill: eight changes real upstreams make, each first seen by a script as a 502
that names the route (never as wrong or missing data), then fixed by one routes.yaml edit and a reload.

The upstream is a small notes API written here, so each change is one switch: the list moves, a
query parameter is renamed, an item field is renamed, an envelope is added, paging switches to
cursors, the path prefix moves, the auth header changes, and the redirect form changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.server import GATEWAY
from tests.conftest import GatewayFactory

TOKEN = "drill-token-0123456789"

ROUTES = """\
upstreams:
  notes:
    base_url: ${NOTES_URL}
    retries: {attempts: 1}
    auth:
      headers: {X-Token: {env: NOTES_TOKEN}}
routes:
  notes:
    stable: GET /v1/notes
    upstream: notes
    params: {kind: {enum: [a, b]}}
    pagination: {style: offset, page_size: 10}
    targets: ["GET /api/notes?kind={kind}"]
    response:
      items: {id: id, title: title, updated_at: updated}
    shape: {content_type: application/json, fields: {id: string, updated: string}}
  note_version:
    stable: GET /v1/notes/{id}/version
    upstream: notes
    targets:
      - {request: "GET /d/{id}.js", redirect: report}
    response:
      item: {id: {param: id}, version: {location: '@(\\d+)\\.js$', type: int}}
"""


class Notes:
    """The upstream, with one switch per change it can make."""

    def __init__(self) -> None:
        self.changes: set[str] = set()
        self.notes = [
            {"id": f"n{i:02}", "title": f"Note {i}", "kind": "ab"[i % 2], "updated": f"2024-01-{25 - i:02}T00:00:00Z"}
            for i in range(25)
        ]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if "prefix" in self.changes:
            if not path.startswith("/v3/"):
                return web.json_response({"detail": "Not found."}, status=404)
            path = path[len("/v3") :]
        if not self._authorized(request):
            return web.json_response({"detail": "Authentication credentials were not provided."}, status=401)
        if path.startswith("/d/"):
            return self._module(path)
        listing = "/api/v2/notes" if "moved" in self.changes else "/api/notes"
        if path != listing:
            return web.json_response({"detail": "Not found."}, status=404)
        return self._list(request)

    def _authorized(self, request: web.Request) -> bool:
        if "auth_changed" in self.changes:
            return request.headers.get("Authorization") == f"Bearer {TOKEN}"
        return request.headers.get("X-Token") == TOKEN

    def _module(self, path: str) -> web.StreamResponse:
        nb = path[len("/d/") :].removesuffix(".js")
        where = f"/d/{nb}/v7.js" if "redirect_changed" in self.changes else f"/d/{nb}@7.js"
        raise web.HTTPFound(where)

    def _list(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        filter_param = "type" if "param_renamed" in self.changes else "kind"
        other = "kind" if filter_param == "type" else "type"
        if other in q:
            return web.json_response({"detail": f"Unknown query parameter {other!r}."}, status=400)
        rows = [n for n in self.notes if filter_param not in q or n["kind"] == q[filter_param]]
        if "field_renamed" in self.changes:
            rows = [{("updated_at" if k == "updated" else k): v for k, v in n.items()} for n in rows]
        limit = int(q.get("limit", "10"))
        if "cursor" in self.changes:  # offset is ignored now: a cursor pages
            start = int(q.get("cursor", "0"))
            page = rows[start : start + limit]
            more = start + limit < len(rows)
            body: Any = {"results": page, "meta": {"next_cursor": str(start + limit) if more else None}}
        else:
            start = int(q.get("offset", "0"))
            page = rows[start : start + limit]
            nxt = f"{request.url.with_query({'limit': limit, 'offset': start + limit})}"
            body = {"count": len(rows), "next": nxt if start + limit < len(rows) else None, "results": page}
        if "envelope" in self.changes:
            body = {"data": body}
        return web.json_response(body)


#: change → (how the gateway says it broke, the routes.yaml edit that fixes it)
DRILL: dict[str, tuple[str, Callable[[str], str]]] = {
    "moved": (
        "upstream_route_gone",
        lambda y: y.replace("GET /api/notes?kind={kind}", "GET /api/v2/notes?kind={kind}"),
    ),
    "param_renamed": (
        "upstream_rejected",
        lambda y: y.replace("GET /api/notes?kind={kind}", "GET /api/notes?type={kind}"),
    ),
    "field_renamed": (
        "shape_drift",
        lambda y: y.replace("updated_at: updated}", "updated_at: updated_at}").replace(
            "updated: string}", "updated_at: string}"
        ),
    ),
    "envelope": (
        "shape_drift",
        lambda y: y.replace(
            "{style: offset, page_size: 10}", "{style: offset, page_size: 10, items: data.results, next: data.next}"
        ),
    ),
    "cursor": (
        "shape_drift",
        lambda y: y.replace(
            "{style: offset, page_size: 10}",
            "{style: cursor, token: meta.next_cursor, token_param: cursor, size_param: limit, page_size: 10}",
        ),
    ),
    "prefix": (
        "upstream_route_gone",
        lambda y: y.replace("GET /api/notes?", "GET /v3/api/notes?").replace("GET /d/", "GET /v3/d/"),
    ),
    "auth_changed": (
        "upstream_auth_rejected",
        lambda y: y.replace("headers: {X-Token: {env: NOTES_TOKEN}}", "bearer: {env: NOTES_TOKEN}"),
    ),
    "redirect_changed": (
        "shape_drift",
        lambda y: y.replace("'@(\\d+)\\.js$'", "'/v(\\d+)\\.js$'"),
    ),
}


async def _stable(gw: TestClient[Any, Any], change: str) -> tuple[int, Any]:
    if change == "redirect_changed":
        resp = await gw.get("/v1/notes/n01/version")
    else:
        resp = await gw.get("/v1/notes", params={"all": "true", "kind": "a"})
    return resp.status, await resp.json()


@pytest.mark.parametrize("change", list(DRILL))
async def test_each_upstream_change_is_a_502_naming_the_route_then_one_edit_fixes_it(
    change: str, aiohttp_server: Any, make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    notes = Notes()
    server = await aiohttp_server(notes.app())
    env = {"NOTES_URL": str(server.make_url("")).rstrip("/"), "NOTES_TOKEN": TOKEN, "ROUTEGATE_CACHE": "off"}
    registry = CollectorRegistry()
    gw = await make_gateway(ROUTES, env=env, registry=registry)
    before = await _stable(gw, change)
    assert before[0] == 200, before

    notes.changes.add(change)
    status, body = await _stable(gw, change)
    code, fix = DRILL[change]
    route = "note_version" if change == "redirect_changed" else "notes"
    assert status == 502, f"{change}: a breakage passed as {status} {body}"
    assert body["error"]["code"] == code and body["error"]["route"] == route, body
    assert registry.get_sample_value("gateway_route_up", {"route": route}) == 0

    gateway = gw.app[GATEWAY]
    path = Path(gateway.runtime.config.path)
    edited = fix(path.read_text())
    assert edited != path.read_text(), f"{change}: the fix changed nothing"
    path.write_text(edited)
    gateway.reload()
    after = await _stable(gw, change)
    assert after == before, f"{change}: after the edit the script sees {after}"
    assert registry.get_sample_value("gateway_route_up", {"route": route}) == 1
