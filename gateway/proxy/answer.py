"""The core of a route answering from one upstream call: its call-level stack, then one answer step.

The step is chosen once, at load, by what the route's ``response:`` declares, and named in
``Pipeline.calls``: ``raw`` relays the upstream's answer (streamed as it arrives where the caller
may have it so), ``mapping`` rebuilds it from the declared fields, ``passthrough`` sends the JSON as
it came once it is known to be JSON of the declared shape (gateway.proxy.respond).  Only a complete,
well-shaped answer marks the route up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.config import Route
from gateway.pipeline import Exchange, Handler
from gateway.pipeline.calls import Call
from gateway.pipeline.core import Core
from gateway.proxy import respond
from gateway.trace import RequestTrace
from gateway.upstream import UpstreamResponse, release


def single(proxy: Core, route: Route) -> tuple[str, Handler]:
    """The answer step's name and the route's core: the call-level stack, then that step."""
    if route.response.raw:
        return "raw", _raw(proxy, route)
    run = proxy.calls[route.name].run

    async def rebuilt(ex: Exchange) -> web.StreamResponse:
        resp = await run(Call(ex.params, ex.request_id, ex.body, notes=ex.notes, trace=ex.trace))
        out = respond.rebuild(route, resp, ex.params)
        proxy.health.up(route.name)
        return out

    return ("mapping" if route.response.item is not None else "passthrough"), rebuilt


def _raw(proxy: Core, route: Route) -> Handler:
    """A raw answer: a GET's streamed to the caller as it arrives, unless a cache fill stores it whole."""
    run = proxy.calls[route.name].run

    async def relayed(ex: Exchange) -> web.StreamResponse:
        request = ex.request
        stream = ex.relay and request is not None and request.method == "GET"
        resp = await run(Call(ex.params, ex.request_id, ex.body, stream=stream, notes=ex.notes, trace=ex.trace))
        if resp.stream is None:
            out = respond.rebuild(route, resp, ex.params)
            proxy.health.up(route.name)
            return out
        assert request is not None
        return await _relay(proxy, request, route, resp, ex.params, ex.request_id, ex.trace)

    return relayed


async def _relay(
    proxy: Core,
    request: web.Request,
    route: Route,
    resp: UpstreamResponse,
    params: Mapping[str, Any],
    request_id: str,
    trace: RequestTrace,
) -> web.StreamResponse:
    """A raw answer written as it arrives; a failure after the head went out is noted on ``trace``
    (the access line says why the body was cut; the ``account`` stage counts it)."""
    assert resp.stream is not None
    try:
        out, failure = await respond.stream(
            request, route, proxy.config.upstreams[route.upstream], resp, params, request_id
        )
    finally:
        await release(resp.stream)
    if failure is None:
        proxy.health.up(route.name)
    else:
        trace.broke_off(failure)
    del failure
    return out
