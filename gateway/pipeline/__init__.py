"""Each route's handler, composed once when a config loads (Lura's ``proxy/factory.go`` shape).

A stage wraps the next handler only where the route configures what the stage does, so a
request never asks "does this route validate, compress, ...?" again: a route without such a
feature runs none of its code.  ``Pipeline.stages`` names what was composed, outermost first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from gateway.config import Route
from gateway.routing import Match

#: one stable request in, its answer out
Handler = Callable[[web.Request, Match, str], Awaitable[web.StreamResponse]]
#: given a route and the next handler: the wrapping handler, or None where the stage does not apply
Stage = Callable[[Route, Handler], Handler | None]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A route's composed handler and the names of its stages (outermost first)."""

    route: str
    stages: tuple[str, ...]
    run: Handler


def build(route: Route, core: Handler, stages: Sequence[tuple[str, Stage]], core_name: str = "proxy") -> Pipeline:
    """Wrap ``core`` in each stage that applies to ``route``; ``stages`` is listed outermost first."""
    handler = core
    names = [core_name]
    for name, stage in reversed(stages):
        wrapped = stage(route, handler)
        if wrapped is not None:
            handler = wrapped
            names.append(name)
    return Pipeline(route.name, tuple(reversed(names)), handler)
