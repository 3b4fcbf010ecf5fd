"""A DRF-like origin whose list and feed change during walks (the shifts tests), and its routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

ROUTES = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
    concurrency: 3
routes:
  listed:
    stable: GET /v1/listed
    upstream: origin
    auth: none
    pagination: {style: offset, page_size: 5}
    targets: ["GET /list"]
  listed_cached:
    stable: GET /v1/listed-cached
    upstream: origin
    auth: none
    pagination: {style: offset, page_size: 5}
    targets: ["GET /list"]
    cache: {ttl: 30s, stale_if_error: 1h}
  listed_raw:
    stable: GET /v1/listed-raw
    upstream: origin
    auth: none
    pagination: {style: offset, page_size: 5}
    targets: ["GET /raw"]
  feed:
    stable: GET /v1/feed
    upstream: origin
    auth: none
    pagination: {style: page, page_param: page, size_param: limit, first_page: 1, page_size: 3, total: total}
    targets: ["GET /feed"]
"""


class Origin:
    """A DRF-like list ordered newest-modified first (``/list``, by ``limit``/``offset``) and an
    activity feed newest first (``/feed``, by ``page``/``limit``), changed by ``mutate`` and, during
    a walk, by ``before_answer`` (called before each list or feed request is answered)."""

    def __init__(self, size: int, feed: int = 0) -> None:
        self.clock = 0
        self.items: list[dict[str, Any]] = [self._new(f"n{i:03d}") for i in range(size)]
        self.events: list[dict[str, Any]] = [self._event() for _ in range(feed)]
        self.asked: list[tuple[str, int, int]] = []
        #: the largest page the list answers, or (``ignore``) a page size it answers whatever is asked
        self.cap: int | None = None
        self.ignore_limit: int | None = None
        self.before_answer: Callable[[int], None] | None = None
        self.raw: dict[str, Any] = {}

    def _new(self, ident: str) -> dict[str, Any]:
        self.clock += 1
        return {"id": ident, "title": ident, "modified": self.clock}

    def _event(self) -> dict[str, Any]:
        self.clock += 1
        return {"activity": "updated", "created_at": self.clock}  # no id: recognised by its whole content

    def ordered(self) -> list[dict[str, Any]]:
        return sorted(self.items, key=lambda it: it["modified"], reverse=True)

    def ids(self) -> list[str]:
        return [it["id"] for it in self.ordered()]

    def edit(self, ident: str) -> None:
        """PATCH: the item's last-modified time moves it to the top."""
        self.clock += 1
        next(it for it in self.items if it["id"] == ident)["modified"] = self.clock

    def delete(self, ident: str) -> None:
        self.items = [it for it in self.items if it["id"] != ident]

    def insert(self, ident: str) -> None:
        self.items.append(self._new(ident))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/list", self.page)
        app.router.add_get("/feed", self.feed)
        app.router.add_get("/raw", self.raw_page)
        return app

    async def page(self, request: web.Request) -> web.Response:
        offset, limit = int(request.query["offset"]), int(request.query["limit"])
        self.asked.append(("list", offset, limit))
        if self.before_answer is not None:
            self.before_answer(len(self.asked))
        if self.cap is not None:
            limit = min(limit, self.cap)
        if self.ignore_limit is not None:
            limit = self.ignore_limit
        rows = self.ordered()
        results = rows[offset : offset + limit]
        more = offset + len(results) < len(rows)
        return web.json_response(
            {"count": len(rows), "next": "http://o/list?more" if more else None, "previous": None, "results": results}
        )

    async def feed(self, request: web.Request) -> web.Response:
        page, limit = int(request.query["page"]), int(request.query["limit"])
        self.asked.append(("feed", page, limit))
        if self.before_answer is not None:
            self.before_answer(len(self.asked))
        rows = list(reversed(self.events))
        results = rows[(page - 1) * limit : page * limit]
        more = page * limit < len(rows)
        return web.json_response({"results": results, "next": "more" if more else None, "total": len(rows)})

    async def raw_page(self, request: web.Request) -> web.Response:
        return web.json_response(self.raw)
