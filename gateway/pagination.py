"""Every upstream paging style → one stable shape: ``limit``, opaque ``cursor``, ``all``.

Two upstream styles are understood:

* ``before``: the next page is asked with the last item's field (Observable's
  ``before=<update_time>``); only an empty page ends the list, page size unknown.
  Pages must be fetched one after another.  Several streams (one per ``type``) are
  merged newest-first and the cursor keeps one position per stream.
* ``offset``: ``limit``/``offset`` with a ``next`` link and a ``count`` (PostHog).
  Once the first page tells the count, the rest can be fetched concurrently.

The cursor is base64url JSON naming its route, so one route's cursor handed to
another, or a mangled one, is a clear 400 rather than a wrong page.  Items are
yielded page by page so a caller can stream them without holding the collection.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import jsonio
from gateway.config import Pagination, Route
from gateway.errors import BadRequest
from gateway.mapping import ShapeDrift

#: fetch(stream, extra upstream query) → parsed JSON body of that page
Fetch = Callable[[str | None, list[tuple[str, str]]], Awaitable[Any]]
#: a stable item before mapping, tagged with the stream it came from
Tagged = tuple[str | None, Any]


@dataclass(slots=True)
class Position:
    """Where each stream stands: ``pos`` of the last item handed out, and whether it ended."""

    pos: dict[str, Any] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)

    def done(self, streams: Sequence[str | None]) -> bool:
        return all(_key(s) in self.ended for s in streams)


def _key(stream: str | None) -> str:
    return "" if stream is None else stream


def encode_cursor(route: Route, streams: Sequence[str | None], position: Position) -> str | None:
    if position.done(streams):
        return None
    payload = {
        "r": route.name,
        "p": {_key(s): position.pos.get(_key(s)) for s in streams},
        "e": sorted(position.ended),
    }
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(route: Route, text: str) -> tuple[list[str], Position]:
    """The streams the cursor was issued for, and their positions.  400 if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = jsonio.loads(raw)  # TooDeep (a ValueError), never a RecursionError
        if not isinstance(data, dict) or data.get("r") != route.name:
            raise ValueError("route")
        pos = data["p"]
        ended = data.get("e", [])
        if not isinstance(pos, dict) or not isinstance(ended, list) or not all(isinstance(e, str) for e in ended):
            raise ValueError("shape")
        offset = route.pagination is not None and route.pagination.style == "offset"
        if not all(_position_ok(v, offset) for v in pos.values()):
            raise ValueError("position")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadRequest(
            "the cursor is not valid for this route; pass next_cursor exactly as it was returned",
            code="bad_cursor",
            route=route.name,
        ) from None
    return [str(k) for k in pos], Position({str(k): v for k, v in pos.items()}, {str(e) for e in ended})


