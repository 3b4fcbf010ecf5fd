"""The catch-all for stable routes: match against the current runtime, then run the route's pipeline.

aiohttp's router is frozen once the app starts, but routes.yaml is hot-reloaded, so stable
routes are matched by ``gateway.routing`` against whatever ``Runtime`` is current.  Client
auth and limits are the outermost stages of the route's pipeline (gateway.pipeline.admission).
"""

from __future__ import annotations

from aiohttp import web

from gateway.cache.downstream import mark_private
from gateway.server.state import GATEWAY, REQUEST_ID, TRACE


async def dispatch(request: web.Request) -> web.StreamResponse:
    runtime = request.app[GATEWAY].runtime  # pinned for the whole request
    match = runtime.router.match(request.method, request.raw_path)
    record = request[TRACE]
    record.route = match.route.name
    record.no_store = match.route.no_store
    return await runtime.proxy.handle(request, match, request[REQUEST_ID], record)


async def downstream_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """Stable routes' answers (streams too, errors too) are never for a shared cache in front."""
    record = request.get(TRACE)
    if record is not None and record.route is not None:
        keyed = not request.app[GATEWAY].runtime.access.open
        mark_private(request, resp, keyed=keyed, no_store=record.no_store)
