"""What one stable request did upstream, gathered for its access-log line.

The request's trace sits in a context variable set by the server's middleware, so
the layers that know the facts (the proxy for upstream calls, a cache for hit or
miss) record them without threading a parameter through every signature.  Tasks
spawned for an aggregation copy the context and so share the same trace object.
Outside a request (the CLI, tests calling the proxy directly) recording is a no-op.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass(slots=True)
class RequestTrace:
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


_CURRENT: ContextVar[RequestTrace | None] = ContextVar("routegate_request_trace", default=None)


def begin() -> tuple[RequestTrace, Token[RequestTrace | None]]:
    trace = RequestTrace()
    return trace, _CURRENT.set(trace)


def end(token: Token[RequestTrace | None]) -> None:
    _CURRENT.reset(token)


def current() -> RequestTrace | None:
    return _CURRENT.get()


def upstream(status: int | None, seconds: float) -> None:
    """Record one upstream exchange of the current request."""
    trace = _CURRENT.get()
    if trace is not None:
        trace.upstream_calls += 1
        if status is not None:
            trace.upstream_status = status
        trace.upstream_seconds += seconds


def cache(result: str) -> None:
    """The hook for a response cache: ``trace.cache("hit")``."""
    trace = _CURRENT.get()
    if trace is not None:
        trace.cache = result
