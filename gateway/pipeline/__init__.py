"""Each route's handler, composed once when a config loads (Lura's ``proxy/factory.go`` shape).

A stage wraps the next handler only where the route configures what the stage does, so a
request never asks "does this route validate, compress, ...?" again: a route without such a
feature runs none of its code.  ``Pipeline.stages`` names what was composed, outermost first;
``Pipeline.calls`` the call-level stack (gateway.pipeline.calls) its core runs for each upstream call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiDict, MultiDictProxy, MultiMapping

from gateway.config import Route
from gateway.routing import Match
from gateway.trace import RequestTrace

#: the query of an exchange that has none
_NO_QUERY: MultiMapping[str] = MultiDictProxy(MultiDict())


@dataclass(slots=True)
class Exchange:
    """One stable request as it passes the stages: what earlier stages worked out, said explicitly."""

    #: the HTTP request (None: a contract probe, which runs only ``account``, ``params`` and the core)
    request: web.Request | None
    match: Match
    request_id: str
    #: what the request did, for its access line (made by the server's framing, written by the stages)
    trace: RequestTrace
    #: the calling client key's name (``-`` on an open gateway, set by the ``auth`` stage where keys are
    #: configured); None: unknown, nothing is shared through the cache
    client: str | None = None
    #: the query parameters (the request's, or a probe's sample)
    query: MultiMapping[str] = field(default_factory=lambda: _NO_QUERY)
    #: the route's parameters, once the ``params`` stage parsed them
    params: dict[str, Any] = field(default_factory=dict)
    #: the validated JSON body of a write (``body`` stage), re-encoded
    body: bytes | None = None
    #: a raw GET answer may be streamed to the caller (False while a cache fill stores the answer whole)
    relay: bool = True
    #: while a cache fill runs: the upstream answers' headers (Cache-Control/Expires) and store vetoes
    notes: list[MultiMapping[str]] | None = None
    #: the answer being produced is a cache fill other requests may wait on (``_coalesced_fill``): its walk
    #: goes on when this caller leaves; False (no cache, no-store, no-cache): the walk is this caller's alone
    shared: bool = False


def http(ex: Exchange) -> web.Request:
    """The HTTP request of an exchange; only stages a probe's pipeline leaves out ask for it."""
    assert ex.request is not None, "a stage that needs an HTTP request ran in a probe"
    return ex.request


#: a step of either stack: a stable request's handler, or an upstream call's (gateway.pipeline.calls)
S = TypeVar("S")
#: one stable request in, its answer out
Handler = Callable[[Exchange], Awaitable[web.StreamResponse]]
#: given a route and the next handler: the wrapping handler, or None where the stage does not apply
Stage = Callable[[Route, Handler], Handler | None]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A route's composed handler and the names of its stages (outermost first)."""

    route: str
    #: the endpoint-level stages, ending in the core (``collection`` or ``call``)
    stages: tuple[str, ...]
    run: Handler
    #: the call-level stack the core runs for each upstream call (gateway.pipeline.calls), outermost first
    calls: tuple[str, ...] = ()


def build(
    route: Route,
    core: Handler,
    stages: Sequence[tuple[str, Stage]],
    core_name: str = "proxy",
    calls: tuple[str, ...] = (),
) -> Pipeline:
    """Wrap ``core`` in each stage that applies to ``route``; ``stages`` is listed outermost first;
    ``calls`` names the call-level stack ``core`` runs."""
    handler, names = wrap(route, core, stages, core_name)
    return Pipeline(route.name, names, handler, calls)


def wrap(
    route: Route, innermost: S, stages: Sequence[tuple[str, Callable[[Route, S], S | None]]], name: str
) -> tuple[S, tuple[str, ...]]:
    """``innermost`` wrapped in each stage that applies to ``route`` (``stages`` outermost first), and the
    names of the steps kept, outermost first: how both of a route's stacks are composed (this and
    gateway.pipeline.calls)."""
    step = innermost
    names = [name]
    for stage_name, stage in reversed(stages):
        wrapped = stage(route, step)
        if wrapped is not None:
            step = wrapped
            names.append(stage_name)
    return step, tuple(reversed(names))
