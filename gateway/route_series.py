"""``gateway serve --workers N``: the route health series as one process would export them.

Each worker keeps its own view of a route and writes ``gateway_route_up`` and
``gateway_route_failure_info{route, code}`` to its own multiprocess file; prometheus-client
merges each (route, code) series on its own (``livemostrecent``).  So two workers that saw
different failures both export their code at 1, and a code a worker cleared stays at 0:
RoutegateRouteDown, which joins the route's one code onto ``gateway_route_up``, then found
two codes for one route and failed for every route.  Merged here instead: a route whose most
recent ``gateway_route_up`` (any worker's) is 0 gets the one code some worker set most
recently; every other route gets no failure series, as in a single process.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable
from typing import Any

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.samples import Sample

UP = "gateway_route_up"
FAILURE = "gateway_route_failure_info"


def down_codes(paths: Iterable[str]) -> dict[str, str]:
    """Route -> the code it is down with, from the workers' ``livemostrecent`` gauge files."""
    up: dict[str, tuple[float, float]] = {}  # route -> (when written, value): the most recent write wins
    codes: dict[str, tuple[float, str]] = {}  # route -> (when set, code) of the most recent code set to 1
    for path in paths:
        try:
            values = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
        except FileNotFoundError:  # a dead worker's file, removed since the glob
            continue
        for key, value, when, _ in values:
            metric, _, labels, _ = json.loads(key)
            route = labels.get("route")
            if route is None:
                continue
            if metric == UP and (route not in up or when > up[route][0]):
                up[route] = (when, value)
            elif metric == FAILURE and value == 1 and (route not in codes or when > codes[route][0]):
                codes[route] = (when, labels["code"])
    return {route: codes[route][1] for route, (_, value) in up.items() if value == 0 and route in codes}


def merge(families: Iterable[Any], directory: str) -> None:
    """Rewrite the merged ``gateway_route_failure_info`` family in place: one code per down route, no others."""
    for family in families:
        if family.name == FAILURE:
            codes = down_codes(glob.glob(os.path.join(directory, "gauge_livemostrecent_*.db")))
            family.samples = [
                Sample(FAILURE, {"code": code, "route": route}, 1.0) for route, code in sorted(codes.items())
            ]
