"""Pass-through answers relayed as they arrive, never held whole.

A ``raw: true`` route that does not cache needs no JSON work on the answer: it is
written to the caller chunk by chunk, so the gateway holds one chunk (64 KiB) of it, not
the whole body, and such answers do not count against ``server.max_buffered_bytes``.
``max_response_bytes`` still bounds the answer.  Once the first byte went out the status
is sent: a failure after that (the upstream breaking off, a body over the limit) cannot
become a 502 any more, so the caller's connection is closed mid-body (a short
``Content-Length`` body, or a chunked body without its end) and the failure is counted
and marks the route down like any other.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from gateway.config import Upstream
from gateway.downstream import mark_answer
from gateway.errors import BadGateway, GatewayTimeout, UpstreamError
from gateway.trace import trace_of

CHUNK = 1 << 16


async def relay(
    request: web.Request,
    answer: aiohttp.ClientResponse,
    status: int,
    headers: dict[str, str],
    upstream: Upstream,
    route: str,
) -> tuple[web.StreamResponse, UpstreamError | None]:
    """Write ``answer``'s body to the caller; (the response, the failure that cut it short).

    Raises (nothing sent yet) when the declared length is already over ``max_response_bytes``.
    """
    limit = upstream.max_response_bytes
    length = answer.content_length
    if length is not None and length > limit:
        raise too_large(upstream, route)
    out = web.StreamResponse(status=status, headers=headers)
    if length is not None and "Content-Encoding" not in answer.headers:
        out.content_length = length  # the caller can tell a cut body from a whole one
    mark_answer(request, out, trace_of(request))  # Cache-Control/Vary go out with the head
    await out.prepare(request)
    sent = 0
    while True:
        try:
            chunk = await answer.content.read(CHUNK)
        except aiohttp.ClientPayloadError:
            return _cut(request, out), BadGateway(
                f"upstream {upstream.name!r} broke off the response body",
                kind="reset",
                code="upstream_reset",
                route=route,
            )
        except TimeoutError:
            return _cut(request, out), GatewayTimeout(f"upstream {upstream.name!r} did not answer in time", route=route)
        except (aiohttp.ClientError, OSError) as exc:
            return _cut(request, out), BadGateway(
                f"upstream {upstream.name!r} failed: {type(exc).__name__}",
                kind="reset",
                code="upstream_failed",
                route=route,
            )
        if not chunk:
            break
        sent += len(chunk)
        if sent > limit:
            return _cut(request, out), too_large(upstream, route)
        try:
            await out.write(chunk)
        except ConnectionError:
            return _gone(request, out), None  # nobody to tell, and not the route's fault
    try:
        await out.write_eof()
    except ConnectionError:
        return _gone(request, out), None
    return out, None


def _gone(request: web.Request, out: web.StreamResponse) -> web.StreamResponse:
    """The caller went away mid-body: a client abort for the access line (499 ``client_closed``)."""
    trace = trace_of(request)
    if trace is not None:
        trace.went_away()
    return out


def _cut(request: web.Request, out: web.StreamResponse) -> web.StreamResponse:
    """Close the caller's connection: aiohttp would otherwise end a chunked body as if it were whole."""
    if request.transport is not None:
        request.transport.abort()
    return out


def too_large(upstream: Upstream, route: str) -> BadGateway:
    return BadGateway(
        f"upstream {upstream.name!r} response is larger than {upstream.max_response_bytes} bytes",
        kind="too_large",
        code="upstream_too_large",
        route=route,
    )
