"""A route's call-level stack (Lura's backend-level one): what one upstream call passes, composed once.

The endpoint-level stages (gateway.pipeline) end in a core that asks the upstream; that ask is a
second, smaller pipeline, built per route at load like the first: each stage wraps the next only
where the route configures what it does, so a one-target route runs no fallback code and a route
without ``shape:`` no shape code.  Outermost first: ``answered`` (which target answered, noted once
the answer is judged), ``shape``, ``status`` (the answer's status mapped), ``fallback``, and
``upstream``, the exchange itself with resilience.  ``fallback`` is here; the others need the
proxy's credentials, metrics and status mapping, so gateway.proxy.targets builds them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import fallback as handover
from gateway.cache import Notes
from gateway.config import Route, Target
from gateway.mapping import target_request
from gateway.pipeline import wrap
from gateway.trace import RequestTrace
from gateway.upstream import UpstreamResponse, release


@dataclass(slots=True)
class Call:
    """One upstream call of a route as it passes the call-level stages."""

    params: Mapping[str, Any]
    request_id: str
    body: bytes | None = None
    #: query pairs added to the target's own (a collection's page parameters)
    extra_query: list[tuple[str, str]] = field(default_factory=list)
    #: a ``next_url`` page: a path and query below ``base_url`` to fetch instead of the target's own
    at: str | None = None
    #: a 2xx answer comes back unread (``resp.stream``), for the caller to relay and release
    stream: bool = False
    #: while a cache fill runs: the answering target's headers are appended (Cache-Control/Expires)
    notes: Notes | None = None
    #: ask that one target; where it hands over, ``fallback.HandOver`` says so (gateway.pipeline.collection)
    only: int | None = None
    #: that walk already has pages from ``only``: even the last target's misfit means it cannot go on there
    underway: bool = False
    trace: RequestTrace | None = None
    #: the target asked: set by ``fallback`` (to ``only`` where that is given); the first where there is no
    #: fallback stage, which is where only one target can be asked (a route of one target that pages one way)
    target: int = 0
    #: the upstream request headers, made once per call by the ``upstream`` step
    headers: dict[str, str] | None = None


#: one call in, the upstream's answer out
Send = Callable[[Call], Awaitable[UpstreamResponse]]
#: given a route and the next step: the wrapping step, or None where the stage does not apply
CallStage = Callable[[Route, Send], Send | None]


@dataclass(frozen=True, slots=True)
class CallPipeline:
    """A route's composed upstream call and the names of its stages (outermost first)."""

    route: str
    stages: tuple[str, ...]
    run: Send


def compose(route: Route, innermost: Send, stages: Sequence[tuple[str, CallStage]], name: str) -> CallPipeline:
    """Wrap ``innermost`` in each stage that applies to ``route``; ``stages`` is listed outermost first."""
    step, names = wrap(route, innermost, stages, name)
    return CallPipeline(route.name, names, step)


def fallback(route: Route, inner: Send) -> Send | None:
    """Each target in order; what the route's ``fallback_on`` names hands over to the next (gateway.fallback).

    Only where there is a next target, or a target pages its own way (a walk pinned to it judges even
    the last target's misfit, ``Call.underway``); the answer that does not hand over is judged by the
    stages outside this one."""
    if len(route.targets) < 2 and not route.mixed_paging:
        return None
    last = len(route.targets) - 1

    async def fall_back(call: Call) -> UpstreamResponse:
        if call.at is not None and call.only is None:
            gave = _link_target(route, call)
            if gave is not None:  # a next link is followed on the target that gave it, and judged as it answers
                call.target = gave
                return await inner(call)
        for index in range(len(route.targets)) if call.only is None else (call.only,):
            call.target = index
            resp = await inner(call)
            if (index < last or (call.only is not None and call.underway)) and handover.hands_over(route, resp, index):
                if resp.stream is not None:
                    await release(resp.stream)
                if call.only is not None:
                    raise handover.HandOver(index)
                continue
            return resp
        raise AssertionError("routes have at least one target")

    return fall_back


def _link_target(route: Route, call: Call) -> int | None:
    """The target whose path a next link (``Call.at``) is below: a walk handed over to a later target
    goes on there, not on the first target, whose path the link is not (None: no target's)."""
    assert call.at is not None
    for index, target in enumerate(route.targets):
        if link_below(call.at, target, call.params):
            return index
    return None


def link_below(link: str, target: Target, params: Mapping[str, Any]) -> bool:
    """A next link's path is the target's own (a trailing slash aside): the only links followed, or
    accepted in a cursor."""
    return link.partition("?")[0].rstrip("/") == target_request(target, params)[0].rstrip("/")
