"""Every upstream paging style → one stable shape: ``limit``, a signed opaque ``cursor``, ``all``.

One small strategy module per style, all yielding the same tagged pages:

* ``before`` (``before.py``): the last item's field asks for the next page (Observable);
* ``offset`` (``offset.py``): ``limit``/``offset`` with ``next`` and ``count`` (PostHog's list);
* ``page`` (``page.py``), ``next_url`` (``next_url.py``) and ``cursor`` (``token.py``):
  one upstream page after another through ``linked.walk``.

Where the items, the next token and the stop signal live is declared in ``routes.yaml``
(``styles.STYLE_KEYS``).  Whatever the style, a page repeating one already served, a
token or link equal to the current one, or an upstream ignoring the paging parameter is
a 502 ``pagination_stalled``, on ``all=true`` and across ``next_cursor`` requests alike.
A list that moves under an ``offset`` or ``page`` walk (an item added, edited or removed before
the page asked for), or whose head is not the same where a ``before`` walk ends (an item edited
or added above it), is a 409 ``collection_changed`` (``shifts``), never a page missing or
repeating an item; a resumed cursor that cannot be checked so (issued before the check) is a
409 ``cursor_outdated``, and one issued before a reload changed how the route pages a 409
``route_changed`` (``stale``).  Items are yielded page by page so a caller can stream them without holding
the collection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from yarl import URL

from gateway.config import Pagination, Route
from gateway.mapping import ShapeDrift
from gateway.pagination import before, linked, offset
from gateway.pagination.common import Answer, Fetch, Position, Tagged
from gateway.pagination.cursor import decode_cursor, derive_key, encode_cursor
from gateway.pagination.next_url import NextLinks
from gateway.pagination.page import PageNumbers
from gateway.pagination.token import Tokens

__all__ = ["Answer", "Fetch", "Position", "Tagged", "decode_cursor", "derive_key", "encode_cursor", "pages"]


def _source(
    route: Route,
    streams: Sequence[str | None],
    position: Position,
    limit: int | None,
    fetch: Fetch,
    concurrency: int,
    base_url: URL | None,
    pag: Pagination,
) -> AsyncIterator[list[Tagged]]:
    name = route.name
    if pag.style == "before":
        return before.walk(name, pag, streams, position, limit, fetch)
    if pag.style == "offset":
        return offset.walk(name, pag, position, limit, fetch, concurrency)
    strategy: linked.Strategy
    if pag.style == "page":
        strategy = PageNumbers(pag)
    elif pag.style == "next_url":
        assert base_url is not None, "next_url follows links only below the upstream's base_url"
        strategy = NextLinks(pag, base_url, name)
    else:
        strategy = Tokens(pag)
    return linked.walk(name, pag, strategy, position, limit, fetch)


async def pages(
    route: Route,
    streams: Sequence[str | None],
    position: Position,
    limit: int | None,
    fetch: Fetch,
    concurrency: int,
    base_url: URL | None = None,
) -> AsyncIterator[list[Tagged]]:
    """Yield pages of up to ``limit`` items in total (all when None), updating ``position``; the
    walk pages the way its target does (``position.target``: ``Route.paging``)."""
    pag = route.paging(position.target)
    assert pag is not None
    handed = 0
    async for page in _source(route, streams, position, limit, fetch, concurrency, base_url, pag):
        handed += len(page)
        if handed > pag.max_items:
            raise ShapeDrift(
                f"the collection has more than {pag.max_items} items (pagination.max_items); "
                "page through it with cursors instead of all=true",
                code="collection_too_large",
                route=route.name,
            )
        yield page
