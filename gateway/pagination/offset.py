"""``offset``: ``limit``/``offset`` with a ``next`` link and a ``count`` (PostHog's notebook list).

Once the first page tells the count, an ``all=true`` walk fetches the rest concurrently
(bounded, a few pages ahead of the reader).  Every page after the walk's first is checked
against the pages served before it, so an upstream ignoring ``offset`` is a 502, not a loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from gateway.config import Pagination
from gateway.mapping import ShapeDrift
from gateway.pagination.common import Fetch, Position, Tagged, check_advanced, fingerprint, has_more, items_of

Page = tuple[list[Any], bool, int | None]


async def walk(
    route: str,
    pag: Pagination,
    position: Position,
    limit: int | None,
    fetch: Fetch,
    concurrency: int,
) -> AsyncIterator[list[Tagged]]:
    start = int(position.pos.get("", 0) or 0)
    size = limit if limit is not None else pag.page_size

    async def get(offset: int, n: int) -> Page:
        body = (await fetch(None, [(pag.limit_param, str(n)), (pag.offset_param, str(offset))], None)).body
        items = items_of(pag, body, route)
        if isinstance(body, dict) and pag.next_key not in body and not pag.has_more_path:
            # not "the last page": an upstream that changed its paging would otherwise truncate every list
            why = f"upstream page has no {pag.next_key!r} field (its pagination changed?)"
            raise ShapeDrift(why, code="shape_drift", route=route)
        more = isinstance(body, dict) and bool(body.get(pag.next_key)) and has_more(pag, body) is not False
        count = body.get(pag.count_key) if isinstance(body, dict) else None
        return items, more, count if isinstance(count, int) else None

    def served(offset: int, items: list[Any]) -> list[Tagged]:
        position.pos[""] = offset
        if items:
            position.marks["h"] = fingerprint(items[0])
        return [(None, it) for it in items]

    items, more, count = await get(start, size)
    check_advanced(route, position, items[0] if items else None, start > 0)
    offset = start + len(items)
    yield served(offset, items)
    if limit is not None:
        handed = len(items)
        # the upstream may cap its page size below `limit`: fill the stable page from more pages
        while more and items and handed < limit:
            items, more, _ = await get(offset, limit - handed)
            check_advanced(route, position, items[0] if items else None, True)
            offset += len(items)
            handed += len(items)
            yield served(offset, items)
        if not more or not items:
            position.ended.add("")
        return
    if not more or not items:
        position.ended.add("")
        return
    if count is not None and count > offset:
        # all=true with a known count: fetch the remaining pages concurrently, yield in order.
        # At most `concurrency` fetches in flight, and at most 2x that many pages fetched ahead
        # of the consumer: a slow reader (NDJSON streaming) holds a few pages, never the collection.
        sem = asyncio.Semaphore(concurrency)

        async def bounded(o: int) -> Page:
            async with sem:
                return await get(o, size)

        ahead: deque[tuple[int, asyncio.Future[Page]]] = deque()
        pending = iter(range(offset, count, size))

        def refill() -> None:
            while len(ahead) < 2 * concurrency and (o := next(pending, None)) is not None:
                ahead.append((o, asyncio.ensure_future(bounded(o))))

        try:
            refill()
            while ahead:
                o, task = ahead.popleft()
                items, more, _ = await task
                check_advanced(route, position, items[0] if items else None, True)
                refill()
                yield served(o + len(items), items)
        finally:
            for _, t in ahead:
                t.cancel()
        offset = int(position.pos[""])
        if not more:
            position.ended.add("")
            return
    # unknown count, or the collection grew meanwhile: follow next one page at a time
    while more:
        items, more, _ = await get(offset, size)
        if not items:
            break
        check_advanced(route, position, items[0], True)
        offset += len(items)
        yield served(offset, items)
    position.ended.add("")
