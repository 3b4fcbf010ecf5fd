"""A cursor issued for the route as it was before a reload: the operator's change, not the client's mistake.

A cursor's position only means something for the way the route paged when it was issued: an
``offset`` count is no ``cursor`` token, a page number of 100 items is another place at 50, a link
below the old target path is not below the new one.  The runbook's fix (an upstream changed its
pagination, routes.yaml follows, the gateway reloads) therefore leaves every walk in progress with
a cursor the route can no longer follow.  The client passed it exactly as returned, so that is not
a 400 ``bad_cursor`` but a 409 ``route_changed`` (start again from the first page), decided before
any upstream call and counted neither against the upstream nor the route's health.

To tell it apart from a forged or misused cursor, a cursor carries the route's paging fingerprint
(``g``, ``fingerprint``): what its position depends on, and nothing a reload changes for other
reasons (the limits, the description, the cache).  The signature, the route name and the path
values the cursor is bound to are checked first (gateway.pagination.cursor), each a 400
``bad_cursor``: only a cursor this deployment issued for this very walk, whose fingerprint differs
from the route's now, is "the route changed".  A cursor without one (issued before fingerprints)
is checked strictly as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import fields

from gateway.config import Pagination, Route
from gateway.errors import Conflict

MESSAGE = (
    "the route was changed since this cursor was issued (an operator's reload changed how it pages"
    " or what it asks upstream), so it cannot be resumed; start again from the first page"
)


class RouteChanged(Conflict):
    """A genuine cursor of this route, issued before a reload changed how it pages: not the client's
    mistake (a 409, not a 400 ``bad_cursor``), nor the upstream's (never forwarded, not counted)."""

    default_code = "route_changed"


#: what a position does not depend on: the limits a client may ask and the ``all=true`` bound
_NOT_POSITION = frozenset({"default_limit", "max_limit", "max_items"})


def _position_part(pag: Pagination | None) -> str:
    """``pag``'s settings a position depends on, those left at their default omitted (a later
    version's new setting does not change the fingerprint of a route that does not use it); the
    upstream page size only where pages are numbered (page 3 of 50 items is not page 3 of 100)."""
    if pag is None:
        return "-"
    kept = {
        f.name: getattr(pag, f.name)
        for f in fields(pag)
        if f.name not in _NOT_POSITION
        and (f.name != "page_size" or pag.style == "page")
        and getattr(pag, f.name) != f.default
    }
    return repr(sorted(kept.items()))


def fingerprint(route: Route) -> str:
    """16 hex digits that change when a reload changes what the route's positions mean: its stable
    path's names (the binding), its upstream, and each target's request and paging, in order."""
    parts = [route.path.raw, route.upstream]
    for index, target in enumerate(route.targets):
        parts += [target.text, _position_part(route.paging(index))]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
