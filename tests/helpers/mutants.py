"""The scriptable origin and routes.yaml the mutant tests share (``tests/test_mutants_*.py``).

A real aiohttp server on 127.0.0.1 that records the raw paths and queries it was sent, and a
gateway in front of it with a hand-moved cache clock.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from gateway.server import GATEWAY
from tests.helpers.cache import Clock

#: the origin's collection: ids 0..7, and it never answers more than CAP items a page
TOTAL = 8
CAP = 3
#: two fan-out streams of the ``before`` style: (stream, update value), newest first
STREAMS = {"a": [10, 8, 6], "b": [9, 7]}
ADMIN_KEY = "ak_" + "m" * 30

ORIGIN = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
  based:
    base_url: ${ORIGIN_URL}/base/
    retries: {attempts: 1}
routes:
  paged:
    stable: GET /v1/paged
    upstream: origin
    auth: none
    pagination: {style: page, page_size: 3, total: total, items: results}
    targets: ["GET /pages"]
    response: {items: {id: id}}
  linked:
    stable: GET /v1/linked/{variant}
    upstream: based
    auth: none
    pagination: {style: next_url, items: results, size_param: size, page_size: 2}
    targets: ["GET /linked/{variant}"]
    response: {items: {id: id}}
  tokened:
    stable: GET /v1/tokened
    upstream: origin
    auth: none
    pagination: {style: cursor, token: next, items: results}
    targets: ["GET /tokens"]
    response: {items: {id: id}}
  counted:
    stable: GET /v1/counted
    upstream: origin
    auth: none
    pagination: {style: offset, items: results, page_size: 3}
    targets: ["GET /offset/counted"]
    response: {items: {id: id}}
  uncounted:
    stable: GET /v1/uncounted
    upstream: origin
    auth: none
    pagination: {style: offset, items: results, page_size: 3}
    targets: ["GET /offset/uncounted"]
    response: {items: {id: id}}
  capped_exact:
    stable: GET /v1/capped-exact
    upstream: origin
    auth: none
    pagination: {style: offset, items: results, page_size: 3, max_items: 8}
    targets: ["GET /offset/counted"]
    response: {items: {id: id}}
  capped_below:
    stable: GET /v1/capped-below
    upstream: origin
    auth: none
    pagination: {style: offset, items: results, page_size: 3, max_items: 7}
    targets: ["GET /offset/counted"]
    response: {items: {id: id}}
  fresh_pages:
    stable: GET /v1/fresh-pages
    upstream: origin
    auth: none
    pagination: {style: offset, items: results, page_size: 3}
    targets: ["GET /offset/fresh"]
    response: {items: {id: id}}
    cache: {ttl: 60s}
  merged:
    stable: GET /v1/merged
    upstream: origin
    auth: none
    params:
      type: {enum: [a, b], default: a, fan_out: true}
    pagination: {style: before, param: before, field: t, items: items, has_more: more}
    targets: ["GET /streams?type={type}"]
    response: {items: {t: t, type: kind}}
  echo:
    stable: GET /v1/echo/{name}
    upstream: origin
    auth: none
    params:
      first: {}
      second: {}
      flag: {type: boolean}
      n: {type: integer}
      color: {enum: [red, blue]}
    targets: ["GET /echo/{name}?first={first}&second={second}&flag={flag}&n={n}&color={color}"]
  shape:
    stable: GET /v1/shape/{name}
    upstream: origin
    auth: none
    targets: ["GET /shape/@{name}/"]
    response:
      item:
        n: {field: meta.count, type: int}
        f: {field: meta.ratio, type: float}
        b: {field: meta.flag, type: bool}
        s: {field: meta.count, type: str}
        gone: {field: meta.nothing, optional: true}
        name: {param: name}
        kind: {const: fixed}
  doc:
    stable: GET /v1/doc/{name}
    upstream: origin
    auth: none
    targets: ["GET /doc/{name}"]
    response: {item: {name: name}}
    cache: {ttl: 60s}
  touch:
    stable: POST /v1/touch
    upstream: origin
    auth: none
    targets: ["POST /touch"]
    response: {status: 204}
    cache: {invalidates: [doc]}
admin:
  keys:
    ops: {key: {env: ADMIN_KEY}}
"""


