"""The proxy's own stages: cache, account, params, body, write invalidation; then a collection's core.

Each factory returns None for a route it does not apply to, so ``gateway.pipeline.build``
leaves it out: a route without a cache never enters cache code, a GET never reads a body.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway import ndjson
from gateway.cache import Notes
from gateway.config import Route
from gateway.mapping import parse_params
from gateway.pipeline import Exchange, Handler, Stage, http
from gateway.pipeline.account import account
from gateway.pipeline.body import read_body
from gateway.pipeline.collection import serve
from gateway.pipeline.conventions import wants_all
from gateway.pipeline.core import Core

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _streamed(route: Route, request: web.Request) -> bool:
    """An NDJSON collection: streamed, so never cached (not holding the collection is the point)."""
    return route.pagination is not None and ndjson.wants_ndjson(request.headers.get("Accept", ""))


def _head_of_all(request: web.Request) -> bool:
    """A HEAD of ``all=true`` fetches one page for its status (gateway.pipeline.collection): no body to
    store, and a GET must never join (coalesce with) its fill and be handed that empty answer."""
    return request.method == "HEAD" and wants_all(request)


def cache(proxy: Core) -> Stage:
    """Reads of a caching route: HIT/MISS/STALE/BYPASS (gateway.cache); the fill stores the answer whole."""

    def stage(route: Route, inner: Handler) -> Handler | None:
        store = proxy.cache
        if store is None or route.method not in SAFE_METHODS or not store.caches(route):
            return None

        paginated = route.pagination is not None  # only a collection can be asked for as a stream

        def cached(ex: Exchange) -> Awaitable[web.StreamResponse]:
            # a plain function handing back the cache's coroutine (or the inner stage's): one coroutine fewer
            request = http(ex)
            if paginated and (_streamed(route, request) or _head_of_all(request)):
                return inner(ex)

            async def fill(notes: Notes, shared: bool) -> web.StreamResponse:
                ex.relay, ex.notes, ex.shared = False, notes, shared
                return await inner(ex)

            return store.serve(request, ex.match, ex.client, fill, ex.trace)

        return cached

    return stage


def invalidate(proxy: Core) -> Stage:
    """Writes, where a cache exists: whatever came back, cached reads of what was written are suspect."""

    def stage(route: Route, inner: Handler) -> Handler | None:
        store = proxy.cache
        if store is None or route.method in SAFE_METHODS:
            return None

        async def invalidating(ex: Exchange) -> web.StreamResponse:
            try:
                return await inner(ex)
            finally:
                await store.invalidate_write(route, ex.match.path_params)

        return invalidating

    return stage


def params(route: Route, inner: Handler) -> Handler:
    """Query and path parameters, parsed and checked before anything is sent (400 otherwise)."""

    def parsed(ex: Exchange) -> Awaitable[web.StreamResponse]:
        # a plain function handing back the next stage's coroutine (a 400 raises here, inside the caller's await)
        ex.params = parse_params(route, ex.query, ex.match.path_params)
        return inner(ex)

    return parsed


def body(proxy: Core) -> Stage:
    """The JSON body of a write, read within limits and validated before anything is sent."""

    def stage(route: Route, inner: Handler) -> Handler | None:
        if route.method not in BODY_METHODS:
            return None

        async def read(ex: Exchange) -> web.StreamResponse:
            ex.body = await read_body(proxy.config.server, http(ex), route, ex.params)
            return await inner(ex)

        return read

    return stage


def collection(proxy: Core, route: Route) -> Handler:
    """The innermost stage of a paginated route: its page, ``all=true`` or NDJSON stream (gateway.pipeline.collection);
    a route answering from one call has its core in gateway.proxy.answer."""

    async def collected(ex: Exchange) -> web.StreamResponse:
        as_ndjson = ex.request is not None and _streamed(route, ex.request)
        return await serve(
            proxy,
            ex.request,
            route,
            ex.params,
            ex.request_id,
            as_ndjson,
            ex.notes,
            query=ex.query,
            trace=ex.trace,
            shared=ex.shared,
        )

    return collected


def stages_of(proxy: Core) -> list[tuple[str, Stage]]:
    """The proxy's stages, outermost first (the conventions wrap these: gateway.proxy.STAGES)."""
    always: Callable[[Route, Handler], Handler | None] = params
    return [
        ("cache", cache(proxy)),
        # inside the cache: a coalesced fill's one failure is counted once, a stale stand-in's too
        ("account", account(proxy)),
        ("params", always),
        ("body", body(proxy)),
        # inside params and body: a write refused as bad input was never sent, so it drops nothing
        ("invalidate", invalidate(proxy)),
    ]
