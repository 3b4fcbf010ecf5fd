"""The catch-all for stable routes: match against the current runtime, check access and limits, proxy.

aiohttp's router is frozen once the app starts, but routes.yaml is hot-reloaded, so stable
routes are matched by ``gateway.routing`` against whatever ``Runtime`` is current.
"""

from __future__ import annotations

from aiohttp import web

from gateway.access import ANONYMOUS, CLIENT
from gateway.cache.downstream import NO_STORE, mark_private
from gateway.server.state import GATEWAY, REQUEST_ID, ROUTE


async def dispatch(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    runtime = gw.runtime  # pinned for the whole request
    match = runtime.router.match(request.method, request.raw_path)
    request[ROUTE] = match.route.name
    if match.route.no_store:
        request[NO_STORE] = True
    key = runtime.access.identify(request)  # 401 without a valid key
    request[CLIENT] = key.name if key is not None else ANONYMOUS  # logged even when refused below
    runtime.access.authorize(key, match.route, request.method)  # 403 outside the key's grants
    limits = gw.limits
    await limits.admit(request[CLIENT], match.route.name)  # 429 before anything is forwarded
    try:
        return await runtime.proxy.handle(request, match, request[REQUEST_ID], request[CLIENT])
    finally:
        limits.leave()


async def downstream_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """Stable routes' answers (streams too, errors too) are never for a shared cache in front."""
    if request.get(ROUTE) is not None:
        mark_private(request, resp, keyed=not request.app[GATEWAY].runtime.access.open)
