"""The ``account`` stage: every upstream failure of a request counted once, and the route marked down.

It is the outermost stage an upstream failure passes exactly once: inside the cache, whose
one coalesced fill may fail for many waiting requests and whose stale copy may stand in for
a failure no caller then sees.  A failure that cut an answer already under way (a relayed
raw body, an NDJSON stream) leaves no exception; it is noted on the request's record
(``RequestTrace.cut``) and counted here all the same.  Probes are counted by the same
``Core.failed`` (gateway.proxy.Proxy.probe).
"""

from __future__ import annotations

from aiohttp import web

from gateway.config import Route
from gateway.errors import UpstreamError
from gateway.pipeline import Exchange, Handler, Stage
from gateway.pipeline.core import Core


def account(proxy: Core) -> Stage:
    """Counts ``upstream_errors`` and marks the route down (unless the gateway paced itself): every route."""

    def stage(route: Route, inner: Handler) -> Handler:
        async def accounted(ex: Exchange) -> web.StreamResponse:
            try:
                resp = await inner(ex)
            except UpstreamError as exc:
                proxy.failed(route, exc)
                raise
            cut = ex.trace.cut
            if cut is not None:
                ex.trace.cut = None
                proxy.failed(route, cut)
            return resp

        return accounted

    return stage
