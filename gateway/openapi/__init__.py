"""routes.yaml → an OpenAPI 3.1 document of the stable API (``GET /openapi.json``, ``gateway openapi``).

Generated from the loaded config, never written by hand, so it cannot drift from
what the gateway enforces: path parameters are one plain segment (what the router
accepts), query parameters are exactly the declared ones, item schemas come from the
response mappings (every mapped field is always present; ``additionalProperties``
is false because the gateway passes on nothing else), and every error is the one
JSON envelope.  Upstream URLs, targets and credentials never appear in it.
"""

from __future__ import annotations

import json
from typing import Any

from gateway import __version__
from gateway.config import Config, FieldExpr, ParamSpec, Route
from gateway.openapi.conventions import HEADERS, add_conditional, add_ndjson
from gateway.openapi.own import _own_paths
from gateway.openapi.schemas import _ERRORS, BODY_SCHEMAS, ERROR_SCHEMA, PATH_PARAM_SCHEMA, _error_response

OPENAPI_VERSION = "3.1.0"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CASTS = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
_PARAM_TYPES = {"string": "string", "integer": "integer", "boolean": "boolean"}

__all__ = ["OPENAPI_VERSION", "DocumentCache", "build"]


def build(config: Config) -> dict[str, Any]:
    """The OpenAPI document of ``config``'s stable routes and the gateway's own endpoints."""
    secured = bool(config.access.clients)
    paths: dict[str, dict[str, Any]] = {}
    for route in config.routes:
        paths.setdefault(_path_key(route), {})[route.method.lower()] = _operation(route, config)
    paths.update(_own_paths(config))
    components: dict[str, Any] = {
        "schemas": {"Error": ERROR_SCHEMA},
        "headers": {
            "X-Request-ID": {
                "description": "The request id (yours, if you sent a sane one); it is in the gateway's log line too.",
                "schema": {"type": "string"},
            },
            "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}},
            **HEADERS,
        },
    }
    if secured or config.access.admins:
        components["securitySchemes"] = {
            "bearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <API key>"},
            "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
    if config.access.clients:  # /status then needs the admin key, which a browser sends as Basic auth
        components["securitySchemes"]["basicAuth"] = {
            "type": "http",
            "scheme": "basic",
            "description": "any user name, the admin key as password (the /status page in a browser)",
        }
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "routegate",
            "version": f"{__version__} (routes {config.digest})",
            "description": (
                "A stable API in front of unstable ones. Collections answer `{items, next_cursor}` and take "
                "`limit`, `cursor` and `all=true`; every error is `{error: {code, message, route}}`."
            ),
        },
        "tags": [{"name": name} for name in sorted({r.upstream for r in config.routes})] + [{"name": "gateway"}],
        "paths": paths,
        "components": components,
    }
    if secured:
        doc["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
    return doc


class DocumentCache:
    """The serialized document of the config being served; rebuilt only after a reload."""

    def __init__(self) -> None:
        self._config: Config | None = None
        self._body = b""

    def get(self, config: Config) -> bytes:
        if config is not self._config:
            self._body = json.dumps(build(config), separators=(",", ":"), ensure_ascii=False).encode()
            self._config = config
        return self._body


# --------------------------------------------------------------------------- stable routes


def _path_key(route: Route) -> str:
    return "/" + "/".join(seg.raw for seg in route.path.segments)


def _operation(route: Route, config: Config) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.description or route.stable,
        "tags": [route.upstream],
    }
    params = [
        {"name": seg.parts[0][1], "in": "path", "required": True, "schema": PATH_PARAM_SCHEMA}
        for seg in route.path.segments
        if seg.is_single_param
    ]
    params += [_query_param(p) for p in route.params]
    if route.pagination is not None:
        pag = route.pagination
        params += [
            {
                "name": "limit",
                "in": "query",
                "description": "Items per page.",
                "schema": {"type": "integer", "minimum": 1, "maximum": pag.max_limit, "default": pag.default_limit},
            },
            {
                "name": "cursor",
                "in": "query",
                "description": "The `next_cursor` of the previous page, passed back unchanged.",
                "schema": {"type": "string"},
            },
            {
                "name": "all",
                "in": "query",
                "description": "Aggregate every page into one response (`limit` is then ignored).",
                "schema": {"type": "boolean", "default": False},
            },
        ]
    cached = route.cache is not None and route.method == "GET"  # (when the cache is on: ROUTEGATE_CACHE)
    if cached:
        params.append(_CACHE_CONTROL)
    body = _request_body(route)
    if body is not None:
        op["requestBody"] = body
    success = _success(route)
    if cached:
        for response in success.values():
            response["headers"].update(_CACHE_HEADERS)
    add_ndjson(route, success)
    not_modified = add_conditional(route, params, success, _CACHE_HEADERS if cached else {})
    if params:
        op["parameters"] = params
    op["responses"] = {**success, **not_modified, **_errors(route, config)}
    return op


#: what the response cache reads from a caller and adds to its answers (gateway.cache)
_CACHE_CONTROL: dict[str, Any] = {
    "name": "Cache-Control",
    "in": "header",
    "description": "no-store: bypass the cache; no-cache: fetch and refresh; max-age=N: no copy older than N s.",
    "schema": {"type": "string"},
}
_CACHE_HEADERS: dict[str, Any] = {
    "X-Cache": {
        "description": "How the response cache answered (when it is on; NDJSON answers bypass it and have none).",
        "schema": {"enum": ["HIT", "MISS", "STALE", "BYPASS"]},
    },
    "Age": {
        "description": "Seconds since the upstream produced this answer (with `X-Cache`).",
        "schema": {"type": "integer"},
    },
}


