"""The catch-all for stable routes: match against the current runtime, then run the route's pipeline.

aiohttp's router is frozen once the app starts, but routes.yaml is hot-reloaded, so stable
routes are matched by ``gateway.routing`` against whatever ``Runtime`` is current.  Client
auth and limits are the outermost stages of the route's pipeline (gateway.pipeline.admission).

The catch-all is a resource of its own (``StableResource``): it matches every path without
a regular expression, and its match info (``gateway.trace.StableMatch``) carries the
request's ``RequestTrace``, so no request key holds it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import AbstractResource, AbstractRoute, ResourceRoute, UrlMappingMatchInfo, _InfoDict
from yarl import URL

from gateway.server.state import Gateway
from gateway.trace import RequestTrace, StableMatch

#: the methods the catch-all allows (aiohttp reads it only when nothing matched, which never happens)
_EVERY_METHOD = {"*"}
#: the stable routes' dispatcher: the request, its id and its record for the access line
Dispatch = Callable[[web.Request, str, RequestTrace], Awaitable[web.StreamResponse]]


def dispatcher(gateway: Gateway) -> Dispatch:
    """The route's pipeline for a request, the runtime taken once (a reload never changes it mid-request)."""

    def dispatch(request: web.Request, rid: str, record: RequestTrace) -> Awaitable[web.StreamResponse]:
        # a plain function handing back the pipeline's coroutine: one coroutine fewer per request
        # (a failed match raises here, inside the framing's ``await dispatch(...)`` all the same)
        runtime = gateway.runtime  # pinned for the whole request
        match = runtime.router.match(request.method, request.raw_path)
        route = match.route
        record.route = route.name
        record.no_store = route.no_store
        record.keyed = not runtime.access.open
        return runtime.proxy.handle(request, match, rid, record)

    return dispatch


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
        return StableMatch(self._route), _EVERY_METHOD

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
