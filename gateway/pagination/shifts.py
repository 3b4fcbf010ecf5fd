"""A list that moves under a paged walk: detected, never served as data.

PostHog's notebook list is ordered by ``-last_modified_at``: editing a notebook moves it to the
top, deleting one moves the rest up.  A walk by offset (or page number) that straddles such a
change would answer 200 with one item missing and another repeated.  So every page after the
first is checked against the last item already served (``offset``: the page is asked from one
item before where the last one ended, and that item must be the one served last; ``page``: the
item served last must still be where it was, and a new page must not hold it again).

A mismatch is a 409 ``collection_changed``: a ``next_cursor`` request cannot be answered (start
again from the first page); an ``all=true`` walk starts again by itself (``collect``), at most
``MAX_RESTARTS`` times.  An NDJSON stream that already sent lines cannot unsend them: it ends
with the error line (gateway.ndjson).  Counted as an upstream error of kind ``shifted``; the
route is not marked down (gateway.proxy.NOT_DOWN).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

from gateway.errors import CollectionChanged
from gateway.pagination.common import Position

#: how many times an ``all=true`` walk starts again by itself before answering 409
MAX_RESTARTS = 3

MESSAGE = (
    "the collection changed while paging (an item was added, edited or removed before this page); "
    "start again from the first page"
)


def shifted(route: str) -> CollectionChanged:
    return CollectionChanged(MESSAGE, code="collection_changed", route=route)


async def collect(
    walk: Callable[[Position], AsyncGenerator[list[Any], None]], position: Position, restarts: int = MAX_RESTARTS
) -> list[Any]:
    """Every item of an ``all=true`` walk from ``position``; where the list moves under the walk, the
    walk starts again from the first page (a fresh ``Position``), up to ``restarts`` times (none for a
    walk resumed from a cursor: its first page is the client's, which the client must ask again)."""
    for attempt in range(restarts + 1):
        items: list[Any] = []
        try:
            async with contextlib.aclosing(walk(position)) as pages:
                async for page in pages:
                    items.extend(page)
            return items
        except CollectionChanged:
            if attempt == restarts:
                raise
            position = Position()
    raise AssertionError("unreachable: the last attempt returns or raises")
