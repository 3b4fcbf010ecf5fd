"""Paging variants of the PostHog sandbox, one per gateway pagination style, behind switches.

* Notebook activity pages like PostHog's own (products/notebooks/backend/api/notebook.py
  ``activity()`` and posthog/models/activity_logging/activity_page.py ``activity_page_response``):
  ``page`` from 1 and ``limit`` (default 10), ``offset`` ignored, answering ``{results, next,
  previous, total_count}`` with an absolute ``next`` carrying ``page=``.  The switch
  ``activity_paging: offset`` brings back the sandbox's older ``limit``/``offset`` paging.
* ``list_paging: cursor`` makes the notebook list answer an opaque token
  (``{results, meta: {next_cursor, has_more}}``, sent back as ``?cursor=``), an invented
  variant for the gateway's ``cursor`` style (PostHog's list itself is limit/offset).
* ``list_link_header: true`` adds an RFC 8288 ``Link: <next>; rel="next"`` header to the list.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

ACTIVITY_DEFAULT_LIMIT = 10
ACTIVITY_PAGING = ("page", "offset")
LIST_PAGING = ("offset", "cursor")


def _int(request: web.Request, name: str, default: int, minimum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value >= minimum else None


def activity_page(request: web.Request, results: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    """One page of activity, or None for a bad ``page``/``limit``/``offset`` (the caller's 400)."""
    limit = _int(request, "limit", ACTIVITY_DEFAULT_LIMIT, 1)
    if limit is None:
        return None
    total = len(results)
    if mode == "offset":
        offset = _int(request, "offset", 0, 0)
        if offset is None:
            return None
        nxt = str(request.url.update_query(limit=limit, offset=offset + limit)) if offset + limit < total else None
        prev = str(request.url.update_query(limit=limit, offset=max(0, offset - limit))) if offset > 0 else None
        return {"results": results[offset : offset + limit], "next": nxt, "previous": prev, "total_count": total}
    page = _int(request, "page", 1, 1)
    if page is None:
        return None
    start = (page - 1) * limit
    nxt = str(request.url.update_query(page=page + 1, limit=limit)) if start + limit < total else None
    prev = str(request.url.update_query(page=page - 1, limit=limit)) if page > 1 else None
    return {"results": results[start : start + limit], "next": nxt, "previous": prev, "total_count": total}


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_token(token: str) -> int | None:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        offset = int(text.removeprefix("o:")) if text.startswith("o:") else -1
    except (ValueError, UnicodeDecodeError):
        return None
    return offset if offset >= 0 else None


def cursor_meta(offset: int, limit: int, total: int) -> dict[str, Any]:
    more = offset + limit < total
    return {"next_cursor": encode_token(offset + limit) if more else None, "has_more": more}


def link_header(next_url: str | None) -> dict[str, str]:
    return {"Link": f'<{next_url}>; rel="next"'} if next_url else {}
