"""What the gateway tells caches in front of it (nginx, Varnish, a CDN, a browser).

The gateway's own cache keys every answer by client key and upstream credential.  A
shared cache in front keys by URL only, and it does not know that ``X-API-Key`` names
a caller (the rule that shared caches leave ``Authorization`` requests alone covers
only that header, and nginx does not follow it either).  So every answer of a stable
route, error answers included, is marked ``Cache-Control: private`` (``no-store`` for
writes, and for reads of a route with ``no_store: true``): a shared cache must not store
it, whoever asked.  ``Vary`` names the headers that carry client keys, for caches that
store private answers (a browser's).  A collection's answer also depends on ``Accept`` (JSON or
NDJSON at the same URL, different bodies and ETags), so it names ``Accept`` too (``vary``).
"""

from __future__ import annotations

from aiohttp import web

from gateway.methods import READS as _READS
from gateway.trace import RequestTrace

#: the request headers a client key arrives in (gateway.access.presented_key)
KEY_HEADERS = ("Authorization", "X-API-Key")


def mark_private(request: web.Request, resp: web.StreamResponse, *, keyed: bool, no_store: bool = False) -> None:
    """Set ``Cache-Control`` and ``Vary`` on a stable route's answer, just before its headers go out;
    ``no_store``: the route's answers no cache may keep (``no_store: true`` in routes.yaml)."""
    headers = resp.headers
    current = headers.get("Cache-Control")
    if current is None or "no-store" not in current.lower():
        headers["Cache-Control"] = "private" if request.method in _READS and not no_store else "no-store"
    if keyed:
        vary(resp, *KEY_HEADERS)


def vary(resp: web.StreamResponse, *names: str) -> None:
    """Add ``names`` to ``resp``'s ``Vary``, keeping what is there as it is (``*`` already covers all)."""
    current = resp.headers.get("Vary", "").strip()
    have = {v.strip().lower() for v in current.split(",") if v.strip()}
    if "*" in have:
        return
    missing = [name for name in names if name.lower() not in have]
    if missing:
        resp.headers["Vary"] = ", ".join([current, *missing] if current else missing)


def mark_answer(request: web.Request, resp: web.StreamResponse, trace: RequestTrace | None) -> None:
    """``mark_private`` for a stable route's answer (streams: before ``prepare``); nothing when no route matched."""
    if trace is not None and trace.route is not None:
        mark_private(request, resp, keyed=trace.keyed, no_store=trace.no_store)
