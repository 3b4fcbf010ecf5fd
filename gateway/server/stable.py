"""The catch-all for stable routes: match against the current runtime, then run the route's pipeline.

aiohttp's router is frozen once the app starts, but routes.yaml is hot-reloaded, so stable
routes are matched by ``gateway.routing`` against whatever ``Runtime`` is current.  Client
auth and limits are the outermost stages of the route's pipeline (gateway.pipeline.admission).

The catch-all is a resource of its own (``StableResource``): it matches every path without
a regular expression, and its match info carries the request's ``RequestTrace`` from
resolve to the response's headers (``downstream_headers``), so no request key holds it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from aiohttp.abc import AbstractMatchInfo
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import AbstractResource, AbstractRoute, ResourceRoute, UrlMappingMatchInfo, _InfoDict
from yarl import URL

from gateway.cache.downstream import mark_private
from gateway.server.state import GATEWAY, Gateway
from gateway.trace import RequestTrace

#: the stable routes' dispatcher: the request, its id and its record for the access line
Dispatch = Callable[[web.Request, str, RequestTrace], Awaitable[web.StreamResponse]]


def dispatcher(gateway: Gateway) -> Dispatch:
    """The route's pipeline for a request, the runtime taken once (a reload never changes it mid-request)."""

    async def dispatch(request: web.Request, rid: str, record: RequestTrace) -> web.StreamResponse:
        runtime = gateway.runtime  # pinned for the whole request
        match = runtime.router.match(request.method, request.raw_path)
        record.route = match.route.name
        record.no_store = match.route.no_store
        return await runtime.proxy.handle(request, match, rid, record)

    return dispatch


class StableMatch(UrlMappingMatchInfo):
    """A catch-all match, with the request's record for its access line."""

    __slots__ = ("trace",)

    def __init__(self, route: AbstractRoute) -> None:
        super().__init__({}, route)
        self.trace = RequestTrace()


class StableResource(AbstractResource):
    """Every path, every method: the stable routes' dispatcher (own endpoints are matched before it)."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self._route = ResourceRoute("*", handler, self)

    @property
    def canonical(self) -> str:
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        return URL.build(path="/")

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        return StableMatch(self._route), {"*"}

    def add_prefix(self, prefix: str) -> None:
        raise NotImplementedError("the stable catch-all is not for a sub-application")

    def get_info(self) -> _InfoDict:
        return {"path": "/{tail:.*}"}

    def raw_match(self, path: str) -> bool:
        return True

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[AbstractRoute]:
        yield self._route


def trace_of(request: web.Request) -> RequestTrace:
    """The record the catch-all's match made for this request."""
    match: AbstractMatchInfo = request.match_info
    if isinstance(match, StableMatch):
        return match.trace
    return RequestTrace()


async def downstream_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """Stable routes' answers (streams too, errors too) are never for a shared cache in front."""
    match = request.match_info
    if type(match) is StableMatch:
        record = match.trace
        if record.route is not None:
            keyed = not request.app[GATEWAY].runtime.access.open
            mark_private(request, resp, keyed=keyed, no_store=record.no_store)
