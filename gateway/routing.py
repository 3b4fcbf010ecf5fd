"""Stable method + path → route, matched on the raw (still percent-encoded) path.

Matching the raw path segment by segment, and decoding each segment only after it
has been split off, is what keeps ``%2F``, ``%2e%2e`` and friends from ever turning
one segment into two: a path parameter is always exactly one segment, and values
that could change the upstream path (``/``, ``\\``, ``.``, ``..``, control
characters) are refused with a 400 before anything is forwarded.

The routes live in a tree with one level per path segment (a radix tree over whole
segments, as httprouter builds): at each level the literal child is tried first,
then the parameter child, and the method is looked up last, at the leaf. A match
therefore costs a few dict lookups per segment of the *request*, however many
routes the file declares: 2,000 routes route as fast as 10 (docs/performance.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from urllib.parse import unquote

from gateway.config import Route
from gateway.errors import BadRequest, MethodNotAllowed, NotFound

_FORBIDDEN = frozenset(chr(c) for c in range(32)) | {"\x7f", "/", "\\"}


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    path_params: dict[str, str]


@dataclass(slots=True)
class _Node:
    """One path position: literal children by decoded segment, one parameter child, routes by method."""

    literals: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    #: method → (route, its parameters as (segment index, name)), for paths ending here
    methods: dict[str, tuple[Route, tuple[tuple[int, str], ...]]] = field(default_factory=dict)


class Router:
    """A segment tree over the stable paths: literal first, then parameter, method last."""

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self._root = _Node()
        #: all-literal paths, whole: the walk would reach them first anyway, this is one lookup instead
        self._static: dict[tuple[str, ...], dict[str, Route]] = {}
        for r in routes:
            node = self._root
            params: list[tuple[int, str]] = []
            for i, seg in enumerate(r.path.segments):
                if seg.is_single_param:
                    params.append((i, seg.parts[0][1]))
                    if node.param is None:
                        node.param = _Node()
                    node = node.param
                else:
                    node = node.literals.setdefault(seg.raw, _Node())
            # the first declared wins a tie; config's overlap check refuses a file that has one
            node.methods.setdefault(r.method, (r, tuple(params)))
            if not params:
                self._static.setdefault(tuple(s.raw for s in r.path.segments), {}).setdefault(r.method, r)
        #: the same, by the whole path as a request without a '%' spells it (no split, no tuple), each with
        #: its match made once: a static route has no parameters, so every request's match is the same
        self._static_text = {
            "/" + "/".join(segs): {method: Match(route, {}) for method, route in methods.items()}
            for segs, methods in self._static.items()
        }

    def match(self, method: str, raw_path: str) -> Match:
        """Find the route, or raise NotFound / MethodNotAllowed (with ``Allow``) / BadRequest."""
        return self._match(method, raw_path, [0])

    def steps(self, method: str, raw_path: str) -> int:
        """Tree nodes one match visits (whatever it answers): what the routing cost grows with."""
        counter = [0]
        with contextlib.suppress(BadRequest, MethodNotAllowed, NotFound):
            self._match(method, raw_path, counter)
        return counter[0]

    def _match(self, method: str, raw_path: str, counter: list[int]) -> Match:
        path = raw_path.split("?", 1)[0]
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]
        lookup = "GET" if method == "HEAD" else method
        if "%" not in path:  # nothing to decode: the path is its segments joined
            made = self._static_text.get(path)
            if made is not None and lookup in made:
                counter[0] += 1
                return made[lookup]
        raw_segments = path[1:].split("/") if path not in ("", "/") else []
        try:  # (no '%': nothing to unquote, and a call per segment saved)
            segments = [unquote(s, errors="strict") for s in raw_segments] if "%" in path else raw_segments
        except UnicodeDecodeError:
            raise BadRequest("the path is not valid percent-encoded UTF-8", code="bad_path") from None
        counter[0] += 1
        static = self._static.get(tuple(segments))
        if static is not None and lookup in static:
            return Match(static[lookup], {})
        allowed: set[str] = set()
        found = _walk(self._root, segments, 0, lookup, allowed, counter)
        if found is not None:
            route, positions = found
            params = {name: segments[i] for i, name in positions}
            for name, value in params.items():
                _check_param(route, name, value)
            return Match(route, params)
        if allowed:
            allow = sorted(allowed | ({"HEAD"} if "GET" in allowed else set()))
            raise MethodNotAllowed(
                f"{method} is not allowed here; allowed: {', '.join(allow)}",
                headers={"Allow": ", ".join(allow)},
            )
        raise NotFound(f"no stable route matches {method} {path or '/'}", code="no_route")


def _walk(
    node: _Node,
    segments: list[str],
    i: int,
    method: str,
    allowed: set[str],
    counter: list[int],
) -> tuple[Route, tuple[tuple[int, str], ...]] | None:
    """Depth-first, literal before parameter; every path-matching leaf without ``method`` adds to ``allowed``.

    The recursion is as deep as the tree (the longest stable path), never as deep as the
    request's path: a node without children ends the walk.
    """
    counter[0] += 1
    if i == len(segments):
        if node.methods:
            hit = node.methods.get(method)
            if hit is not None:
                return hit
            allowed.update(node.methods)
        return None
    child = node.literals.get(segments[i])
    if child is not None:
        hit = _walk(child, segments, i + 1, method, allowed, counter)
        if hit is not None:
            return hit
    if node.param is not None:
        return _walk(node.param, segments, i + 1, method, allowed, counter)
    return None


def _check_param(route: Route, name: str, value: str) -> None:
    if value in ("", ".", "..") or any(ch in _FORBIDDEN for ch in value):
        raise BadRequest(
            f"path parameter {name!r} must be one plain path segment (no '/', '\\', '.', '..' or control characters)",
            code="bad_path_param",
            route=route.name,
        )
