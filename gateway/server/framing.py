"""What every request goes through: a request id, size and edge checks, JSON errors, metrics, the access line.

Not an aiohttp middleware: the framing is a wrapper the app puts around each handler
(``own`` for the gateway's own endpoints, ``stable`` for the catch-all of stable
routes).  aiohttp's middleware chain (a ``partial`` per request, a generic handler
call) was a tenth of a cache hit's work, and the stable dispatcher can so be handed
the request's ``RequestTrace`` as an argument instead of through a request key.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import httpedge, jsonio, logs
from gateway.downstream import mark_private
from gateway.errors import GatewayError, HeadersTooLarge, MethodNotAllowed, PayloadTooLarge, UriTooLong
from gateway.methods import SAFE
from gateway.metrics import NO_ROUTE
from gateway.server.stable import Dispatch
from gateway.server.state import Gateway
from gateway.trace import CLIENT_CLOSED, CLIENT_CLOSED_STATUS, RequestTrace, trace_of

log = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}\Z")  # \Z: "$" would let a final line break through
#: request ids: a random per-process prefix and a counter (unique without a uuid4 per request)
_ids = itertools.count()
_id_prefix = os.urandom(8).hex()

#: an own endpoint: the request and its id (the admin endpoints relay it to the other workers)
OwnHandler = Callable[[web.Request, str], Awaitable[web.StreamResponse]]


def _reseed_ids() -> None:
    global _id_prefix, _ids
    _id_prefix, _ids = os.urandom(8).hex(), itertools.count()


os.register_at_fork(after_in_child=_reseed_ids)  # gateway serve --workers forks after this import


def new_request_id() -> str:
    return f"{_id_prefix}{next(_ids):016x}"


def error_response(exc: GatewayError) -> web.Response:
    return web.Response(
        status=exc.status,
        body=jsonio.dumps(exc.body()),
        content_type="application/json",
        charset="utf-8",
        headers=exc.headers,
    )


#: what aiohttp's parser accepts; beyond it a client gets the parser's plain-text 400
PARSER_LIMIT = 65536
MAX_URL_BYTES = 8192
MAX_HEADER_BYTES = 8192
MAX_HEADERS = 100


def _checked(gateway: Gateway, request: web.Request) -> None:
    """The request line, size and edge checks every request passes before anything else runs, in one pass.

    nginx-like limits (414/431) are answered in JSON before anything is routed or forwarded.
    Whether the request came over TCP (the Host check's only exception: the workers' Unix
    sockets) is asked only when the answer could depend on it: an allowed Host, or none, and
    no cross-site write pass either way, and that is nearly every request."""
    raw_path = request.raw_path
    if request.version not in httpedge.SUPPORTED_VERSIONS or raw_path[:1] != "/":
        httpedge.check_request_line(request)  # 505, or 400 for an absolute-form target
    if len(raw_path) > MAX_URL_BYTES:
        raise UriTooLong(f"the URL is longer than {MAX_URL_BYTES} bytes")
    raw = request.raw_headers
    if len(raw) > MAX_HEADERS:
        raise HeadersTooLarge(f"more than {MAX_HEADERS} request headers")
    for name, value in raw:
        if len(name) + len(value) > MAX_HEADER_BYTES:
            raise HeadersTooLarge(f"a request header is longer than {MAX_HEADER_BYTES} bytes")
    headers = request.headers
    host, origin = headers.get("Host"), headers.get("Origin")
    edge = gateway.runtime.edge
    if (host is None or edge.allows(host)) and (origin is None or request.method in SAFE):
        return
    edge.check(request.method, _tcp_host(request), origin)


def _tcp_host(request: web.Request) -> str | None:
    """The Host header of a TCP request; None over the workers' Unix sockets, which no browser reaches."""
    transport = request.transport
    if transport is None or not isinstance(transport.get_extra_info("peername"), tuple):
        return None
    return request.headers.get("Host")


def _request_id(request: web.Request) -> str:
    """The caller's ``X-Request-ID`` when it is a sane one, else a new id (``new_request_id``, inlined)."""
    incoming = request.headers.get("X-Request-ID")
    if incoming and _REQUEST_ID.match(incoming):
        return incoming
    return f"{_id_prefix}{next(_ids):016x}"


