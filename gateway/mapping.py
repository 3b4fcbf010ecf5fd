"""Request mapping (stable params → upstream path, query) and response mapping (fields).

Both directions are closed by default: only declared params reach the upstream, and
only declared fields reach the client.  That is what keeps the stable shape stable
when the upstream adds, renames or drops fields; a required field that vanished is a
502 ``shape_drift`` naming the field, never a silent ``null``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from multidict import MultiMapping
from yarl import URL

from gateway.config import FieldExpr, KeepOtherFields, ParamSpec, Route, Target, Template
from gateway.errors import BadGateway, BadRequest

#: query params every collection route understands on top of its own
PAGING_PARAMS = frozenset({"limit", "cursor", "all"})
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def parse_params(route: Route, query: MultiMapping[str], path_params: Mapping[str, str]) -> dict[str, Any]:
    """Validate the stable query against the route's declared params; 400 on anything off."""
    if not query and not route.params:
        return dict(path_params)  # most entity reads: nothing to check
    problems: list[str] = []
    allowed = {p.name for p in route.params} | (PAGING_PARAMS if route.pagination else set())
    unknown: list[str] = []
    for key in dict.fromkeys(query):  # each name once, however often it is repeated
        if key not in allowed:
            unknown.append(key)
        elif len(query.getall(key)) > 1 and not _is_list(route, key):
            problems.append(f"query parameter {key!r} is given more than once")
    if unknown:
        problems.insert(0, _unknown_params(unknown, allowed))
    out: dict[str, Any] = dict(path_params)
    for spec in route.params:
        # a list param comes comma-separated (`type=a,b`) or repeated (`type=a&type=b`, as generated clients send)
        raw = ",".join(query.getall(spec.name)) if spec.fan_out and spec.name in query else query.get(spec.name)
        if raw is None:
            if spec.required:
                problems.append(f"query parameter {spec.name!r} is required")
            out[spec.name] = [spec.default] if spec.fan_out and spec.default is not None else spec.default
            continue
        try:
            out[spec.name] = _convert(spec, raw)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise BadRequest("; ".join(problems), code="bad_query", route=route.name, details=problems)
    return out


def _is_list(route: Route, name: str) -> bool:
    spec = route.param(name)
    return spec is not None and spec.fan_out


#: unknown parameter names quoted in one 400 (1,500 of them made a 230 KB error body)
MAX_NAMED_UNKNOWN = 10


def _unknown_params(unknown: list[str], allowed: set[str]) -> str:
    """One problem for every unknown parameter: the first few named (each cut short), the rest counted."""
    shown = ", ".join(repr(k if len(k) <= 64 else k[:64] + "...") for k in unknown[:MAX_NAMED_UNKNOWN])
    more = f" and {len(unknown) - MAX_NAMED_UNKNOWN} more" if len(unknown) > MAX_NAMED_UNKNOWN else ""
    takes = f"; this route takes: {', '.join(sorted(allowed))}" if allowed else "; this route takes none"
    return f"unknown query parameter{'s' if len(unknown) > 1 else ''} {shown}{more}{takes}"


def _convert(spec: ParamSpec, raw: str) -> Any:
    if spec.fan_out:
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not values:
            raise ValueError(f"query parameter {spec.name!r} is empty")
        for v in values:
            _check_enum(spec, v)
        return list(dict.fromkeys(values))
    if spec.type == "integer":
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"query parameter {spec.name!r} must be an integer, got {raw!r}") from None
    if spec.type == "boolean":
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"query parameter {spec.name!r} must be true or false (or 1/0, yes/no), got {raw!r}")
    _check_enum(spec, raw)
    return raw


def _check_enum(spec: ParamSpec, value: str) -> None:
    if spec.enum is not None and value not in spec.enum:
        raise ValueError(f"query parameter {spec.name!r} must be one of {', '.join(spec.enum)}; got {value!r}")


