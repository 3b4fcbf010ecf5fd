"""``before``: the next page is asked with the last item's field (Observable's ``before=<update_time>``).

An empty page (or a declared ``has_more`` that is false) ends a stream; the page size
is unknown, so pages are fetched one after another.  Several streams (one per fan-out value, e.g. ``type``) are merged
newest-first and the position keeps one value per stream.  A page whose last value does
not move strictly backwards means the upstream ignored ``before``: a 502, not a loop, on
``all=true`` and across ``next_cursor`` requests alike (the cursor carries the value).

Items can share the field's value (two notebooks saved in the same millisecond), and ``before``
is strict: asking on from the last value handed out would skip the rest of a run of tied items
that goes on past the end of a page.  So when a page runs out, the next one is asked from the
value just above the run it ended in, and the run's items already handed out are skipped (by a
digest of their id), as is anything newer (saved since).  A cursor that stops inside a run, or at
the end of a page, carries the same: the value above the run and the run's identities
(``{"p", "v", "s"}``).  That costs one item again per page and one request at the end; a run
longer than the upstream's page cannot be reached whole by any client.

An item not served yet that is edited during the walk moves to the top (its value becomes now), above
where the walk stands: nothing later asks for it.  So the walk remembers each stream's head (its
first page's newest value and the identities at it: the ``t`` mark, one digest for all streams,
carried by the cursor) and, once every stream has ended, asks each stream's first page again (one
request per stream): a head that is not the same means the list moved (an item edited or added, or
the newest one deleted), a 409 ``collection_changed`` (``shifts``: ``all=true`` starts again).  A
resumed cursor without the mark (issued before the check) cannot be vouched for at its end: a 409
``cursor_outdated`` there.  A session that dies mid-walk answers ``[]`` (Observable: 200, not 401), which
ends a stream early and empties its head, so it looks moved too: on a route with a session check, the
409 goes through that check first (gateway.pipeline.collection), and a dead session is the 502 it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Pagination
from gateway.errors import BadRequest
from gateway.mapping import ShapeDrift
from gateway.pagination.common import (  # TIE_ID_CHARS: the length of the identities a cursor carries
    TIE_ID_CHARS,
    Fetch,
    Position,
    Tagged,
    fingerprint,
    has_more,
    identity,
    items_of,
    key,
    stalled,
)
from gateway.pagination.shifts import OUTDATED, CursorOutdated, shifted

__all__ = ["TIE_ID_CHARS", "walk"]


def _field(pag: Pagination, item: Any, route: str) -> Any:
    value = item.get(pag.field) if isinstance(item, dict) else None
    if value is None:
        raise ShapeDrift(f"upstream item lost its paging field {pag.field!r}", code="shape_drift", route=route)
    return value


def _bad_cursor(route: str) -> BadRequest:
    return BadRequest(
        "the cursor is not valid for this route; pass next_cursor exactly as it was returned",
        code="bad_cursor",
        route=route,
    )


@dataclass(slots=True)
class _Run:
    """A stream's last value handed out, and what a cursor needs to resume inside the run of items at it."""

    #: the last value handed out (None: nothing yet)
    value: Any = None
    #: a ``before`` that asks a page starting with this run (the value handed just above it; None: the top)
    above: Any = None
    #: the run's items' identities handed out by earlier requests (the cursor's)
    earlier: list[str] = field(default_factory=list)
    #: the run's items handed out by this request (identities taken only when a cursor is made)
    here: list[Any] = field(default_factory=list)

    def hand(self, value: Any, item: Any) -> None:
        if self.value is not None and value == self.value:
            self.here.append(item)
            return
        if self.value is not None:
            self.above = self.value
        self.value, self.earlier, self.here = value, [], [item]

    def position(self) -> dict[str, Any]:
        return {"p": self.above, "v": self.value, "s": [*self.earlier, *map(identity, self.here)]}


def _top(pag: Pagination, items: list[Any], route: str) -> list[Any]:
    """A stream's head: its newest value and the identities of the items at it (none: an empty stream)."""
    if not items:
        return [None, []]
    newest = _field(pag, items[0], route)
    return [newest, sorted(identity(it) for it in items if _field(pag, it, route) == newest)]


