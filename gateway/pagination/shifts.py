"""A list that moves under a paged walk: detected, never served as data.

PostHog's notebook list is ordered by ``-last_modified_at``: editing a notebook moves it to the
top, deleting one moves the rest up.  A walk by offset (or page number) that straddles such a
change would answer 200 with one item missing and another repeated.  So every page after the
first is checked against the last item already served (``offset``: the page is asked from one
item before where the last one ended, and that item must be the one served last; ``page``: the
item served last must still be where it was, and a new page must not hold it again).  Observable's
lists (``before``, newest ``update_time`` first) lose an edited item above where the walk stands:
there the walk's end asks each stream's first page again (gateway.pagination.before).

A mismatch is a 409 ``collection_changed``: a ``next_cursor`` request cannot be answered (start
again from the first page); an ``all=true`` walk starts again by itself (``collect``), at most
``MAX_RESTARTS`` times.  An NDJSON stream that already sent lines cannot unsend them: it ends
with the error line (gateway.ndjson).  Counted as an upstream error of kind ``shifted``; the
route is not marked down (gateway.proxy.NOT_DOWN).

A cursor resuming an ``offset`` or ``page`` walk must carry the item served last (the ``l`` mark);
one issued before this check existed (marks ``f``/``h`` only) cannot be checked, so it is refused
before any upstream call (``CursorOutdated``, 409 ``cursor_outdated``) rather than served unchecked.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

from gateway.errors import CollectionChanged, Conflict
from gateway.pagination.common import Position

#: how many times an ``all=true`` walk starts again by itself before answering 409
MAX_RESTARTS = 3

MESSAGE = (
    "the collection changed while paging (an item was added, edited or removed before this page); "
    "start again from the first page"
)


OUTDATED = (
    "this cursor was issued by an earlier version of the gateway, before it could check that the list"
    " did not move under the walk, so it cannot be resumed safely; start again from the first page"
)


class CursorOutdated(Conflict):
    """A resumed cursor the gateway can no longer vouch for (it predates the ``l`` mark): not the
    client's mistake (a 409, not a 400 ``bad_cursor``), nor the upstream's (not counted, not down)."""

    default_code = "cursor_outdated"


def shifted(route: str) -> CollectionChanged:
    return CollectionChanged(MESSAGE, code="collection_changed", route=route)


def require_last(route: str, position: Position, resumed: bool) -> str | None:
    """The identity of the item served last, which a resumed walk checks the list against; a resumed
    cursor without it (issued before the check) is refused, never walked unchecked."""
    last = position.marks.get("l")
    if resumed and last is None:
        raise CursorOutdated(OUTDATED, route=route)
    return last if resumed else None


async def collect(
    walk: Callable[[Position], AsyncGenerator[list[Any], None]],
    position: Position,
    restarts: int = MAX_RESTARTS,
    restarted: Callable[[], None] | None = None,
) -> list[Any]:
    """Every item of an ``all=true`` walk from ``position``; where the list moves under the walk, the
    walk starts again from the first page (a fresh ``Position``), up to ``restarts`` times (none for a
    walk resumed from a cursor: its first page is the client's, which the client must ask again).

    ``restarted`` is told of each restart: a walk that answers in full after one has still read its
    pages again, which the operator sees (``gateway_collection_restarts_total``), not the client."""
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
            if restarted is not None:
                restarted()
            position = Position()
    raise AssertionError("unreachable: the last attempt returns or raises")
