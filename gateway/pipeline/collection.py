"""The ``collection`` stage: a paginated route's page, ``all=true`` or NDJSON stream, in the stable shape.

Limits, ``all`` and the cursor are checked before any upstream call (400 otherwise); the
upstream's pages are fetched (gateway.pagination), each item checked against ``shape`` and
mapped, and an empty signed-in answer confirmed by the session check before it is served.
Every answer names ``Accept`` in ``Vary``: JSON and NDJSON share the URL.  A HEAD of
``all=true`` never walks: the first page decides its status, as it does a stream's.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from gateway import jsonio, ndjson
from gateway.cache import CacheUnavailable, Notes, ResponseCache, forbid_store
from gateway.config import Route, Upstream
from gateway.downstream import vary
from gateway.errors import BadGateway, BadRequest, CollectionChanged
from gateway.fallback import HandOver
from gateway.mapping import apply_mapping
from gateway.pagination import Answer, Position, Tagged, decode_cursor, encode_cursor, pages, shifts
from gateway.pipeline.calls import Call, link_below
from gateway.pipeline.conventions import all_flag
from gateway.pipeline.core import Core
from gateway.session import unless_signed_out as _held_unless_signed_out
from gateway.shape import check_fields
from gateway.trace import RequestTrace

JSON_TYPE = "application/json"
#: the longest ``limit`` read (ten ASCII digits): more is no number a route allows
_LIMIT_DIGITS = 10


async def serve(
    proxy: Core,
    request: web.Request | None,
    route: Route,
    params: dict[str, Any],
    request_id: str,
    as_ndjson: bool = False,
    notes: Notes | None = None,
    *,
    query: MultiMapping[str] | None = None,
    trace: RequestTrace | None = None,
    shared: bool = False,
) -> web.StreamResponse:
    """A collection page (or ``all=true``), JSON or NDJSON; ``query`` stands in for the request's
    (a probe has no request, and never streams); ``trace``: the request's record (upstream calls);
    ``shared``: a cache fill other requests may wait on (its walk goes on when this caller leaves)."""
    pag = route.pagination
    assert pag is not None
    if query is None:
        assert request is not None
        query = request.query
    # all=true wins over limit, which is still checked (generated clients send its declared default)
    limit = _limit(query.get("limit"), pag.default_limit, pag.max_limit, route.name)
    everything = all_flag(query.get("all"), route.name)
    fan = next((p for p in route.params if p.fan_out), None)
    streams: list[str | None] = list(params[fan.name]) if fan else [None]
    position = Position()
    cursor = query.get("cursor")
    if cursor:
        cursor_streams, position = decode_cursor(route, cursor, proxy.cursor_secret, params)
        # decode_cursor checked the streams against the route; a fan-out may still disagree
        if fan is not None and fan.name in query and set(cursor_streams) != set(streams):
            raise BadRequest(
                f"the cursor was issued for {fan.name}={','.join(cursor_streams)}; "
                f"repeat that {fan.name} or leave it out",
                code="bad_cursor",
                route=route.name,
            )
        if fan is not None:
            streams = list(cursor_streams)
        if (route.paging(position.target) or pag).style == "next_url":
            _check_link_cursor(route, params, position)

    # the route's cached pages, dropped where a walk finds the list moved (none: nothing to drop)
    cached = proxy.cache if proxy.cache is not None and proxy.cache.caches(route) else None

    def walk(at: Position) -> AsyncGenerator[list[Any], None]:
        size = None if everything else limit
        mapped = stable_pages(proxy, route, params, streams, at, size, request_id, notes, trace)
        return _forgetting(cached, route.name, unless_signed_out(proxy, route, mapped, notes))

    if everything and request is not None and request.method == "HEAD":
        return await _head_of_all(walk(position), as_ndjson, request_id, notes)
    if as_ndjson and everything:
        assert request is not None
        done = functools.partial(proxy.health.up, route.name)
        pages = _while_there(walk(position), request)  # a stream is never a cache fill: its caller's alone
        return await ndjson.stream(request, pages, route.name, request_id, done, trace, proxy.scrub)

    def watched_walk(at: Position) -> AsyncGenerator[list[Any], None]:
        # a walk for this caller alone (no cache, or a fill for it alone: no-store, no-cache) stops once the
        # caller has gone (the framing logs a 499); a shared fill's goes on: other requests may wait on it
        return walk(at) if shared or request is None else _while_there(walk(at), request)

    # all=true starts again where the list moves under it (gateway.pagination.shifts); a page cannot
    restarts = shifts.MAX_RESTARTS if everything and not cursor else 0
    restarted = proxy.metrics.collection_restarts.labels(route.name).inc if restarts else None
    items = await shifts.collect(watched_walk, position, restarts, restarted)
    next_cursor = None if everything else encode_cursor(route, streams, position, proxy.cursor_secret, params)
    proxy.health.up(route.name)
    resp = ndjson.page(items, next_cursor) if as_ndjson else _json_page(items, next_cursor)
    vary(resp, "Accept")
    return resp


async def _while_there(pages: AsyncGenerator[list[Any], None], request: web.Request) -> AsyncGenerator[list[Any], None]:
    """``pages`` until the client has gone: no next upstream page is fetched for nobody."""
    async with contextlib.aclosing(pages):
        async for page in pages:
            yield page
            if request.transport is None:
                raise ConnectionResetError("the client closed the connection")


async def _forgetting(
    cache: ResponseCache | None, route: str, pages: AsyncGenerator[list[Any], None]
) -> AsyncGenerator[list[Any], None]:
    """``pages``; where the walk finds the list moved (or a cursor it cannot check), the route's cached
    pages are dropped before the 409 goes out: a client starting again from the first page must get a
    fresh one, not a cached page whose cursor answers the same 409 until its TTL runs out."""
    async with contextlib.aclosing(pages):
        try:
            async for page in pages:
                yield page
        except (CollectionChanged, shifts.CursorOutdated):
            await _forget(cache, route)
            raise


async def _forget(cache: ResponseCache | None, route: str) -> None:
    """Drop the route's cached pages (an unreachable cache is left alone: the error answer matters more)."""
    if cache is not None:
        with contextlib.suppress(CacheUnavailable):
            await cache.purge(route, None)