def _position_ok(value: Any, offset: bool) -> bool:
    """What ``encode_cursor`` writes: an offset is a count, a ``before`` value a scalar (an upstream field)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if offset:
        return isinstance(value, int) and value >= 0
    return isinstance(value, str | int) or (isinstance(value, float) and math.isfinite(value))


def _items(pag: Pagination, body: Any, route: str) -> list[Any]:
    value = body
    for part in pag.items_path:
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, list):
        where = ".".join(pag.items_path) or "the body"
        raise ShapeDrift(f"upstream page has no list at {where!r}", code="shape_drift", route=route)
    return value


def _field(pag: Pagination, item: Any, route: str) -> Any:
    value = item.get(pag.field) if isinstance(item, dict) else None
    if value is None:
        raise ShapeDrift(f"upstream item lost its paging field {pag.field!r}", code="shape_drift", route=route)
    return value


async def pages(
    route: Route,
    streams: Sequence[str | None],
    position: Position,
    limit: int | None,
    fetch: Fetch,
    concurrency: int,
) -> AsyncIterator[list[Tagged]]:
    """Yield pages of up to ``limit`` items in total (all when None), updating ``position``."""
    pag = route.pagination
    assert pag is not None
    source = (
        _before(route.name, pag, streams, position, limit, fetch)
        if pag.style == "before"
        else _offset(route.name, pag, position, limit, fetch, concurrency)
    )
    handed = 0
    async for page in source:
        handed += len(page)
        if handed > pag.max_items:
            raise ShapeDrift(
                f"the collection has more than {pag.max_items} items (pagination.max_items); "
                "page through it with cursors instead of all=true",
                code="collection_too_large",
                route=route.name,
            )
        yield page


def _stalled(route: str) -> ShapeDrift:
    return ShapeDrift(
        "upstream pagination did not advance (the next page repeated the last one); stopped",
        code="pagination_stalled",
        route=route,
    )


async def _before(
    route: str,
    pag: Pagination,
    streams: Sequence[str | None],
    position: Position,
    limit: int | None,
    fetch: Fetch,
) -> AsyncIterator[list[Tagged]]:
    keys = {_key(s): s for s in streams}
    buffers: dict[str, list[Any]] = {k: [] for k in keys}
    fetched_to = {k: position.pos.get(k) for k in keys}
    exhausted = {k for k in keys if k in position.ended}
    from_cursor = {k for k in keys if fetched_to[k] is not None}  # positions a client handed back

    async def refill(k: str) -> None:
        query = [(pag.before_param, str(fetched_to[k]))] if fetched_to[k] is not None else []
        items = _items(pag, await fetch(keys[k], query), route)
        if not items:
            exhausted.add(k)
            return
        last = _field(pag, items[-1], route)
        previous = fetched_to[k]
        try:
            advanced = previous is None or last < previous
        except TypeError:
            if k in from_cursor:  # a forged cursor's position is not the upstream field's type
                raise BadRequest(
                    "the cursor is not valid for this route; pass next_cursor exactly as it was returned",
                    code="bad_cursor",
                    route=route,
                ) from None
            advanced = False
        from_cursor.discard(k)
        if not advanced:
            raise _stalled(route)  # an upstream ignoring `before` would otherwise loop forever
        buffers[k].extend(items)
        fetched_to[k] = last

    handed = 0
    while limit is None or handed < limit:
        need = [k for k in keys if not buffers[k] and k not in exhausted]
        if need:
            await asyncio.gather(*(refill(k) for k in need))
        live = [k for k in keys if buffers[k]]
        if not live:
            break
        out: list[Tagged] = []
        # hand out items while every live stream still has a head to compare against
        while (limit is None or handed < limit) and all(buffers[k] for k in live):
            best = max(live, key=lambda k: _field(pag, buffers[k][0], route))
            item = buffers[best].pop(0)
            position.pos[best] = _field(pag, item, route)
            out.append((keys[best], item))
            handed += 1
        if out:
            yield out
    for k in keys:
        if k in exhausted and not buffers[k]:
            position.ended.add(k)


async def _offset(
    route: str,
    pag: Pagination,
    position: Position,
    limit: int | None,
    fetch: Fetch,
    concurrency: int,
) -> AsyncIterator[list[Tagged]]:
    start = int(position.pos.get("", 0) or 0)
    size = limit if limit is not None else pag.page_size

    async def get(offset: int, n: int) -> tuple[list[Any], bool, int | None]:
        body = await fetch(None, [(pag.limit_param, str(n)), (pag.offset_param, str(offset))])
        items = _items(pag, body, route)
        has_more = isinstance(body, dict) and bool(body.get(pag.next_key))
        count = body.get(pag.count_key) if isinstance(body, dict) else None
        return items, has_more, count if isinstance(count, int) else None

    items, has_more, count = await get(start, size)
    offset = start + len(items)
    position.pos[""] = offset
    yield [(None, it) for it in items]
    if limit is not None or not has_more or not items:
        if not has_more:
            position.ended.add("")
        return
    if count is not None and count > offset:
        # all=true with a known count: fetch the remaining pages concurrently, yield in order.
        # At most `concurrency` fetches in flight, and at most 2x that many pages fetched ahead
        # of the consumer: a slow reader (NDJSON streaming) holds a few pages, never the collection.
        sem = asyncio.Semaphore(concurrency)

        async def bounded(o: int) -> tuple[list[Any], bool, int | None]:
            async with sem:
                return await get(o, size)

        ahead: deque[tuple[int, asyncio.Future[tuple[list[Any], bool, int | None]]]] = deque()
        pending = iter(range(offset, count, size))

        def refill() -> None:
            while len(ahead) < 2 * concurrency and (o := next(pending, None)) is not None:
                ahead.append((o, asyncio.ensure_future(bounded(o))))

        try:
            refill()
            while ahead:
                o, task = ahead.popleft()
                items, has_more, _ = await task
                refill()
                position.pos[""] = o + len(items)
                yield [(None, it) for it in items]
        finally:
            for _, t in ahead:
                t.cancel()
        offset = int(position.pos[""])
        if not has_more:
            position.ended.add("")
            return
    # unknown count, or the collection grew meanwhile: follow next one page at a time
    previous_first: Any = items[0] if items else None  # the page just yielded
    while has_more:
        items, has_more, _ = await get(offset, size)
        if not items:
            break
        if items[0] == previous_first:
            raise _stalled(route)  # an upstream ignoring `offset` would otherwise loop forever
        previous_first = items[0]
        offset += len(items)
        position.pos[""] = offset
        yield [(None, it) for it in items]
    position.ended.add("")
