"""What every request goes through: a request id, size and edge checks, JSON errors, metrics, the access line."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import re
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import httpedge, jsonio, logs
from gateway.errors import GatewayError, HeadersTooLarge, PayloadTooLarge, UriTooLong
from gateway.metrics import NO_ROUTE, status_class
from gateway.server.state import GATEWAY, REQUEST_ID, TRACE
from gateway.trace import RequestTrace

log = logging.getLogger("gateway")
access_log = logging.getLogger("gateway.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
#: request ids: a random per-process prefix and a counter (unique without a uuid4 per request)
_ids = itertools.count()
_id_prefix = os.urandom(8).hex()


def _reseed_ids() -> None:
    global _id_prefix, _ids
    _id_prefix, _ids = os.urandom(8).hex(), itertools.count()


os.register_at_fork(after_in_child=_reseed_ids)  # gateway serve --workers forks after this import


def new_request_id() -> str:
    return f"{_id_prefix}{next(_ids):016x}"


_OWN = frozenset({"/healthz", "/readyz", "/metrics", "/admin/reload", "/openapi.json", "/admin/cache/purge", "/status"})


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


def _check_sizes(request: web.Request) -> None:
    """nginx-like limits (414/431), answered in JSON before anything is routed or forwarded."""
    if len(request.raw_path) > MAX_URL_BYTES:
        raise UriTooLong(f"the URL is longer than {MAX_URL_BYTES} bytes")
    if len(request.raw_headers) > MAX_HEADERS:
        raise HeadersTooLarge(f"more than {MAX_HEADERS} request headers")
    for name, value in request.raw_headers:
        if len(name) + len(value) > MAX_HEADER_BYTES:
            raise HeadersTooLarge(f"a request header is longer than {MAX_HEADER_BYTES} bytes")


def _tcp_host(request: web.Request) -> str | None:
    """The Host header of a TCP request; None over the workers' Unix sockets, which no browser reaches."""
    transport = request.transport
    if transport is None or not isinstance(transport.get_extra_info("peername"), tuple):
        return None
    return request.headers.get("Host")


@web.middleware
async def frame(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, JSON errors, stable-side metrics and the access log, for every request."""
    incoming = request.headers.get("X-Request-ID", "")
    rid = incoming if incoming and _REQUEST_ID.match(incoming) else new_request_id()
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    record = request[TRACE] = RequestTrace()  # handed to the route's pipeline: what it did, for the access line
    try:
        httpedge.check_request_line(request)
        _check_sizes(request)
        request.app[GATEWAY].runtime.edge.check(request.method, _tcp_host(request), request.headers.get("Origin"))
        resp = await handler(request)
    except GatewayError as exc:
        if exc.route is None:
            exc.route = record.route
        resp = _failed(record, exc)
    except web.HTTPRequestEntityTooLarge:
        resp = _failed(record, PayloadTooLarge("the body is too large"))
    except web.HTTPException as exc:
        err = GatewayError(exc.reason, code=exc.reason.lower().replace(" ", "_"))
        err.status = exc.status
        resp = _failed(record, err)
    except Exception:
        log.exception("internal error handling %s %s (request %s)", request.method, request.path, rid)
        resp = _failed(record, GatewayError("internal gateway error; see the gateway log", route=record.route))
    resp.headers["X-Request-ID"] = rid
    if request.path not in _OWN:
        # counted and logged once the answer is on the wire, as nginx's log phase does: the
        # client does not wait for the bookkeeping (aiohttp writes the response in this same
        # turn of the loop, before any callback queued now runs)
        elapsed = time.perf_counter() - started
        asyncio.get_running_loop().call_soon(_account, request, rid, resp.status, elapsed, record)
    return resp


def _failed(record: RequestTrace, exc: GatewayError) -> web.Response:
    """The JSON error answer, its code noted for the access line."""
    record.error = exc.code
    return error_response(exc)


def _account(request: web.Request, rid: str, status: int, elapsed: float, record: RequestTrace) -> None:
    """The stable-side metrics and the access line of one answered request."""
    route = record.route or NO_ROUTE
    m = request.app[GATEWAY].metrics
    m.child(m.requests, route, request.method, status_class(status)).inc()
    m.child(m.request_seconds, route, request.method).observe(elapsed)
    if access_log.isEnabledFor(logging.INFO):
        _log_access(request, rid, route, status, elapsed, record)


def _log_access(request: web.Request, rid: str, route: str, status: int, elapsed: float, record: RequestTrace) -> None:
    """One JSON line per stable request.  No query string, headers or key values: they may carry secrets."""
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
    fast = logs.access_lines()
    if fast is not None:  # gateway serve's own JSON logging: the same line without a LogRecord
        fast.write(fields)
    else:
        access_log.info("%s", _AsJson(fields), extra={"fields": fields})  # the JSON formatter uses fields as they are


class _AsJson:
    """A log argument serialized only if a handler formats the plain message (the JSON one does not)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return json.dumps(self.value)
