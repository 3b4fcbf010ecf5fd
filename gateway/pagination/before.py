"""``before``: the next page is asked with the last item's field (Observable's ``before=<update_time>``).

An empty page (or a declared ``has_more`` that is false) ends a stream; the page size
is unknown, so pages are fetched one after another.  Several streams (one per fan-out value, e.g. ``type``) are merged
newest-first and the position keeps one value per stream.  A page whose last value does
not move strictly backwards means the upstream ignored ``before``: a 502, not a loop, on
``all=true`` and across ``next_cursor`` requests alike (the cursor carries the value).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from gateway.config import Pagination
from gateway.errors import BadRequest
from gateway.mapping import ShapeDrift
from gateway.pagination.common import Fetch, Position, Tagged, has_more, items_of, key, stalled


def _field(pag: Pagination, item: Any, route: str) -> Any:
    value = item.get(pag.field) if isinstance(item, dict) else None
    if value is None:
        raise ShapeDrift(f"upstream item lost its paging field {pag.field!r}", code="shape_drift", route=route)
    return value


async def walk(
    route: str,
    pag: Pagination,
    streams: Sequence[str | None],
    position: Position,
    limit: int | None,
    fetch: Fetch,
) -> AsyncIterator[list[Tagged]]:
    keys = {key(s): s for s in streams}
    buffers: dict[str, list[Any]] = {k: [] for k in keys}
    fetched_to = {k: position.pos.get(k) for k in keys}
    exhausted = {k for k in keys if k in position.ended}
    #: streams still at the value a client's cursor gave: a value the upstream's cannot be compared
    #: with is the cursor's fault (400), not the route breaking
    from_cursor = {k for k in keys if fetched_to[k] is not None}

    async def refill(k: str) -> None:
        query = [(pag.before_param, str(fetched_to[k]))] if fetched_to[k] is not None else []
        body = (await fetch(keys[k], query, None)).body
        items = items_of(pag, body, route)
        if has_more(pag, body) is False:
            exhausted.add(k)  # this page is the stream's last (its items are still served)
        if not items:
            exhausted.add(k)
            return
        last = _field(pag, items[-1], route)
        previous = fetched_to[k]
        try:
            advanced = previous is None or last < previous
        except TypeError:
            if k in from_cursor:
                raise BadRequest(
                    "the cursor is not valid for this route; pass next_cursor exactly as it was returned",
                    code="bad_cursor",
                    route=route,
                ) from None
            advanced = False
        from_cursor.discard(k)
        if not advanced:
            raise stalled(route, f"the page did not move past {pag.before_param}; it may ignore it")
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