async def _head_of_all(
    mapped: AsyncGenerator[list[Any], None], as_ndjson: bool, request_id: str, notes: Notes | None
) -> web.StreamResponse:
    """HEAD of ``all=true``: the status and head a GET would get once its first page is in (what
    decides a stream's status too), without the body; the walk stops there (the upstream budget is
    not spent on a body nobody reads).  No ETag, Content-Length or Content-Encoding: they would need
    the whole walk."""
    forbid_store(notes)  # (the cache stage lets a HEAD of all=true by; this holds if it did not)
    try:
        await anext(mapped, None)  # a failure here is the GET's error answer, without its body
    finally:
        await mapped.aclose()
    ctype = ndjson.NDJSON_TYPE if as_ndjson else f"{JSON_TYPE}; charset=utf-8"
    resp = web.StreamResponse(headers={"Content-Type": ctype, "X-Request-ID": request_id})
    if as_ndjson:
        vary(resp, "Accept")
    else:  # a GET's JSON is compressed once it is large (gateway.pipeline.conventions): a HEAD cannot tell
        vary(resp, "Accept", "Accept-Encoding")
    return resp


async def stable_pages(
    proxy: Core,
    route: Route,
    params: dict[str, Any],
    streams: list[str | None],
    position: Position,
    limit: int | None,
    request_id: str,
    notes: Notes | None = None,
    trace: RequestTrace | None = None,
) -> AsyncGenerator[list[Any], None]:
    """A collection's items page by page: fetched, checked against ``shape``, mapped."""
    fan = next((p for p in route.params if p.fan_out), None)

    def params_of(stream: str | None) -> dict[str, Any]:
        return params if stream is None or fan is None else {**params, fan.name: stream}

    async def fetch_from(
        only: int | None, underway: bool, stream: str | None, extra: list[tuple[str, str]], at: str | None
    ) -> Answer:
        call = Call(
            params_of(stream), request_id, None, extra, at, notes=notes, only=only, underway=underway, trace=trace
        )
        resp = await proxy.calls[route.name].run(call)
        return Answer(proxy._json(route, resp), resp.headers, resp.url)

    upstream = proxy.config.upstreams[route.upstream]
    mapping = route.response.items
    if route.mixed_paging:
        source = _walk(route, streams, position, limit, fetch_from, upstream, proxy.cache)
    else:
        fetch = functools.partial(fetch_from, None, False)
        source = pages(route, streams, position, limit, fetch, upstream.concurrency, upstream.base_url)
    # drift in a page (pagination.py: lost list, stalled paging) or in an item counts alike (``account``);
    # closed with this generator: a walk given up (a client gone, a HEAD) stops its prefetches at once
    try:
        async for page in source:
            out: list[Any] = []
            for stream, item in page:
                if route.shape is not None:
                    check_fields(route.shape, item, route.name)
                out.append(
                    item if mapping is None else apply_mapping(mapping, item, params_of(stream), None, route.name)
                )
            yield out
    finally:
        close = getattr(source, "aclose", None)  # (typed an iterator; it is an async generator)
        if close is not None:
            await close()


