"""``POST /admin/cache/purge``: what to drop, read from the query string or a JSON body.

``route=NAME`` drops that route's entries, ``prefix=/v1/...`` everything at or below a
stable path (whole segments: ``/v1/x/1`` does not match ``/v1/x/10``), both together
narrow each other, ``all=true`` drops everything.  The caller is an admin (checked by
the server); the answer says how many stored entries were deleted.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.cache.core import ResponseCache
from gateway.cache.store import CacheUnavailable
from gateway.config import Config
from gateway.errors import BadRequest, Conflict, ServiceUnavailable


async def _arguments(request: web.Request) -> dict[str, Any]:
    args: dict[str, Any] = dict(request.query)
    raw = await request.read()
    if raw.strip():
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("the body is not valid JSON", code="malformed_json") from None
        if not isinstance(body, dict):
            raise BadRequest('expected a JSON object such as {"route": "posthog_notebooks"}', code="bad_purge")
        args.update(body)
    unknown = sorted(set(args) - {"route", "prefix", "all"})
    if unknown:
        raise BadRequest(f"unknown purge argument(s) {', '.join(unknown)}; use route, prefix or all", code="bad_purge")
    return args


async def purge_request(request: web.Request, cache: ResponseCache | None, config: Config) -> dict[str, Any]:
    args = await _arguments(request)
    route, prefix, everything = args.get("route"), args.get("prefix"), args.get("all")
    if cache is None:
        why = "cache.enabled is false" if not config.cache.enabled else "no route in routes.yaml has a cache: section"
        raise Conflict(f"the response cache is off: {why}", code="cache_disabled")
    if isinstance(everything, str):
        everything = everything.lower() in ("true", "1", "yes")
    if route is not None and (not isinstance(route, str) or route not in {r.name for r in config.routes}):
        raise BadRequest(f"no route named {route!r}", code="unknown_route")
    if prefix is not None and (not isinstance(prefix, str) or not prefix.startswith("/")):
        raise BadRequest("prefix must be a stable path starting with '/'", code="bad_purge")
    if route is None and prefix is None and everything is not True:
        raise BadRequest("name what to purge: route=NAME, prefix=/stable/path, or all=true", code="bad_purge")
    try:
        deleted = await cache.purge(route, prefix)
    except CacheUnavailable:
        raise ServiceUnavailable(
            "the cache backend (redis) is unreachable; nothing was purged", code="cache_unavailable"
        ) from None
    return {"status": "purged", "route": route, "prefix": prefix, "deleted": deleted}