def _answer(request: web.Request, rid: str, record: RequestTrace, exc: Exception) -> web.Response:
    """The JSON error answer for what a handler raised, its code noted for the access line."""
    if isinstance(exc, GatewayError):
        if exc.route is None:
            exc.route = record.route
        err = exc
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        err = PayloadTooLarge("the body is too large")
    elif isinstance(exc, web.HTTPException):
        err = GatewayError(exc.reason, code=exc.reason.lower().replace(" ", "_"))
        err.status = exc.status
    elif isinstance(exc, ConnectionError) and _client_gone(request):
        # writing to a caller that hung up: no gateway fault, no traceback (the answer goes nowhere)
        record.went_away()
        err = GatewayError("the client closed the connection", code=CLIENT_CLOSED, route=record.route)
        err.status = CLIENT_CLOSED_STATUS
    else:
        log.exception("internal error handling %s %s (request %s)", request.method, request.path, rid, exc_info=exc)
        err = GatewayError("internal gateway error; see the gateway log", route=record.route)
    record.error = err.code
    return error_response(err)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def own(gateway: Gateway, handler: OwnHandler) -> Handler:
    """An own endpoint, framed: request id, checks and JSON errors (not counted or logged as stable requests)."""

    @functools.wraps(handler)
    async def framed(request: web.Request) -> web.StreamResponse:
        rid = _request_id(request)
        try:
            _checked(gateway, request)
            resp = await handler(request, rid)
        except Exception as exc:
            resp = _answer(request, rid, RequestTrace(), exc)
        resp.headers["X-Request-ID"] = rid
        return resp

    return framed


def stable(gateway: Gateway, dispatch: Dispatch, own_allow: Mapping[str, str]) -> Handler:
    """The catch-all, framed: as ``own``, and each answer counted and logged once it is on the wire.

    ``own_allow``: the gateway's own paths and their ``Allow`` (what build_app registered); another
    method there is a 405, never looked up among the stable routes."""

    async def framed(request: web.Request) -> web.StreamResponse:
        rid = _request_id(request)
        started = time.perf_counter()
        # made with aiohttp's match; handed to the route's pipeline: what it did, for the access line
        record = trace_of(request) or RequestTrace()
        allow = own_allow.get(request.path)
        try:
            _checked(gateway, request)
            if allow is not None:  # an own path with another method (aiohttp matched the path, not it)
                raise MethodNotAllowed(
                    f"{request.method} is not allowed here; allowed: {allow}", headers={"Allow": allow}
                )
            resp = await dispatch(request, rid, record)
        except Exception as exc:
            resp = _answer(request, rid, record, exc)
        except asyncio.CancelledError:
            if _client_gone(request):  # cancelled because the client left (aiohttp's handler_cancellation)
                record.went_away()
                elapsed = time.perf_counter() - started
                _account(request, rid, CLIENT_CLOSED_STATUS, elapsed, record, gateway)
            raise
        resp.headers["X-Request-ID"] = rid
        if record.route is not None and not resp.prepared:  # (a stream was marked before its head went out)
            mark_private(request, resp, keyed=record.keyed, no_store=record.no_store)
        # counted and logged once the answer is on the wire, as nginx's log phase does: the client
        # does not wait for the bookkeeping (aiohttp writes the response in this same turn of the
        # loop, before any callback queued now runs); a 405 on an own path too, under route "(none)"
        elapsed = time.perf_counter() - started
        status = CLIENT_CLOSED_STATUS if record.closed else resp.status
        asyncio.get_running_loop().call_soon(_account, request, rid, status, elapsed, record, gateway)
        return resp

    return framed


def _account(
    request: web.Request, rid: str, status: int, elapsed: float, record: RequestTrace, gateway: Gateway
) -> None:
    """The stable-side metrics and the access line of one answered request."""
    route = record.route or NO_ROUTE
    method = request.method
    counted, timed = gateway.metrics.answered(route, method, status)
    counted.inc()
    timed.observe(elapsed)
    fast = logs.access_lines()
    if fast is not None:  # gateway serve's own JSON logging: the same line without a LogRecord
        fast.write_request(rid, method, request.path[:256], route, status, round(elapsed * 1000, 3), record)
    elif access_log.isEnabledFor(logging.INFO):
        _log_access(request, rid, route, status, elapsed, record)


def _log_access(request: web.Request, rid: str, route: str, status: int, elapsed: float, record: RequestTrace) -> None:
    """One JSON line per stable request, as a LogRecord.  No query string, headers or key values (secrets)."""
    fields = {
        "event": "request",
        "request_id": rid,
        "method": request.method,
        "path": request.path[:256],
        "route": route,
        "client": record.client,
        "status": status,
        "upstream_status": record.upstream_status,
        "upstream_calls": record.upstream_calls,
        "duration_ms": round(elapsed * 1000, 3),
        "upstream_ms": round(record.upstream_seconds * 1000, 3),
        "cache": record.cache,
        "error": record.error,
    }
    access_log.info("%s", _AsJson(fields), extra={"fields": fields})  # the JSON formatter uses fields as they are


class _AsJson:
    """A log argument serialized only if a handler formats the plain message (the JSON one does not)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return json.dumps(self.value)