async def _walk(
    route: Route,
    streams: list[str | None],
    position: Position,
    limit: int | None,
    fetch_from: Callable[[int | None, bool, str | None, list[tuple[str, str]], str | None], Awaitable[Answer]],
    upstream: Upstream,
    cache: ResponseCache | None,
) -> AsyncIterator[list[Tagged]]:
    """Targets that page differently are walked one at a time, each its own way: a fresh walk moves on
    to the next target where one hands over (``fallback_on``) on its first page; the cursor names the
    target, and a walk that target stops serving (any target, the last too, once the walk is under way
    on it) cannot resume on another: 502 ``pagination_switched``.  Then the route's cached pages go
    too: a cached first page would hand out that dead cursor again."""
    underway = bool(position.pos)  # resumed from a cursor

    async def fetch(stream: str | None, extra: list[tuple[str, str]], at: str | None) -> Answer:
        nonlocal underway
        answer = await fetch_from(position.target, underway, stream, extra, at)
        underway = True
        return answer

    for index in range(position.target, len(route.targets)):
        if index != position.target:
            position.restart(index)
        try:
            async for page in pages(route, streams, position, limit, fetch, upstream.concurrency, upstream.base_url):
                yield page
            return
        except HandOver:
            if not underway:
                continue  # nothing served from this target yet: the next one starts the walk afresh
        await _forget(cache, route.name)
        raise BadGateway(
            f"upstream {upstream.name!r} stopped serving {route.targets[index].text} in the middle of a walk,"
            " and the next target pages differently, so the walk cannot resume there; start it again"
            " without a cursor",
            kind="switched",
            code="pagination_switched",
            route=route.name,
        )
    raise AssertionError("the last target never hands over")


def unless_signed_out(
    proxy: Core, route: Route, pages: AsyncGenerator[list[Any], None], notes: Notes | None = None
) -> AsyncGenerator[list[Any], None]:
    """An empty signed-in collection may be a dead session answering 200 ``[]``: the upstream's
    ``auth.check`` decides (gateway.session) before the empty answer is served or cached.  So it does
    where a walk finds the list moved (a session dying mid-walk ends a stream early and empties its
    head): a dead session is a 502 ``upstream_auth_rejected`` there, never a 409 or a restart.  A
    quiet walk with items asks nothing more."""
    upstream = proxy.config.upstreams[route.upstream]
    sessions = proxy.sessions
    if sessions is None or not route.auth or upstream.auth is None or upstream.auth.check is None:
        return pages
    fetched_at = sessions.now()  # before the first page is asked for: only a later check vouches

    async def confirm() -> None:
        if not await sessions.confirm_empty(upstream, route.name, fetched_at):
            forbid_store(notes)  # the session is unknown: serve the empty answer, do not keep it

    async def moved() -> None:
        # the list moved, or went empty, mid-walk: only a check sent now vouches for the page that
        # showed it (the session may have died after any earlier check); a live or unknown session
        # leaves the 409 (or restart) as it was
        await sessions.confirm_empty(upstream, route.name, sessions.now())

    return _held_unless_signed_out(pages, confirm, moved)


def _check_link_cursor(route: Route, params: Mapping[str, Any], position: Position) -> None:
    """A ``next_url`` cursor's link must be below one of the route's own target paths: 400 before any call."""
    state = position.pos.get("")
    link = state.get("t") if isinstance(state, dict) else None
    if link is None:
        return
    targets = [route.targets[position.target]] if route.mixed_paging else route.targets
    if not any(link_below(str(link), t, params) for t in targets):
        raise BadRequest(
            "the cursor is not valid for this route; pass next_cursor exactly as it was returned",
            code="bad_cursor",
            route=route.name,
        )


def _limit(raw: str | None, default: int, maximum: int, route: str) -> int:
    """``limit`` in plain ASCII digits (no sign, space, ``_`` or other scripts' digits, which
    Python's ``int()`` would take), from 1 to the route's ``max_limit``."""
    if raw is None:
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= _LIMIT_DIGITS else 0
    if not 1 <= value <= maximum:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}, got {raw!r}", code="bad_limit", route=route)
    return value


def _json_page(items: list[Any], next_cursor: str | None) -> web.Response:
    """The stable collection page: ``{"items", "next_cursor"}`` (``gateway.ndjson.page`` for NDJSON)."""
    return web.Response(
        body=jsonio.dumps({"items": items, "next_cursor": next_cursor}), content_type=JSON_TYPE, charset="utf-8"
    )