class Origin:
    """What the scriptable origin saw: raw paths and queries (still percent-encoded), fetch counts."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        #: per document name: the Cache-Control header lines the origin answers with
        self.cache_control: dict[str, list[str]] = {}
        #: per document name: other response headers (Expires, Date)
        self.headers: dict[str, dict[str, str]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/offset/{variant}", self.offset)
        app.router.add_get("/streams", self.streams)
        app.router.add_get("/doc/{name}", self.doc)
        app.router.add_post("/touch", self.touch)
        app.router.add_get("/shape/{name}/", self.shape)
        app.router.add_get("/pages", self.pages)
        app.router.add_get("/base/linked/{variant}", self.linked)
        app.router.add_get("/tokens", self.tokens)
        app.router.add_route("GET", "/{tail:.*}", self.echo)
        return app

    def _saw(self, request: web.Request) -> None:
        path, _, query = request.raw_path.partition("?")
        self.seen.append((path, query))

    async def offset(self, request: web.Request) -> web.Response:
        """limit/offset over ids 0..7, at most CAP a page; ``counted`` and ``fresh`` tell the count."""
        self._saw(request)
        variant = request.match_info["variant"]
        offset = int(request.query.get("offset", "0"))
        limit = min(int(request.query.get("limit", "3")), CAP)
        ids = list(range(TOTAL))[offset : offset + limit]
        body: dict[str, Any] = {
            "results": [{"id": i} for i in ids],
            "next": "more" if offset + len(ids) < TOTAL else None,
        }
        if variant != "uncounted":
            body["count"] = TOTAL
        headers = {}
        if variant == "fresh":  # the first page may be kept 10 minutes, every later page 5 seconds
            headers["Cache-Control"] = "max-age=600" if offset == 0 else "max-age=5"
        return web.json_response(body, headers=headers)

    async def streams(self, request: web.Request) -> web.Response:
        """Two pages of at most 2 items per stream, older than ``before``; ``more`` says if any remain."""
        self._saw(request)
        kind = request.query["type"]
        before = int(request.query.get("before", "1000"))
        older = [t for t in STREAMS[kind] if t < before]
        page = older[:2]
        return web.json_response({"items": [{"t": t, "kind": kind} for t in page], "more": len(older) > 2})

    async def doc(self, request: web.Request) -> web.Response:
        self._saw(request)
        name = request.match_info["name"]
        headers = CIMultiDict(("Cache-Control", line) for line in self.cache_control.get(name, []))
        headers.update(self.headers.get(name, {}))
        fetches = sum(1 for p, _ in self.seen if p == request.raw_path)
        return web.json_response({"name": name, "fetch": fetches}, headers=headers)

    async def pages(self, request: web.Request) -> web.Response:
        """Page numbers from 1 over 6 items, with the total: two full pages and nothing after."""
        self._saw(request)
        page, size = int(request.query["page"]), int(request.query["limit"])
        ids = list(range(6))[(page - 1) * size : page * size]
        return web.json_response({"results": [{"id": i} for i in ids], "total": 6})

    async def linked(self, request: web.Request) -> web.Response:
        """3 pages of 2 items; the next page in a Link header line of its own (after a rel=prev one).

        ``ok`` links below the base path on this origin; ``offpath`` outside the base path;
        ``offorigin`` to another host.
        """
        self._saw(request)
        variant = request.match_info["variant"]
        page = int(request.query.get("page", "1"))
        here = request.url.origin()
        nxt = {
            "ok": f"{here}/base/linked/ok?page={page + 1}",
            "offpath": f"{here}/elsewhere/linked/offpath?page={page + 1}",
            "offorigin": f"http://localhost:{request.url.port}/base/linked/offorigin?page={page + 1}",
        }[variant]
        headers = CIMultiDict([("Link", f'<{here}/base/linked/{variant}?page=1>; rel="prev"')])
        if page < 3:
            headers.add("Link", f'<{nxt}>; rel="next"')
        body = {"results": [{"id": 2 * (page - 1) + i} for i in range(2)]}
        return web.json_response(body, headers=headers)

    async def tokens(self, request: web.Request) -> web.Response:
        """Two pages: the second's next token is the empty string (the end)."""
        self._saw(request)
        first = "cursor" not in request.query
        return web.json_response({"results": [{"id": 0 if first else 1}], "next": "t1" if first else ""})

    async def shape(self, request: web.Request) -> web.Response:
        self._saw(request)
        if request.match_info["name"] == "@list":
            return web.json_response([{"meta": {}}])
        meta = {
            "@ok": {"count": "7", "ratio": "0.5", "flag": 1, "extra": "never shown"},
            "@zero": {"count": 0, "ratio": 2, "flag": 0},
            "@word": {"count": "seven", "ratio": 1, "flag": 1},
            "@lost": {"ratio": 1, "flag": 1},
        }[request.match_info["name"]]
        return web.json_response({"meta": meta})

    async def touch(self, request: web.Request) -> web.Response:
        self._saw(request)
        return web.Response(status=204)

    async def echo(self, request: web.Request) -> web.Response:
        self._saw(request)
        return web.json_response({"path": request.raw_path})

    def fetches(self, path: str) -> int:
        return sum(1 for p, _ in self.seen if p == path)


async def gateway(make_gateway: Any, aiohttp_server: Any) -> tuple[TestClient[Any, Any], Origin, Clock]:
    origin = Origin()
    server: TestServer = await aiohttp_server(origin.app())
    gw = await make_gateway(ORIGIN, env={"ORIGIN_URL": str(server.make_url("")), "ADMIN_KEY": ADMIN_KEY})
    clock = Clock()
    gw.server.app[GATEWAY].caches.clock = clock
    return gw, origin, clock
