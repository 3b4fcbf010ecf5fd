"""A route's expected upstream shape (``shape:`` in routes.yaml), checked on every answer.

The same check runs on live traffic and on contract probes, so a probe failing and
a script failing always mean the same thing.  A 200 whose JSON lost a required
field, or changed its type, or that is suddenly HTML, is a ``ShapeDrift`` (502,
``shape_drift``): a renamed upstream field must never hand scripts ``null``.
Status and media type are the ``shape`` call stage's (gateway.proxy.targets, only on routes
declaring a shape); fields are checked where the body is read (gateway.proxy.respond for one
entity, each item of a collection); fallback judges each target's answer by the same checks
first (gateway.fallback.misfit), so drift on a target with a successor hands over instead.
"""

from __future__ import annotations

from typing import Any

from gateway.config import ShapeSpec
from gateway.mapping import ShapeDrift

_MISSING = object()


def json_type(value: Any) -> str:
    """The JSON type name of a parsed value, as written in ``shape.fields``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def check_response(shape: ShapeSpec, status: int, content_type: str, has_location: bool, route: str) -> None:
    """Status and media type of one upstream answer that was not an error."""
    if status in (204, 304):
        return  # no body to judge; a revalidation's 304 stands for the answer it confirms
    if shape.status is not None and status != shape.status:
        raise ShapeDrift(
            f"upstream answered {status} where {shape.status} was expected",
            code="shape_drift",
            route=route,
        )
    if shape.content_type is not None and not has_location:
        got = content_type.split(";", 1)[0].strip().lower()
        if got != shape.content_type:
            raise ShapeDrift(
                f"upstream answered {got or 'no content type'} where {shape.content_type} was expected",
                code="shape_drift",
                route=route,
            )


def check_fields(shape: ShapeSpec, obj: Any, route: str) -> None:
    """Every declared field is present in ``obj`` with one of its declared JSON types."""
    if not shape.fields:
        return
    if not isinstance(obj, dict):
        raise ShapeDrift(
            f"upstream returned {json_type(obj)} where an object was expected", code="shape_drift", route=route
        )
    for path, kinds in shape.fields:
        value: Any = obj
        for part in path:
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
            if value is _MISSING:
                break
        name = ".".join(path)
        if value is _MISSING:
            raise ShapeDrift(f"upstream response lost field {name!r}", code="shape_drift", route=route)
        got = json_type(value)
        if "any" not in kinds and got not in kinds and not (got == "integer" and "number" in kinds):
            raise ShapeDrift(
                f"upstream field {name!r} is {got}, expected {'|'.join(sorted(kinds))}",
                code="shape_drift",
                route=route,
            )


def check_body(shape: ShapeSpec, data: Any, route: str) -> None:
    """``check_fields`` on an object, or on each element of a JSON array answer."""
    if isinstance(data, list):
        for item in data:
            check_fields(shape, item, route)
    else:
        check_fields(shape, data, route)
