"""What one stable request did, gathered for its access-log line: an explicit record, no context variable.

The server's framing (gateway.server.framing) makes one ``RequestTrace`` per request and hands it to the route's
pipeline (``gateway.pipeline.Exchange.trace``); the code that knows a fact (the upstream
call, the cache, client auth) is given the record as a parameter and writes it there.
Outside a request (the CLI, probes) the proxy is given a record of its own or none.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute, UrlMappingMatchInfo

from gateway.errors import UpstreamError

#: the access line's status and error code for a client that went away before its answer was all
#: written (nginx's 499): counted under 4xx, never as the gateway failing
CLIENT_CLOSED_STATUS = 499
CLIENT_CLOSED = "client_closed"


@dataclass(slots=True)
class RequestTrace:
    #: the route matched (None: no route matched, or matching failed)
    route: str | None = None
    #: the calling client key's name (``-`` on an open gateway; None: not identified)
    client: str | None = None
    #: answers of the route must not be kept by any cache in front (``no_store: true``)
    no_store: bool = False
    #: client keys are configured: answers vary on the headers that carry them (gateway.downstream)
    keyed: bool = False
    #: upstream exchanges made (targets tried, pages fetched, retries)
    upstream_calls: int = 0
    #: the status of the last upstream answer (None: none, or the call failed without one)
    upstream_status: int | None = None
    #: time spent waiting on upstreams, summed over calls (parallel pages can exceed the wall time)
    upstream_seconds: float = 0.0
    #: the cache's verdict (hit, miss, stale, bypass, ...), set by the cache layer when there is one
    cache: str | None = None
    #: the code of the gateway error the request was answered with, if any
    error: str | None = None
    #: an upstream failure that cut an answer already under way (a relayed body, an NDJSON stream):
    #: no exception can leave then, so the pipeline's ``account`` stage takes it from here
    cut: UpstreamError | None = None
    #: the client went away mid-answer (``went_away``): the access line and metrics say 499
    closed: bool = False

    def upstream(self, status: int | None, seconds: float) -> None:
        """Record one upstream exchange."""
        self.upstream_calls += 1
        if status is not None:
            self.upstream_status = status
        self.upstream_seconds += seconds

    def broke_off(self, failure: UpstreamError) -> None:
        """An answer was cut after its head went out: noted for the access line and the ``account`` stage."""
        self.error = failure.code
        self.cut = failure.with_traceback(None)  # no frames (and the bodies they hold) kept alive

    def went_away(self) -> None:
        """The client closed its connection before the answer was all written: not the gateway's
        failure nor the route's, so it is logged and counted as 499 ``client_closed``."""
        self.closed = True
        self.error = CLIENT_CLOSED


class StableMatch(UrlMappingMatchInfo):
    """aiohttp's match of the stable catch-all (gateway.server.stable), with the request's record.

    The match info is the one per-request object aiohttp hands from routing to every
    later step, so code that is given only the request (a relayed body, say) finds the
    record here (``trace_of``) rather than in a request key.
    """

    __slots__ = ("trace",)

    def __init__(self, route: AbstractRoute) -> None:
        super().__init__({}, route)
        self.trace = RequestTrace()


def trace_of(request: web.Request) -> RequestTrace | None:
    """The record of a stable request; None for anything else (an own endpoint, a test's bare request)."""
    match = request._match_info
    return match.trace if type(match) is StableMatch else None
