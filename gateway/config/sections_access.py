"""Section parsers for ``clients:``/``admin:`` keys, probes, shapes, and the cross-route checks."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from gateway.config.model import (
    DEFAULT_FALLBACK_ON,
    ClientKey,
    Pagination,
    ParamSpec,
    PathTemplate,
    ProbeSample,
    ProbeSettings,
    ProbeSpec,
    RateLimit,
    ResponseSpec,
    Route,
    ShapeSpec,
    Target,
)
from gateway.config.node import _closest, _Ctx, _Node
from gateway.config.schema import validate
from gateway.config.sections_server import secret_of
from gateway.config.spec_access import AdminSpec, ClientKeySpec, ClientsSpec, RateLimitSpec
from gateway.config.spec_route import ProbeFromSpec
from gateway.config.spec_route import ProbeSpec as ProbeSpecModel
from gateway.config.spec_route import ShapeSpec as ShapeSpecModel
from gateway.config.spec_server import ProbesSpec
from gateway.config.values import _NAME


def _keys(node: _Node | None, routes: list[str] | None) -> tuple[ClientKey, ...]:
    """``clients:`` (with per-key routes/methods; ``routes`` names every route of the file) or ``admin:``
    (keys only): keys and types by their pydantic models; here key names and the routes a grant names."""
    if node is None:
        return ()
    spec: ClientsSpec | AdminSpec | None
    spec = validate(node, ClientsSpec, partial=True) if routes is not None else validate(node, AdminSpec, partial=True)
    keys_node = node.get("keys")
    for name, kn in keys_node.items() if keys_node is not None else ():
        if not _NAME.match(name):
            kn.error("key names use letters, digits, '_', '-' and '.'")
    if spec is None or keys_node is None:
        return ()
    out: list[ClientKey] = []
    for name, key in spec.keys.items():
        kn = keys_node.child(name)
        if not isinstance(key, ClientKeySpec):  # an admin key: no grants
            out.append(ClientKey(name, secret_of(key.key), (), None, None))
            continue
        for g in key.routes or ():
            if not fnmatch.filter(routes or [], g):
                kn.child("routes").error(f"{g!r} matches no route")
        methods = frozenset(key.methods) | ({"HEAD"} if "GET" in key.methods else set()) if key.methods else None
        out.append(ClientKey(name, secret_of(key.key), tuple(key.routes or ()), methods, _rate_limit(key, kn)))
    return tuple(out)


def _rate_limit(key: ClientKeySpec, node: _Node) -> RateLimit | None:
    """``10/s``, ``600/1m`` (bursts of the full count) or ``{requests: 600, per: 1m, burst: 20}``."""
    limit = key.rate_limit
    if limit is None:
        return None
    written = node.value["rate_limit"]
    if isinstance(limit, RateLimitSpec):
        burst = limit.burst if limit.burst is not None else limit.requests
        return RateLimit(rate=limit.requests / limit.per, burst=burst, text=f"{limit.requests}/{written['per']}")
    count, per = limit
    return RateLimit(rate=count / per, burst=count, text=str(written))


def _check_route_overlaps(ctx: _Ctx, routes: list[Route]) -> None:
    """Two routes answering the same method and path shape would shadow each other."""
    seen: dict[tuple[str, tuple[str, ...]], Route] = {}
    for r in routes:
        shape = tuple("{}" if seg.names else seg.raw for seg in r.path.segments)
        key = (r.method, shape)
        if key in seen:
            other = seen[key]
            ctx.add(
                r.line,
                f"routes.{r.name}.stable",
                f"{r.stable} shadows route {other.name!r} ({other.stable}, line {other.line}); one of them must change",
            )
        else:
            seen[key] = r


def _probe(
    node: _Node | None,
    method: str | None,
    path: PathTemplate | None,
    params: tuple[ParamSpec, ...],
    pagination: Pagination | None,
) -> ProbeSpec | None:
    """``probe: true`` or ``probe: {params: {name: value | {from: ROUTE, field: F}}}``: keys and types by
    its pydantic model; here what spans the route: a GET, a sample for each path param, no unknown param."""
    if node is None or node.value is False or path is None:  # no path: reported at `stable`, not here too
        return None
    if method is not None and method != "GET":
        node.error(f"a probe sends a safe GET; this route answers {method}")
        return None
    values: dict[str, tuple[str | ProbeSample, _Node]] = {}
    if node.value is not True:
        spec = validate(node, ProbeSpecModel, partial=True)  # a wrong sample is left out, the others checked
        if spec is None or set(node.value) - spec.model_fields_set:  # a misspelt key: no follow-on noise
            return None
        for name, value in (spec.params or {}).items():
            vn = node.child("params").child(name)
            values[name] = (_probe_value(value, vn), vn)
    path_names = path.names if path is not None else frozenset()
    query_names = {p.name for p in params} | ({"limit"} if pagination is not None else set())
    for name in sorted(path_names - set(values)):
        node.error(f"the probe needs a sample value for path param {name!r} (under 'params')")
    for name, (_, vn) in values.items():
        if name not in path_names and name not in query_names:
            allowed = ", ".join(sorted(path_names | query_names)) or "none"
            vn.error(f"{name!r} is neither a path param nor a query param of this route; allowed: {allowed}")
    path_params = tuple((k, v) for k, (v, _) in values.items() if k in path_names)
    query = [(k, v) for k, (v, _) in values.items() if k not in path_names]
    if pagination is not None and "limit" not in values:
        query.append(("limit", "1"))  # one item is enough to check a collection's shape
    return ProbeSpec(path_params, tuple(query), node.line)


def _probe_value(value: str | float | bool | ProbeFromSpec, node: _Node) -> str | ProbeSample:
    if isinstance(value, ProbeFromSpec):
        return ProbeSample(value.from_, tuple(value.field.split(".")), node.line)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_probe_samples(routes_node: _Node | None, routes: list[Route]) -> None:
    """``from:`` must name another probed route, and samples may not go round in a circle."""
    if routes_node is None or routes_node.ctx.problems:
        return
    ctx = routes_node.ctx
    by_name = {r.name: r for r in routes}
    for r in routes:
        if r.probe is None:
            continue
        for name, value in (*r.probe.path_params, *r.probe.query):
            if not isinstance(value, ProbeSample):
                continue
            key = f"routes.{r.name}.probe.params.{name}.from"
            other = by_name.get(value.route)
            if other is None:
                hint = _closest(value.route, set(by_name) - {r.name})
                suggestion = f" (did you mean {hint!r}?)" if hint else ""
                ctx.add(value.line, key, f"no route named {value.route!r}{suggestion}")
            elif other.probe is None:
                ctx.add(value.line, key, f"route {value.route!r} has no probe to take a sample from")
            elif other.name == r.name:
                ctx.add(value.line, key, "a probe cannot take a sample from itself")
    if ctx.problems:
        return
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name) :], name]
            route = by_name[name]
            line = route.probe.line if route.probe else route.line
            ctx.add(line, f"routes.{name}.probe", f"probe samples go round in a circle: {' → '.join(cycle)}")
            return
        state[name] = 1
        probe = by_name[name].probe
        for dep in sorted(probe.depends_on if probe else ()):
            visit(dep, [*trail, name])
        state[name] = 2

    for r in routes:
        if r.probe is not None:
            visit(r.name, [])


def _shape(node: _Node | None, response: ResponseSpec, targets: list[Target]) -> ShapeSpec | None:
    """``shape: {status: 200, content_type: application/json, fields: {id: string, version: integer}}``:
    keys and types by its pydantic model; here whether the route has a body whose fields can be checked."""
    if node is None:
        return None
    spec = validate(node, ShapeSpecModel, partial=True)
    if spec is None:
        return None
    kw: dict[str, Any] = {}
    if spec.status is not None:
        kw["status"] = spec.status
    if spec.content_type is not None:
        kw["content_type"] = spec.content_type.strip().lower()
    if spec.fields is not None:
        if response.raw:
            node.child("fields").error("a raw response is passed through unparsed; its fields cannot be checked")
        elif any(t.redirect == "report" for t in targets):
            node.child("fields").error(
                "this route answers from a redirect's Location; there is no body whose fields to check"
            )
        kw["fields"] = tuple(
            (tuple(name.split(".")), frozenset(kinds.split("|") if isinstance(kinds, str) else kinds))
            for name, kinds in spec.fields.items()
        )
    return ShapeSpec(**kw)


def _fallback_on(
    node: _Node | None,
    spec: Sequence[int | str] | None,
    targets: int,
    response: ResponseSpec,
    shape: ShapeSpec | None,
) -> frozenset[int | str]:
    """``fallback_on: [404, 410, 400, shape]`` (its entries read by ``RouteSpec``): what hands a request
    over to the next target; here what spans the route: a next target, and a shape to judge by."""
    if node is None:
        return DEFAULT_FALLBACK_ON
    for i, value in enumerate(spec or ()):
        if value == "shape" and response.raw and shape is None:
            node.child(i).error(
                "a raw response is passed through unchecked; declare 'shape:' for 'shape' to mean anything"
            )
    if targets == 1:
        node.error("the route has one target: there is no next target to hand over to")
    return frozenset(spec or ())


def _probe_settings(node: _Node | None) -> ProbeSettings:
    """The root ``probes:`` section: how often and how many at once the background prober runs."""
    spec = validate(node, ProbesSpec) if node is not None else None
    return ProbeSettings(**spec.model_dump()) if spec is not None else ProbeSettings()