def render(tpl: Template, params: Mapping[str, Any], *, segment: bool) -> str | None:
    """Fill a template.  ``None`` when it is one param that has no value (drop it)."""
    if tpl.is_single_param:
        value = params.get(tpl.parts[0][1])
        if value is None:
            return None
        text = _text(value)
        return quote(text, safe="") if segment else text
    out = []
    for is_param, text in tpl.parts:
        if is_param:
            value = params.get(text)
            piece = "" if value is None else _text(value)
            out.append(quote(piece, safe="") if segment else piece)
        else:
            out.append(text)
    return "".join(out)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def target_request(target: Target, params: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The upstream path (percent-encoded, one segment per param) and query pairs."""
    segs = []
    for seg in target.path.segments:
        text = render(seg, params, segment=True)
        segs.append(text or "")
    path = "/" + "/".join(segs)
    if target.path.raw.endswith("/") and segs:
        path += "/"
    query = []
    for name, tpl in target.query:
        value = render(tpl, params, segment=False)
        if value is not None:
            query.append((name, value))
    return path, query


def fixed_request(target: Target) -> tuple[str, list[tuple[str, str]]] | None:
    """The target's path and query where they take no parameter (made once, at load), else None."""
    templates = [*target.path.segments, *(tpl for _, tpl in target.query)]
    if any(is_param for tpl in templates for is_param, _ in tpl.parts):
        return None
    return target_request(target, {})


def _renamed(mapping: tuple[tuple[str, FieldExpr], ...]) -> frozenset[str]:
    """Upstream top-level fields a mapping takes whole (``updated_at: update_time`` renames update_time)."""
    return frozenset(e.path[0] for _, e in mapping if e.source == "field" and len(e.path) == 1)


class ShapeDrift(BadGateway):
    """A 200 whose JSON lost a field the stable API promises."""

    kind = "shape"


def apply_mapping(
    mapping: tuple[tuple[str, FieldExpr], ...],
    obj: Any,
    params: Mapping[str, Any],
    location: URL | None,
    route: str,
) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ShapeDrift(
            f"upstream returned {type(obj).__name__} where an object was expected",
            code="shape_drift",
            route=route,
        )
    out = {key: evaluate(expr, obj, params, location, route, key) for key, expr in mapping}
    if isinstance(mapping, KeepOtherFields):
        renamed = _renamed(mapping)
        rest = {k: v for k, v in obj.items() if k not in renamed and k not in out}
        return {**rest, **out}
    return out


_MISSING = object()


def evaluate(
    expr: FieldExpr,
    obj: Any,
    params: Mapping[str, Any],
    location: URL | None,
    route: str,
    key: str,
) -> Any:
    if expr.source == "field":
        value: Any = obj
        for part in expr.path:
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
            if value is _MISSING:
                break
        if value is _MISSING:
            if expr.optional:
                return None
            raise ShapeDrift(
                f"upstream response lost field {'.'.join(expr.path)!r} (stable field {key!r})",
                code="shape_drift",
                route=route,
            )
    elif expr.source == "param":
        value = params.get(expr.name)
    elif expr.source == "const":
        value = expr.value
    else:
        assert expr.pattern is not None
        m = expr.pattern.search(str(location)) if location is not None else None
        if m is None:
            if expr.optional:
                return None
            raise ShapeDrift(
                f"upstream redirect target {str(location)!r} does not match {expr.pattern.pattern!r}",
                code="shape_drift",
                route=route,
            )
        value = m.group(1)
    return _cast(expr, value, route, key)


def _cast(expr: FieldExpr, value: Any, route: str, key: str) -> Any:
    if expr.cast is None or value is None:
        return value
    try:
        if expr.cast == "int":
            return int(value)
        if expr.cast == "float":
            return float(value)
        if expr.cast == "bool":
            return bool(value)
        return str(value)
    except (TypeError, ValueError):
        raise ShapeDrift(
            f"upstream value for {key!r} is not {expr.cast}: {value!r}", code="shape_drift", route=route
        ) from None
