"""``before``: the next page is asked with the last item's field (Observable's ``before=<update_time>``).

An empty page (or a declared ``has_more`` that is false) ends a stream; the page size
is unknown, so pages are fetched one after another.  Several streams (one per fan-out value, e.g. ``type``) are merged
newest-first and the position keeps one value per stream.  A page whose last value does
not move strictly backwards means the upstream ignored ``before``: a 502, not a loop, on
``all=true`` and across ``next_cursor`` requests alike (the cursor carries the value).

Items can share the field's value (two notebooks saved in the same millisecond).  ``before``
is strict, so a cursor that resumed with the last value handed out would lose the tied items
the page still held.  Where a tie is left in the buffer the cursor instead carries the value
the page was asked with and the identities of the tied items already handed out
(``{"p", "v", "s"}``): the next request asks that page again and skips what was served.  A run
of ties that crosses the upstream's own page boundary cannot be reached by a strict ``before``
at all: the upstream's own clients miss those items too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from gateway.config import Pagination
from gateway.errors import BadRequest
from gateway.mapping import ShapeDrift
from gateway.pagination.common import Fetch, Position, Tagged, fingerprint, has_more, items_of, key, stalled

#: the identities a cursor carries are this long: 48 bits, so that a hundred of them fit a cursor
#: and two of them colliding (an item taken for served) is a one in 10^10 chance
TIE_ID_CHARS = 12


def _field(pag: Pagination, item: Any, route: str) -> Any:
    value = item.get(pag.field) if isinstance(item, dict) else None
    if value is None:
        raise ShapeDrift(f"upstream item lost its paging field {pag.field!r}", code="shape_drift", route=route)
    return value


def _identity(item: Any) -> str:
    """What recognises a tied item in a later request: its ``id`` where it has one (its other
    fields, a like count say, may change meanwhile without moving it), else the whole item."""
    return fingerprint(item["id"] if isinstance(item, dict) and "id" in item else item)[:TIE_ID_CHARS]


def _bad_cursor(route: str) -> BadRequest:
    return BadRequest(
        "the cursor is not valid for this route; pass next_cursor exactly as it was returned",
        code="bad_cursor",
        route=route,
    )


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
    fetched_to: dict[str, Any] = {}
    #: per stream: the value of the last item handed out, the identities handed at it by earlier
    #: requests (the cursor's) and the items handed at it by this one
    ties: dict[str, tuple[Any, list[str], list[Any]]] = {}
    #: streams whose cursor stopped inside a run of ties: their page is asked again, and this skipped
    skip: dict[str, tuple[Any, set[str]]] = {}
    for k in keys:
        at = position.pos.get(k)
        if isinstance(at, dict):
            fetched_to[k] = at["p"]
            ties[k] = (at["v"], list(at["s"]), [])
            skip[k] = (at["v"], set(at["s"]))
        else:
            fetched_to[k] = at
    #: per stream, the value the page in its buffer was asked with (None: the first page)
    asked_with = dict(fetched_to)
    exhausted = {k for k in keys if k in position.ended}
    #: streams still at the value a client's cursor gave: a value the upstream's cannot be compared
    #: with is the cursor's fault (400), not the route breaking
    from_cursor = {k for k in keys if position.pos.get(k) is not None}

    def unserved(k: str, items: list[Any]) -> list[Any]:
        """The asked-again page without what the cursor's earlier requests handed out."""
        value, served = skip.pop(k)
        try:
            return [
                item
                for item in items
                if (v := _field(pag, item, route)) < value or (v == value and _identity(item) not in served)
            ]
        except TypeError:
            raise _bad_cursor(route) from None

    async def refill(k: str) -> None:
        while not buffers[k] and k not in exhausted:
            asked = fetched_to[k]
            query = [(pag.before_param, str(asked))] if asked is not None else []
            body = (await fetch(keys[k], query, None)).body
            items = items_of(pag, body, route)
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
            buffers[k].extend(unserved(k, items) if k in skip else items)
            from_cursor.discard(k)
            fetched_to[k] = last
            asked_with[k] = asked

    def place(k: str) -> None:
        """The stream's position after what it handed out: the last value, or inside a tie the tie's form
        (identities are taken only here, once a batch is out, not for every item)."""
        value, earlier, handed_here = ties[k]
        rest = buffers[k]
        if rest and _field(pag, rest[0], route) == value:
            position.pos[k] = {"p": asked_with[k], "v": value, "s": [*earlier, *map(_identity, handed_here)]}
        else:
            position.pos[k] = value

    handed = 0
    while limit is None or handed < limit:
        need = [k for k in keys if not buffers[k] and k not in exhausted]
        if need:
            await asyncio.gather(*(refill(k) for k in need))
        live = [k for k in keys if buffers[k]]
        if not live:
            break
        out: list[Tagged] = []
        touched: set[str] = set()
        # hand out items while every live stream still has a head to compare against
        while (limit is None or handed < limit) and all(buffers[k] for k in live):
            best = max(live, key=lambda k: _field(pag, buffers[k][0], route))
            item = buffers[best].pop(0)
            value = _field(pag, item, route)
            tie = ties.get(best)
            if tie is not None and tie[0] == value:
                tie[2].append(item)
            else:
                ties[best] = (value, [], [item])
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
