"""The ``body`` stage's work: a write's JSON body read within limits and validated before any upstream call.

Bad input is the client's 4xx and is never forwarded: too large (413), too slow (408), not JSON
(415 for another media type, 400 for malformed or too deep JSON), missing where a target passes
it through (400), or refused by the route's ``validate`` function.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from typing import Any

from aiohttp import web

from gateway import jsonio
from gateway.config import Route, ServerSettings
from gateway.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from gateway.validators import VALIDATORS

JSON_TYPE = "application/json"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


async def read_body(server: ServerSettings, request: web.Request, route: Route, params: dict[str, Any]) -> bytes | None:
    """A write's JSON body: within size and time limits, JSON, checked by the route's validator (4xx else)."""
    if route.method not in _BODY_METHODS:
        return None
    limit = server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes", route=route.name)
    raw = await _read_limited(request, limit, server.body_timeout, route.name)
    ctype = request.content_type
    if raw and ctype != JSON_TYPE and not ctype.endswith("+json"):
        # a text/plain or form POST is what any web page may send cross-site: never forwarded
        raise UnsupportedMediaType(f"send the body as {JSON_TYPE}, not {_sent_type(request)}", route=route.name)
    charset = request.charset
    if raw and charset is not None and not _utf8(charset):
        # JSON between systems is UTF-8 (RFC 8259 §8.1): another charset's bytes would be read as the wrong text
        raise UnsupportedMediaType(f"send the body as UTF-8 (RFC 8259), not charset={charset[:40]!r}", route=route.name)
    if not raw.strip():
        if _needs_body(route):
            raise BadRequest(
                f"{route.method} {route.path.raw} needs a JSON body (Content-Type: {JSON_TYPE})",
                code="missing_body",
                route=route.name,
            )
        parsed: Any = None
    else:
        try:
            parsed = jsonio.loads(raw)
        except jsonio.TooDeep as exc:
            raise BadRequest(f"the body is {exc}", code="json_too_deep", route=route.name) from None
        except (ValueError, UnicodeDecodeError) as exc:
            where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            raise BadRequest(f"the body is not valid JSON{where}", code="malformed_json", route=route.name) from None
    if route.validate is not None:
        parsed = VALIDATORS[route.validate](parsed, params)
    return None if parsed is None else jsonio.dumps(parsed)


def _utf8(charset: str) -> bool:
    """UTF-8 by any of its names (utf8, UTF_8, ...), or ASCII, which is UTF-8's first half."""
    try:
        return codecs.lookup(charset).name in ("utf-8", "ascii")
    except LookupError:
        return False


def _sent_type(request: web.Request) -> str:
    """The media type as the client wrote it: aiohttp reads an unparsable or missing one as
    application/octet-stream, which the client never said."""
    said = request.headers.get("Content-Type", "").partition(";")[0].strip()
    if not said:
        return "an unspecified type"
    return said if said.lower() == request.content_type else repr(said[:100])


def _needs_body(route: Route) -> bool:
    """A write whose request body goes upstream: sent empty, it would create or change something blank."""
    return route.method in _BODY_METHODS and any(t.body.mode == "passthrough" for t in route.targets)


async def _read_limited(request: web.Request, limit: int, timeout: float, route: str) -> bytes:
    """The whole body (``read(n)`` returns whatever has arrived), at most ``limit`` bytes, in time."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(limit + 1 - size):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body is larger than {limit} bytes", route=route)
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g}s", route=route) from None
    return b"".join(chunks)
