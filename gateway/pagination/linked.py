"""The walk shared by ``page``, ``next_url`` and ``cursor``: one upstream page after another.

Each style is a small strategy saying what to send for a page token and which token
comes next (None ends the walk).  Upstream page sizes are the upstream's; the stable
page is assembled from as many upstream pages as ``limit`` takes, and the position is
``{"t": token of the current upstream page, "s": items of it already served}``, so the
next request resumes mid-page without losing or repeating an item.

Page numbers (``page``) shift under a list that changes (an item added at the top moves every
item down one place): there the item served last is checked where the walk resumes, and a
cursor stopping at the end of an upstream page resumes by asking that page again (one more
request) so the check has a place to look (``gateway.pagination.shifts``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from gateway.config import Pagination
from gateway.pagination.common import (
    Answer,
    Fetch,
    Position,
    Tagged,
    check_advanced,
    fingerprint,
    identity,
    items_of,
    stalled,
)
from gateway.pagination.shifts import require_last, shifted


class Strategy(Protocol):
    def request(self, token: Any) -> tuple[list[tuple[str, str]], str | None]:
        """The extra query, and the path+query after the origin to fetch instead of the target."""
        ...

    def advance(self, token: Any, answer: Answer, items: list[Any]) -> Any:
        """The next page's token, or None when this page was the last."""
        ...


async def walk(
    route: str,
    pag: Pagination,
    strategy: Strategy,
    position: Position,
    limit: int | None,
    fetch: Fetch,
) -> AsyncIterator[list[Tagged]]:
    state = position.pos.get("") or {"t": None, "s": 0}
    token, skip = state["t"], int(state["s"])
    #: page numbers move under a list that changes (``shifts``): each page is checked against the item
    #: served last (``last``) and the page before it (``before``), and a cursor never stops between pages
    numbered = pag.style == "page"
    #: (a resumed cursor without ``last``, issued before the check, is refused before any call: ``shifts``)
    last = require_last(route, position, token is not None or skip > 0) if numbered else None
    before: set[str] = set()
    handed = 0
    while limit is None or handed < limit:
        query, path = strategy.request(token)
        answer = await fetch(None, query, path)
        items = items_of(pag, answer.body, route)
        check_advanced(route, position, items[0] if items else None, token is not None)
        if numbered:
            _check_place(route, items, skip, last, before)
        nxt = strategy.advance(token, answer, items) if items else None
        if nxt is not None and nxt == token:
            raise stalled(route, "the next page token or link is the current one")
        room = len(items) - skip if limit is None else min(len(items) - skip, limit - handed)
        take = items[skip : skip + max(room, 0)]
        handed += len(take)
        out: list[Tagged] = [(None, it) for it in take]
        if numbered:
            before = {identity(it) for it in items}
            if take:
                last = position.marks["l"] = identity(take[-1])
        if skip + len(take) < len(items) or (numbered and nxt is not None and handed == limit):
            # the stable page is full mid-way through this one, or (page numbers) at its end: the next
            # request asks this page again, to check the item served last is still where it was
            position.pos[""] = {"t": token, "s": skip + len(take)}
            yield out
            return
        if items:
            position.marks["h"] = fingerprint(items[0])
        if nxt is None:
            position.pos[""] = {"t": token, "s": skip + len(take)}
            position.ended.add("")
            if out:
                yield out
            return
        token, skip = nxt, 0
        position.pos[""] = {"t": token, "s": 0}
        if out:
            yield out


def _check_place(route: str, items: list[Any], skip: int, last: str | None, before: set[str]) -> None:
    """A numbered page asked again must still hold the item served last where it was (``skip - 1``); a
    new page must not hold it, nor any item of the page before it (the list moved down under the walk)."""
    if skip:
        if len(items) < skip or identity(items[skip - 1]) != last:
            raise shifted(route)
        return
    if any((i := identity(it)) == last or i in before for it in items):
        raise shifted(route)
