"""Collections as NDJSON (``Accept: application/x-ndjson``): one item per line, streamed.

Why: ``all=true`` as one JSON document makes the gateway hold the whole collection
(and the client parse it whole).  As NDJSON each upstream page is written out as
soon as it is mapped, so the gateway's memory stays flat however large the
collection grows, and a client can process items as they arrive.

The contract:

* A page (no ``all=true``) is small (at most ``limit`` items): it is answered whole,
  and the next cursor travels in the ``X-Next-Cursor`` header (absent at the end).
* ``all=true`` streams.  The first upstream page is fetched before anything is sent,
  so the common failures (bad credentials, upstream down, shape drift on page one)
  are still ordinary JSON errors with their 4xx/5xx status.
* A failure after the first byte cannot change the status any more: the stream then
  ends with one last line ``{"error": {"code", "message", "route"}}`` (the same body
  an error response has) and the connection is closed without HTTP's end-of-body
  marker, so the response is also visibly incomplete to any HTTP client (curl exits
  18, aiohttp raises ``ClientPayloadError``).  A complete stream never contains an
  ``error`` line.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

from aiohttp import web

from gateway import jsonio
from gateway.downstream import mark_answer, vary
from gateway.errors import GatewayError, UpstreamError
from gateway.negotiation import weighted
from gateway.trace import RequestTrace

NDJSON_TYPE = "application/x-ndjson"
_NDJSON_TYPES = frozenset({NDJSON_TYPE, "application/ndjson"})
_JSON_TYPES = frozenset({"application/json", "application/*", "*/*"})


def wants_ndjson(accept: str) -> bool:
    """Does the ``Accept`` header prefer NDJSON to JSON?  (Ties go to NDJSON: it was named.)"""
    if "ndjson" not in accept.lower():  # media types ignore case (RFC 9110 8.3.1)
        return False
    best_nd = best_json = 0.0
    for media, q in weighted(accept):
        if media in _NDJSON_TYPES:
            best_nd = max(best_nd, q)
        elif media in _JSON_TYPES:
            best_json = max(best_json, q)
    return best_nd > 0 and best_nd >= best_json


def lines(items: Iterable[Any]) -> bytes:
    """Items as NDJSON: compact JSON, one per line, each line ending in ``\\n``."""
    return b"".join(jsonio.dumps(item) + b"\n" for item in items)


def page(items: Iterable[Any], next_cursor: str | None) -> web.Response:
    """One page, answered whole; the cursor in ``X-Next-Cursor``."""
    headers = {"X-Next-Cursor": next_cursor} if next_cursor else {}
    return web.Response(body=lines(items), content_type=NDJSON_TYPE, headers=headers)


async def stream(
    request: web.Request,
    pages: AsyncGenerator[list[Any], None],
    route: str,
    request_id: str,
    done: Callable[[], None],
    trace: RequestTrace | None = None,
    scrub: Callable[[GatewayError], None] | None = None,
) -> web.StreamResponse:
    """Write every page as it comes; ``done()`` once all were written.  A failure midway: see above;
    it is redacted (``scrub``) before its line is written, and noted on the request's ``trace``.

    A client that goes away (a write fails, or ``pages`` stops for it: the caller hands them watched,
    gateway.pipeline.collection) ends the walk at once and is noted on ``trace`` as a client abort
    (access line 499 ``client_closed``), not as a failure."""
    try:
        first = await anext(pages, None)  # fails as an ordinary error response: nothing is sent yet
        resp = web.StreamResponse(headers={"Content-Type": NDJSON_TYPE, "X-Request-ID": request_id})
        vary(resp, "Accept")  # the JSON answer shares the URL
        mark_answer(request, resp, trace)  # Cache-Control/Vary go out with the head
        try:
            await resp.prepare(request)
            current = first
            try:
                while current is not None:
                    if current:
                        await resp.write(lines(current))
                    current = await anext(pages, None)
            except GatewayError as exc:
                _broke_off(exc, route, trace, scrub)
                await resp.write(lines([exc.body()]))
                if request.transport is not None:
                    request.transport.close()  # flushes what is buffered, then no end-of-body marker
                return resp
            await resp.write_eof()
        except ConnectionError:  # aiohttp's ClientConnectionResetError: the caller is gone
            if trace is not None:
                trace.went_away()
            return resp
        done()
        return resp
    finally:
        await pages.aclose()


def _broke_off(
    exc: GatewayError, route: str, trace: RequestTrace | None, scrub: Callable[[GatewayError], None] | None
) -> None:
    """A failure after the head went out: named, redacted, and noted for the access line and ``account``."""
    if exc.route is None:
        exc.route = route
    if scrub is not None:
        scrub(exc)
    if trace is not None:
        trace.error = exc.code
        if isinstance(exc, UpstreamError):
            trace.broke_off(exc)  # counted by the route's ``account`` stage: no exception leaves
