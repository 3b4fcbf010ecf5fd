"""The outermost stages: client auth (``clients.keys``) and admission (rate limits, ``max_concurrency``).

Both answer before anything else runs (401/403/429), so a refused request is never
forwarded.  Each exists only where it applies: a route on an open gateway without limits
runs neither.  The identified client is written on the Exchange (cache isolation) and on
the request's record (the access line's ``client``, also for a refused request).
"""

from __future__ import annotations

from aiohttp import web

from gateway.access import Access
from gateway.config import Route
from gateway.limits import Limits
from gateway.pipeline import Exchange, Handler, Stage, http


def client_auth(access: Access) -> Stage:
    """401 without a valid client key, 403 outside the key's grants; only where keys are configured."""

    def stage(route: Route, inner: Handler) -> Handler | None:
        if access.open:
            return None

        async def authenticated(ex: Exchange) -> web.StreamResponse:
            request = http(ex)
            key = access.identify(request)
            if key is not None:
                ex.client = ex.trace.client = key.name  # logged even when refused below
            access.authorize(key, route, request.method)
            return await inner(ex)

        return authenticated

    return stage


def limits(admission: Limits) -> Stage:
    """429 over the client's rate limit or ``server.max_concurrency``; only where either is configured."""

    def stage(route: Route, inner: Handler) -> Handler | None:
        if not admission.configured:
            return None

        async def admitted(ex: Exchange) -> web.StreamResponse:
            await admission.admit(ex.client or "", route.name)
            try:
                return await inner(ex)
            finally:
                admission.leave()

        return admitted

    return stage
