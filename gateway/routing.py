"""Stable method + path → route, matched on the raw (still percent-encoded) path.

Matching the raw path segment by segment, and decoding each segment only after it
has been split off, is what keeps ``%2F``, ``%2e%2e`` and friends from ever turning
one segment into two: a path parameter is always exactly one segment, and values
that could change the upstream path (``/``, ``\\``, ``.``, ``..``, control
characters) are refused with a 400 before anything is forwarded.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import unquote

from gateway.config import Route
from gateway.errors import BadRequest, MethodNotAllowed, NotFound

_FORBIDDEN = frozenset(chr(c) for c in range(32)) | {"\x7f", "/", "\\"}


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    path_params: dict[str, str]


class Router:
    """Routes grouped by segment count; literal-only routes also get a dict lookup."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self._static: dict[tuple[str, ...], dict[str, Route]] = defaultdict(dict)
        self._dynamic: dict[int, list[Route]] = defaultdict(list)
        for r in routes:
            if r.path.names:
                self._dynamic[len(r.path.segments)].append(r)
            else:
                key = tuple(seg.raw for seg in r.path.segments)
                self._static[key][r.method] = r

    def match(self, method: str, raw_path: str) -> Match:
        """Find the route, or raise NotFound / MethodNotAllowed (with ``Allow``) / BadRequest."""
        path = raw_path.split("?", 1)[0]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        raw_segments = path[1:].split("/") if path not in ("", "/") else []
        try:
            segments = [unquote(s, errors="strict") for s in raw_segments]
        except UnicodeDecodeError:
            raise BadRequest("the path is not valid percent-encoded UTF-8", code="bad_path") from None
        lookup = "GET" if method == "HEAD" else method
        allowed: list[str] = []
        static = self._static.get(tuple(segments))
        if static:
            if lookup in static:
                return Match(static[lookup], {})
            allowed.extend(static)
        for route in self._dynamic.get(len(segments), ()):
            params = _match_segments(route, segments)
            if params is None:
                continue
            if route.method != lookup:
                allowed.append(route.method)
                continue
            for name, value in params.items():
                _check_param(route, name, value)
            return Match(route, params)
        if allowed:
            allow = sorted(set(allowed) | ({"HEAD"} if "GET" in allowed else set()))
            raise MethodNotAllowed(
                f"{method} is not allowed here; allowed: {', '.join(allow)}",
                headers={"Allow": ", ".join(allow)},
            )
        raise NotFound(f"no stable route matches {method} {path or '/'}", code="no_route")


def _match_segments(route: Route, segments: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for tpl, seg in zip(route.path.segments, segments, strict=True):
        if tpl.is_single_param:
            params[tpl.parts[0][1]] = seg
        elif tpl.raw != seg:
            return None
    return params


def _check_param(route: Route, name: str, value: str) -> None:
    if value in ("", ".", "..") or any(ch in _FORBIDDEN for ch in value):
        raise BadRequest(
            f"path parameter {name!r} must be one plain path segment (no '/', '\\', '.', '..' or control characters)",
            code="bad_path_param",
            route=route.name,
        )