def _heads(tops: dict[str, list[Any]]) -> str:
    """The ``t`` mark: one short digest of every stream's head (a cursor keeps it small)."""
    return fingerprint(sorted([k, top] for k, top in tops.items()))


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
    runs: dict[str, _Run] = {}
    for k in keys:
        at = position.pos.get(k)
        runs[k] = _Run(at["v"], at["p"], list(at["s"])) if isinstance(at, dict) else _Run(at)
    fetched_to: dict[str, Any] = {k: run.value for k, run in runs.items()}
    #: streams whose next page is asked from above their run: a cursor that stopped in one, then every
    #: stream once its first page is asked (a page that runs out may end inside a run)
    from_above = {k for k in keys if isinstance(position.pos.get(k), dict)}
    #: streams skipping what their run served (and anything newer) until a page reaches the run
    skipping: set[str] = set()
    exhausted = {k for k in keys if k in position.ended}
    #: streams still at the value a client's cursor gave: a value the upstream's cannot be compared
    #: with is the cursor's fault (400), not the route breaking
    from_cursor = {k for k in keys if position.pos.get(k) is not None}
    #: a walk begun in this request (no cursor) takes each stream's head from its first page
    resumed = bool(position.pos)
    tops: dict[str, list[Any]] = {}

    def unserved(k: str, items: list[Any]) -> list[Any]:
        """A page asked from above a run, without the run's items served and anything newer (saved since);
        once a page reaches the run, the skipping is over."""
        run = runs[k]
        served = {*run.earlier, *map(identity, run.here)}
        try:
            kept = [
                item
                for item in items
                if (v := _field(pag, item, route)) < run.value or (v == run.value and identity(item) not in served)
            ]
            if _field(pag, items[-1], route) <= run.value:
                skipping.discard(k)
        except TypeError:
            raise _bad_cursor(route) from None
        return kept

    async def refill(k: str) -> None:
        if k in from_above:
            # the page ran out, perhaps inside a run that goes on past the upstream's page boundary, where a
            # strict ``before`` would skip the rest: ask from above the run, skipping what was served
            fetched_to[k] = runs[k].above
            skipping.add(k)
        from_above.add(k)
        while not buffers[k] and k not in exhausted:
            asked = fetched_to[k]
            query = [(pag.before_param, str(asked))] if asked is not None else []
            body = (await fetch(keys[k], query, None)).body
            items = items_of(pag, body, route)
            if asked is None and not resumed and k not in tops:
                tops[k] = _top(pag, items, route)
            if has_more(pag, body) is False:
                exhausted.add(k)  # this page is the stream's last (its items are still served)
            if not items:
                exhausted.add(k)
                return
            last = _field(pag, items[-1], route)
            try:
                advanced = asked is None or last < asked
            except TypeError:
                if k in from_cursor:
                    raise _bad_cursor(route) from None
                advanced = False
            if not advanced:
                raise stalled(route, f"the page did not move past {pag.before_param}; it may ignore it")
            buffers[k].extend(unserved(k, items) if k in skipping else items)
            from_cursor.discard(k)
            fetched_to[k] = last  # nothing new past the run (all of it served): on strictly before it

    def place(k: str) -> None:
        """The stream's position after what it handed out: the last value, or where its run may go on (the
        next item has its value, or the page ended with it) the run's form."""
        run = runs[k]
        rest = buffers[k]
        ended = k in exhausted and not rest
        if not ended and (not rest or _field(pag, rest[0], route) == run.value):
            position.pos[k] = run.position()
        else:
            position.pos[k] = run.value

    handed = 0
    while limit is None or handed < limit:
        need = [k for k in keys if not buffers[k] and k not in exhausted]
        if need:
            await asyncio.gather(*(refill(k) for k in need))
            if not resumed and "t" not in position.marks:
                position.marks["t"] = _heads(tops)  # the first round asked every stream's first page
        live = [k for k in keys if buffers[k]]
        if not live:
            break
        out: list[Tagged] = []
        touched: set[str] = set()
        # hand out items while every live stream still has a head to compare against
        while (limit is None or handed < limit) and all(buffers[k] for k in live):
            best = max(live, key=lambda k: _field(pag, buffers[k][0], route))
            item = buffers[best].pop(0)
            runs[best].hand(_field(pag, item, route), item)
            out.append((keys[best], item))
            touched.add(best)
            handed += 1
        for k in touched:
            place(k)
        if out:
            yield out
    for k in keys:
        if k in exhausted and not buffers[k]:
            position.ended.add(k)
    if position.done(list(keys)):
        await _unmoved(route, pag, keys, position.marks.get("t"), fetch)


async def _unmoved(route: str, pag: Pagination, keys: dict[str, str | None], mark: str | None, fetch: Fetch) -> None:
    """At the walk's end, every stream's head as it is now against the one the walk began with (``mark``):
    an item edited or added meanwhile is above it, where the walk never looked.  One request per stream."""
    if mark is None:
        raise CursorOutdated(OUTDATED, route=route)

    async def top(k: str) -> list[Any]:
        return _top(pag, items_of(pag, (await fetch(keys[k], [], None)).body, route), route)

    now = await asyncio.gather(*(top(k) for k in keys))
    if _heads(dict(zip(keys, now, strict=True))) != mark:
        raise shifted(route)
