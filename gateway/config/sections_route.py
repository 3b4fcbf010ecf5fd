"""One ``routes:`` entry: its own keys by ``RouteEntrySpec``, its params and targets each by its model,
then what spans the route (the params a template names, the upstream it names, pagination vs params)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any, Literal

from gateway.config.model import BodySpec, Pagination, ParamSpec, PathTemplate, Route, Target, Template
from gateway.config.model_upstream import Upstream
from gateway.config.names import OWN_PATHS
from gateway.config.node import _closest, _kind, _Node
from gateway.config.schema import required_of, validate
from gateway.config.sections_access import _fallback_on, _probe, _shape
from gateway.config.sections_response import _pagination, _plain, _response
from gateway.config.sections_server import _route_cache
from gateway.config.spec_calls import TargetSpec
from gateway.config.spec_entry import RouteEntrySpec
from gateway.config.spec_route import ParamSpec as ParamSpecModel
from gateway.config.spec_route import RouteSpec
from gateway.config.values import _ENV_REF, _NAME, _PARAM, parse_path, parse_request_line, parse_template

#: told where a target's query string takes a value from the environment (the value is never echoed)
_SECRET_IN_QUERY = (
    "a target's query string cannot take a value from the environment (${{{name}}}): credentials never go in "
    "URLs (they would show in /status, `routegate routes` and upstream logs); send it with the upstream's auth:"
)


def _stable_line(node: _Node, text: str) -> tuple[str, str] | None:
    """``METHOD /path`` (a route's stable line, a plain target), told as a target mapping's model tells it."""
    try:
        return parse_request_line(text)
    except ValueError as exc:
        node.error(str(exc))
        return None


def _check_path_template(node: _Node, tpl: PathTemplate, stable: bool) -> None:
    for seg in tpl.segments:
        text = seg.raw
        if "{" in _PARAM.sub("", text) or "}" in _PARAM.sub("", text):
            node.error(f"malformed placeholder in path segment {text!r}")
        if stable and seg.names and not seg.is_single_param:
            node.error(f"a stable path segment must be all literal or one {{param}}, got {text!r}")
        if text in (".", ".."):
            node.error("paths cannot contain '.' or '..' segments")


def _check_stable_path(node: _Node, raw: str, tpl: PathTemplate) -> None:
    """A stable path the gateway could never serve: its own endpoint, a query, a placeholder twice."""
    if "?" in raw or "#" in raw:
        node.error(
            "a stable path cannot carry a query or fragment (it would never match): "
            "declare query params under 'params:'"
        )
        return
    if raw in OWN_PATHS or (raw.rstrip("/") or "/") in OWN_PATHS:
        node.error(f"{raw} is the gateway's own endpoint (answered before any route): choose another path")
    seen: set[str] = set()
    for seg in tpl.segments:
        for name in seg.names:
            if name in seen:
                node.error(f"placeholder {{{name}}} appears twice in the stable path: give each its own name")
                return
            seen.add(name)


def _check_query_secrets(node: _Node, raw: str | None) -> None:
    """A ``${VAR}`` written in a target's query (its text as written, before interpolation)."""
    if raw is None:
        return
    m = _ENV_REF.search(raw)
    if m is not None:
        node.error(_SECRET_IN_QUERY.format(name=m.group(1)))


def _route(name: str, node: _Node, upstreams: dict[str, Upstream], root: _Node) -> Route | None:
    """A route: its own keys by ``RouteEntrySpec``, each section by its own model, then what spans them."""
    ctx = node.ctx
    problems_before = len(ctx.problems)  # an earlier route's problem must not drop this one
    if not _NAME.match(name):
        node.error("route names use letters, digits, '_', '-' and '.' (they become metric labels)")
    spec = validate(node, RouteEntrySpec, partial=True, required=required_of(RouteSpec))
    if spec is None:  # not a mapping
        return None
    method = path_raw = None
    if spec.stable is not None:
        method, path_raw = parse_request_line(spec.stable)
    stable_path = parse_path(path_raw) if path_raw else None
    if stable_path is not None and path_raw is not None:
        _check_path_template(node.child("stable"), stable_path, stable=True)
        _check_stable_path(node.child("stable"), path_raw, stable_path)
    if spec.upstream is not None:
        all_declared = root.get("upstreams")
        declared = set(all_declared.value) if all_declared and isinstance(all_declared.value, dict) else set()
        if spec.upstream not in declared:
            hint = _closest(spec.upstream, declared)
            node.child("upstream").error(
                f"no upstream named {spec.upstream!r}" + (f" (did you mean {hint!r}?)" if hint else "")
            )
    auth = spec.auth not in ("none", False)
    params_node = node.get("params")
    params = _params(params_node, stable_path)
    path_names = stable_path.names if stable_path else _names_in(node.get("stable"))
    # a param with a mistake is reported there; the targets and mappings naming it are not wrong too
    declared = set(params_node.value) if params_node is not None and isinstance(params_node.value, dict) else set()
    known = path_names | {p.name for p in params} | declared
    pagination_node = node.get("pagination")
    pagination = _pagination(pagination_node)
    # a pagination section with a mistake is reported where it is wrong; the rest of the route is
    # checked as the collection it was meant to be, not flagged again for having no pagination
    paged = pagination if pagination is not None or pagination_node is None else _SOME_PAGINATION
    if paged is not None:
        reserved = {"limit", "cursor", "all"} & {p.name for p in params}
        for r in sorted(reserved):
            node.error(f"param {r!r} is reserved for pagination on collections")
    fan = [p for p in params if p.fan_out]
    if len(fan) > 1 and params_node is not None:
        params_node.child(fan[1].name).child("fan_out").error("at most one param may fan out")
    if fan and (pagination_node is None or (pagination is not None and pagination.style != "before")):
        where = params_node.child(fan[0].name).child("fan_out") if params_node is not None else node
        where.error("fan_out merges streams by their 'before' field; it needs pagination style 'before'")
    targets: list[Target] = []
    for i in range(len(spec.targets or ())):
        t = _target(node.child("targets").child(i), known, method or "GET", paged, fan)
        if t is not None:
            targets.append(t)
    response = _response(node.get("response"), known, paged)
    cache = _route_cache(node.get("cache"), method, root)
    probe = _probe(node.get("probe"), method, stable_path, params, paged)
    shape = _shape(node.get("shape"), response, targets)
    fallback_on = _fallback_on(node.get("fallback_on"), spec.fallback_on, len(targets), response, shape)
    if len(ctx.problems) > problems_before or method is None or stable_path is None or spec.upstream is None:
        return None
    return Route(
        name=name,
        method=method,
        path=stable_path,
        upstream=spec.upstream,
        auth=auth,
        params=params,
        targets=tuple(targets),
        pagination=pagination,
        response=response,
        validate=spec.validate_,
        description=spec.description or "",
        line=node.line,
        cache=cache,
        probe=probe,
        shape=shape,
        fallback_on=fallback_on,
        no_store=bool(spec.no_store),
    )


def _names_in(stable: _Node | None) -> frozenset[str]:
    """The {names} of a ``stable:`` line that did not parse, so its targets are not flagged for using them."""
    text = stable.value if stable is not None and isinstance(stable.value, str) else ""
    return frozenset(re.findall(r"\{(\w+)\}", text))


#: stands in for a route's pagination section that has a mistake, while the rest of the route is checked
_SOME_PAGINATION = Pagination(style="offset", items_path=("results",))


def _params(node: _Node | None, path: PathTemplate | None) -> tuple[ParamSpec, ...]:
    """The ``params:`` section: each one's keys and types by its pydantic model (gateway.config.schema
    reports them at their line), then what a model cannot say: a default of the param's own type and enum."""
    if node is None or not isinstance(node.value, dict):  # not a mapping: told by the route's model
        return ()
    out: list[ParamSpec] = []
    path_names = path.names if path else frozenset()
    for name, pn in node.items():
        if name in path_names:
            pn.error(f"{name!r} is a path parameter already")
            continue
        if pn.value is None:
            out.append(ParamSpec(name))
            continue
        spec = validate(pn, ParamSpecModel, partial=True)
        if spec is None:
            continue
        kw: dict[str, Any] = {"name": name, "type": spec.type or "string"}
        if spec.enum is not None:
            kw["enum"] = tuple(str(x) for x in spec.enum)
        kw["fan_out"] = bool(spec.fan_out)
        kw["required"] = bool(spec.required)
        kw["description"] = spec.description or ""
        if (d := pn.get("default")) is not None:
            kw["default"] = d.value
            kind = kw["type"]
            fits = {
                "integer": isinstance(d.value, int) and not isinstance(d.value, bool),
                "boolean": isinstance(d.value, bool),
                "string": isinstance(d.value, str | int | float) and not isinstance(d.value, bool),
            }[kind]
            if not fits:
                d.error(f"default {d.value!r} is not {'an' if kind == 'integer' else 'a'} {kind}, the param's type")
            elif kw.get("enum") and str(d.value) not in kw["enum"]:
                d.error(f"default {d.value!r} is not one of the enum values")
        out.append(ParamSpec(**kw))
    return tuple(out)


#: the stable side of a collection (what clients send) is the route's, whichever target answers
_ROUTE_ONLY_PAGING = ("default_limit", "max_limit", "max_items")


def _target_pagination(node: _Node, paged: Pagination | None, fan: list[ParamSpec]) -> Pagination | None:
    """A target's own ``pagination:`` (a list moving to a new shape beside the old one)."""
    if paged is None:
        node.error("only a collection's targets page: give the route a 'pagination:' first")
        return None
    for key in _ROUTE_ONLY_PAGING:
        if isinstance(node.value, dict) and key in node.value:
            node.child(key).error(f"{key} is the route's (what clients send); set it in the route's 'pagination:'")
    own = _pagination(node)
    if own is not None and fan and own.style != "before":
        node.child("style").error("fan_out merges streams by their 'before' field; it needs pagination style 'before'")
    if own is None:
        return None
    return replace(own, default_limit=paged.default_limit, max_limit=paged.max_limit, max_items=paged.max_items)


def _target(
    node: _Node,
    known: frozenset[str],
    stable_method: str,
    paged: Pagination | None = None,
    fan: list[ParamSpec] | None = None,
) -> Target | None:
    """A target: its keys and types by its pydantic model (the request line, body and redirect too), then
    what spans the route: the params its templates name, and its pagination against the route's."""
    raw = node.value
    spec: TargetSpec | None = None
    if isinstance(raw, str):
        request_node, request = node, raw
    elif isinstance(raw, dict):
        spec = validate(node, TargetSpec, hand={"pagination"}, partial=True)
        if spec is None or len(spec.model_fields_set) < len(raw) - ("pagination" in raw):
            return None  # a key the model refused is reported already
        request_node, request = node.child("request"), spec.request
    else:
        node.error(f"expected 'METHOD /path' or a mapping with 'request', got {_kind(raw)}")
        return None
    path_part, _, query_part = request.partition("?")
    written = node.ctx.interpolated.get(request_node.path)
    _check_query_secrets(request_node, written.partition("?")[2] if written is not None else None)
    parsed = _stable_line(request_node, path_part)
    if parsed is None:
        return None
    method, path_raw = parsed
    path = parse_path(path_raw)
    _check_path_template(request_node, path, stable=False)
    query: list[tuple[str, Template]] = []
    if query_part:
        for pair in query_part.split("&"):
            k, _, v = pair.partition("=")
            query.append((k, parse_template(v)))
    redirect: Literal["follow", "report"] = "follow"
    pagination: Pagination | None = None
    writes = method in ("POST", "PUT", "PATCH") and stable_method in ("POST", "PUT", "PATCH")
    body = BodySpec("passthrough" if writes else "none")
    if spec is not None:
        query += [(k, parse_template(str(v))) for k, v in (spec.query or {}).items()]
        if (qn := node.get("query")) is not None:
            for k, _ in qn.items():
                _check_query_secrets(qn.child(k), node.ctx.interpolated.get(qn.child(k).path))
        redirect = spec.redirect or redirect
        if isinstance(spec.body, str):
            body = BodySpec(spec.body)
        elif spec.body is not None:
            body = BodySpec("const", json.dumps(_plain(spec.body.const), separators=(",", ":")).encode())
        if (pn := node.get("pagination")) is not None:
            pagination = _target_pagination(pn, paged, fan or [])
    for _, tpl in query:
        for name in sorted(tpl.names - known):
            request_node.error(f"query template uses {{{name}}}, which is neither a path nor a declared param")
    for name in sorted(path.names - known):
        request_node.error(f"path uses {{{name}}}, which is neither a path nor a declared param")
    return Target(method, path, tuple(query), body, redirect, node.line, pagination)