def _query_param(spec: ParamSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name, "in": "query"}
    if spec.required:
        out["required"] = True
    if spec.description:
        out["description"] = spec.description
    schema: dict[str, Any]
    if spec.fan_out:
        # comma-separated values, each its own upstream stream: OpenAPI's form/non-exploded array
        items: dict[str, Any] = {"type": "string"}
        if spec.enum is not None:
            items["enum"] = list(spec.enum)
        schema = {"type": "array", "items": items, "minItems": 1}
        if spec.default is not None:
            schema["default"] = [spec.default]
        out["style"] = "form"
        out["explode"] = False
    else:
        schema = {"type": _PARAM_TYPES[spec.type]}
        if spec.enum is not None:
            schema["enum"] = list(spec.enum)
        if spec.default is not None:
            schema["default"] = spec.default
    out["schema"] = schema
    return out


def _request_body(route: Route) -> dict[str, Any] | None:
    if route.method not in _BODY_METHODS or not any(t.body.mode == "passthrough" for t in route.targets):
        return None
    schema: dict[str, Any] = {"type": "object"}
    if route.validate is not None:
        schema = BODY_SCHEMAS.get(route.validate, {"type": "object", "description": f"checked by {route.validate}"})
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _success(route: Route) -> dict[str, Any]:
    spec = route.response
    headers: dict[str, Any] = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    for name, expr in spec.headers:
        headers[name] = {"schema": _field_schema(expr, route)}
    if spec.status is not None:
        status = str(spec.status)
    elif route.method in ("GET", "HEAD"):
        status = "200"
    else:
        status = "2XX"  # the upstream's success status is passed on (e.g. 201 for a create)
    response: dict[str, Any] = {"description": route.description or route.stable, "headers": headers}
    if spec.status == 204:
        return {status: response}
    if spec.raw:  # the upstream's own body: its declared media type, when the route's shape names one
        media = route.shape.content_type if route.shape is not None and route.shape.content_type else "*/*"
        response["content"] = {media: {"schema": {}}}
    elif route.pagination is not None:
        item = _object(spec.items, route) if spec.items is not None else {}
        response["content"] = {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["items", "next_cursor"],
                    "additionalProperties": False,
                    "properties": {
                        "items": {"type": "array", "items": item},
                        "next_cursor": {
                            "type": ["string", "null"],
                            "description": "Pass back as `cursor` for the next page; null on the last page.",
                        },
                    },
                }
            }
        }
    else:
        schema = _object(spec.item, route) if spec.item is not None else {}
        if spec.keep_other_fields:  # the upstream's other fields pass through as they are
            schema["additionalProperties"] = True
        response["content"] = {"application/json": {"schema": schema}}
    return {status: response}


def _errors(route: Route, config: Config) -> dict[str, Any]:
    statuses = [400, 404, 421, 422, 502, 503, 504]
    if config.access.clients:
        statuses += [401, 403]
    elif route.method not in ("GET", "HEAD"):
        statuses.append(403)  # a write from a web page of another origin (gateway.edge)
    if route.method in _BODY_METHODS:
        statuses += [409, 413, 415]
    if config.server.max_concurrency is not None or any(k.rate_limit for k in config.access.clients):
        statuses.append(429)
    out = {str(s): _error_response(_ERRORS[s], retry=s in (429, 503)) for s in sorted(statuses)}
    if route.pagination is not None:  # a walk the gateway cannot vouch for is a 409, never data
        out["409"] = _error_response(_WALK_CONFLICT)
        out = dict(sorted(out.items()))
    out["default"] = _error_response("Any other error, in the same envelope.")
    return out


_WALK_CONFLICT = (
    "The walk cannot go on: the list moved under it (`collection_changed`), the route changed since the"
    " cursor was issued (`route_changed`), or the cursor predates this gateway's checks (`cursor_outdated`)."
    " Start again from the first page."
)


def _object(mapping: tuple[tuple[str, FieldExpr], ...], route: Route) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key for key, _ in mapping],  # the gateway always sends every mapped field
        "additionalProperties": False,
        "properties": {key: _field_schema(expr, route) for key, expr in mapping},
    }


def _field_schema(expr: FieldExpr, route: Route) -> dict[str, Any]:
    """What ``mapping.evaluate`` can produce for one stable field."""
    if expr.source == "const":
        if expr.cast is None:
            return {"const": expr.value}
        try:
            return {"const": {"int": int, "float": float, "bool": bool, "str": str}[expr.cast](expr.value)}
        except (TypeError, ValueError):
            return {"type": _CASTS[expr.cast]}
    if expr.source == "location":
        kind = _CASTS[expr.cast] if expr.cast else "string"
        return {"type": [kind, "null"]} if expr.optional else {"type": kind}
    if expr.source == "param":
        spec = route.param(expr.name)
        if spec is None:  # a path parameter: always there, a string unless cast
            return {"type": _CASTS[expr.cast] if expr.cast else "string"}
        schema: dict[str, Any] = {"type": _CASTS[expr.cast] if expr.cast else _PARAM_TYPES[spec.type]}
        if spec.enum is not None and expr.cast in (None, "str"):
            schema["enum"] = list(spec.enum)
        if spec.default is None and not spec.required and not spec.fan_out:
            schema = {"anyOf": [schema, {"type": "null"}]}
        return schema
    # an upstream field: cast, or typed by the route's `shape:` where it declares the field; else any JSON
    if expr.cast:
        return {"type": [_CASTS[expr.cast], "null"]}
    declared = dict(route.shape.fields).get(expr.path) if route.shape is not None else None
    if declared is None or "any" in declared:
        return {}
    kinds = sorted(declared | {"null"}) if expr.optional else sorted(declared)
    return {"type": kinds[0] if len(kinds) == 1 else kinds}
