"""What every paging strategy shares: the fetch callback, the walk position, and the stop guards."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from gateway.config import Pagination
from gateway.mapping import ShapeDrift


@dataclass(frozen=True, slots=True)
class Answer:
    """One upstream page: its parsed body, its headers (``Link`` for ``next_url``) and the URL
    it came from (what a relative next link is resolved against)."""

    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    url: URL | None = None


#: fetch(stream, extra upstream query, path+query after the origin or None) → the page
Fetch = Callable[[str | None, list[tuple[str, str]], str | None], Awaitable[Answer]]
#: a stable item before mapping, tagged with the stream it came from
Tagged = tuple[str | None, Any]


@dataclass(slots=True)
class Position:
    """Where each stream stands, and what a later request needs to notice a stalled upstream.

    ``pos``: per stream, the style's resume point (``before`` value, offset, or ``{"t": token,
    "s": items of that upstream page already served}``); ``ended``: streams that finished;
    ``marks``: fingerprints of the walk's first item (``f``) and of the first item of the
    upstream page before the current one (``h``), the identity of the item served last (``l``,
    gateway.pagination.shifts), and a digest of every stream's head (``t``, gateway.pagination.before).
    """

    pos: dict[str, Any] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    marks: dict[str, str] = field(default_factory=dict)
    #: first-item fingerprints of every page fetched in this request (not carried in the cursor)
    heads: set[str] = field(default_factory=set)
    #: the target walked, where targets page differently (``Route.mixed_paging``); 0 otherwise
    target: int = 0

    def restart(self, target: int) -> None:
        """Walk from the start of another target (the one before handed over before any item)."""
        self.pos.clear()
        self.ended.clear()
        self.marks.clear()
        self.heads.clear()
        self.target = target

    def done(self, streams: Sequence[str | None]) -> bool:
        return all(key(s) in self.ended for s in streams)


def key(stream: str | None) -> str:
    return "" if stream is None else stream


def dig(value: Any, path: Sequence[str]) -> Any:
    """``value[a][b]...`` for a dotted path, None where it is missing."""
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def items_of(pag: Pagination, body: Any, route: str) -> list[Any]:
    value = dig(body, pag.items_path)
    if not isinstance(value, list):
        where = ".".join(pag.items_path) or "the body"
        raise ShapeDrift(f"upstream page has no list at {where!r}", code="shape_drift", route=route)
    return value


def require(body: Any, path: Sequence[str], route: str) -> None:
    """A declared paging field must be in the answer (null is fine: the last page).  Missing, the
    upstream changed how it pages, and reading it as "no next page" would end a list short."""
    parent = dig(body, path[:-1])
    if isinstance(body, dict) and not (isinstance(parent, dict) and path[-1] in parent):
        raise ShapeDrift(
            f"upstream page has no {'.'.join(path)!r} field (its pagination changed?)",
            code="shape_drift",
            route=route,
        )


def has_more(pag: Pagination, body: Any) -> bool | None:
    """The declared ``has_more`` flag: False ends the walk; None when not declared or absent."""
    if not pag.has_more_path:
        return None
    value = dig(body, pag.has_more_path)
    return None if value is None else bool(value)


def fingerprint(item: Any) -> str:
    """A short, stable digest of an upstream item: enough to recognise it again, never its content."""
    raw = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


#: the identities a cursor carries are this long: 48 bits, so that a hundred of them fit a cursor
#: and two of them colliding (an item taken for served) is a one in 10^10 chance
TIE_ID_CHARS = 12


def identity(item: Any) -> str:
    """What recognises an item in a later request: its ``id`` where it has one (its other fields, a
    like count or a title say, may change meanwhile without it becoming another item), else the whole item."""
    return fingerprint(item["id"] if isinstance(item, dict) and "id" in item else item)[:TIE_ID_CHARS]


def stalled(route: str, why: str = "the next page repeated one already served") -> ShapeDrift:
    return ShapeDrift(
        f"upstream pagination did not advance ({why}); stopped",
        code="pagination_stalled",
        route=route,
    )


def check_advanced(route: str, position: Position, first: Any, resumed: bool) -> None:
    """A page that is not the walk's first must not start with the walk's first item, with the
    first item of the page before it (the cursor carries both), nor with the first item of any
    page fetched earlier in this request: that is an upstream ignoring the paging parameter or
    going round in a loop."""
    if first is None:
        return
    fp = fingerprint(first)
    if not resumed:
        position.marks["f"] = fp
    elif fp in position.heads or fp in (position.marks.get("f"), position.marks.get("h")):
        raise stalled(route, "the upstream answered a page already served; it may ignore the paging parameter")
    position.heads.add(fp)
