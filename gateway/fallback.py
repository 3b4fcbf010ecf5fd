"""When one target's answer hands a request over to the next (``fallback_on`` in routes.yaml).

Migrations are the point: the operator declares the upstream's new route *beside* the old
one before the upstream switches, and the switch is seamless whatever way the old route
breaks: a 404/410 (the default), a 400 once the old route no longer understands the query,
or ``shape``, an answer that is not what the route reads (its ``shape:`` check fails, or the
JSON is not the expected kind, e.g. ``{"results": [...]}`` where a bare array was expected).
The ``fallback`` call stage (gateway.pipeline.calls) asks this of every answer but the last
target's, and exists only on routes with another target to hand over to; the answer that does
not hand over is judged the usual way, by the ``status`` and ``shape`` stages outside it.
"""

from __future__ import annotations

from typing import Any

from gateway import jsonio
from gateway.config import Route
from gateway.mapping import ShapeDrift
from gateway.pagination.common import dig
from gateway.shape import check_fields, check_response, json_type
from gateway.upstream import UpstreamResponse


def hands_over(route: Route, resp: UpstreamResponse, index: int = 0) -> bool:
    """Whether ``resp`` (from target ``index``, not the last) sends the request on to the next target."""
    if resp.status in route.fallback_on:
        return True
    return "shape" in route.fallback_on and misfit(route, resp, index) is not None


class HandOver(Exception):
    """A collection walk pinned to one target (``Route.mixed_paging``) found that target handing over:
    the walk, not the target loop, moves on (each target pages its own way)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def misfit(route: Route, resp: UpstreamResponse, index: int = 0) -> str | None:
    """Why a successful answer of target ``index`` is not what the route reads (None: it fits, or
    it is not a success); a collection's list is looked for where that target pages it."""
    status = resp.status
    reported = resp.location is not None
    if status in (204, 304) or (status >= 300 and not reported):
        return None  # nothing to judge, or an error status (fallback_on lists those by number)
    try:
        if route.shape is not None:
            check_response(route.shape, status, resp.headers.get("Content-Type", ""), reported, route.name)
        if route.response.raw or reported:
            return None
        try:
            data = jsonio.loads(resp.body)
        except (ValueError, UnicodeDecodeError):
            return "the answer is not JSON"
        sample: Any = data
        pag = route.paging(index)
        if pag is not None:
            sample = dig(data, pag.items_path)
            if not isinstance(sample, list):
                where = ".".join(pag.items_path) or "the body"
                return f"no list at {where!r} (the answer is {json_type(data)})"
            sample = sample[0] if sample else None
        elif route.response.item is not None and not isinstance(data, dict):
            return f"the answer is {json_type(data)} where an object was expected"
        if route.shape is not None and sample is not None:
            check_fields(route.shape, sample, route.name)
    except ShapeDrift as exc:
        return exc.message
    return None
