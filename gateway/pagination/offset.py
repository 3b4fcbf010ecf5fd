"""``offset``: ``limit``/``offset`` with a ``next`` link and a ``count`` (PostHog's notebook list).

Every page after the walk's first is asked from one item before where the last one ended
(``offset - 1``, ``limit + 1``), and that item must be the one served last (its identity, the
cursor's ``l`` mark): otherwise the list moved under the walk (an item added, edited or removed
before this page) and the page would miss or repeat an item, a 409 (``shifts``); a cursor without
that mark (issued before the check) is refused before any call.  Where the
page does not start with it but with the same item as a page at another offset, the upstream
ignores ``offset``: a 502 ``pagination_stalled``, not a loop.

A page never holds more than it asked for (an upstream ignoring its page size is trimmed, and
the walk goes on from the last item served).  A page contradicting its own ``count`` (empty at
offset 0, or no ``next`` while the count says more) is a 502 ``shape_drift``.  Once the first
page tells the count, an ``all=true`` walk fetches the rest concurrently (bounded, a few pages
ahead of the reader); a page that comes back short turns it into one page at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from gateway.config import Pagination
from gateway.errors import GatewayError
from gateway.mapping import ShapeDrift
from gateway.pagination.common import Fetch, Position, Tagged, dig, has_more, identity, items_of, require, stalled
from gateway.pagination.shifts import require_last, shifted

#: an upstream page, trimmed to what was asked: its items, whether more follow, its count
Page = tuple[list[Any], bool, int | None]


def _contradiction(at: int, items: list[Any], nxt: bool, count: int) -> str | None:
    """Where a page's own ``count`` makes it certain the page is broken (nothing cleverer)."""
    if at == 0 and not items and count > 0:
        return f"its first page is empty though its count is {count}"
    if not nxt and at + len(items) < count:
        return f"it has no next page after {at + len(items)} items though its count is {count}"
    return None


async def walk(
    route: str,
    pag: Pagination,
    position: Position,
    limit: int | None,
    fetch: Fetch,
    concurrency: int,
) -> AsyncIterator[list[Tagged]]:
    start = int(position.pos.get("", 0) or 0)
    # dotted, like `items`: an envelope ({"data": {"next": ..., "results": [...]}}) is one edit away
    next_path, count_path = tuple(pag.next_key.split(".")), tuple(pag.count_key.split("."))
    size = limit if limit is not None else pag.page_size
    #: all=true asks page_size items a page, the item before included (an upstream whose pages are
    #: capped at page_size would otherwise answer every page short)
    step = size if limit is not None else max(size - 1, 1)
    offset = start
    #: the identity of the last item served (None before the first); a resumed cursor without it is a 409
    last: str | None = require_last(route, position, start > 0)

    async def ask(at: int, n: int) -> Page:
        """The upstream's page of ``n`` items from ``at``: never more (the rest is ``more``)."""
        body = (await fetch(None, [(pag.limit_param, str(n)), (pag.offset_param, str(at))], None)).body
        items = items_of(pag, body, route)
        require(body, next_path, route)
        nxt = bool(dig(body, next_path))
        count = dig(body, count_path)
        count = count if isinstance(count, int) and not isinstance(count, bool) else None
        if count is not None and (why := _contradiction(at, items, nxt, count)):
            raise ShapeDrift(f"upstream page contradicts itself: {why}", code="shape_drift", route=route)
        more = (nxt and has_more(pag, body) is not False) or len(items) > n
        return items[:n], more, count

    def overlapped(o: int) -> bool:
        return last is not None and o > 0

    async def checked(o: int, n: int, page: Page) -> Page:
        """The new items of a page asked from ``o - 1``: its first must be the item served last."""
        items, more, count = page
        if not overlapped(o):
            return page
        if not items or identity(items[0]) != last:
            raise await _mismatch(items, o - 1 + n + 1, n + 1)
        if len(items) == 1 and more:
            raise stalled(route, "the page held nothing past the item before it; it may answer one item a page")
        return items[1:], more, count

    async def _mismatch(items: list[Any], probe_at: int, n: int) -> GatewayError:
        """Shifted, unless the upstream answers the same page at another offset (it ignores ``offset``)."""
        if items:
            probe, _, _ = await ask(probe_at, n)
            if probe and identity(probe[0]) == identity(items[0]):
                return stalled(route, "the upstream answered the same page at another offset; it may ignore it")
        return shifted(route)

    async def get(o: int, n: int) -> Page:
        lap = overlapped(o)
        return await checked(o, n, await ask(o - 1, n + 1) if lap else await ask(o, n))

    def served(items: list[Any]) -> list[Tagged]:
        nonlocal offset, last
        offset += len(items)
        position.pos[""] = offset
        if items:
            last = position.marks["l"] = identity(items[-1])
        return [(None, it) for it in items]

    items, more, count = await get(start, size)
    yield served(items)
    if limit is not None:
        handed = len(items)
        # the upstream may cap its page size below `limit`: fill the stable page from more pages
        while more and items and handed < limit:
            items, more, _ = await get(offset, limit - handed)
            handed += len(items)
            yield served(items)
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
                return await ask(o - 1, step + 1)

        ahead: deque[tuple[int, asyncio.Future[Page]]] = deque()
        pending = iter(range(offset, count, step))

        def refill() -> None:
            while len(ahead) < 2 * concurrency and (o := next(pending, None)) is not None:
                ahead.append((o, asyncio.ensure_future(bounded(o))))

        try:
            refill()
            # a page that came back short leaves the pages fetched after it misaligned: on one at a time
            while more and ahead and ahead[0][0] == offset:
                o, task = ahead.popleft()
                items, more, _ = await checked(o, step, await task)
                refill()
                yield served(items)
        finally:
            for _, t in ahead:
                t.cancel()
        if not more:
            position.ended.add("")
            return
    # unknown count, the collection grew meanwhile, or a short page: follow next one page at a time
    while more:
        items, more, _ = await get(offset, step)
        if not items:
            break
        yield served(items)
    position.ended.add("")
