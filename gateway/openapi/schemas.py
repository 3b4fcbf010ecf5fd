"""The fixed parts of the OpenAPI document: path parameters, the error envelope, bodies, statuses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPENAPI_VERSION = "3.1.0"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CASTS = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
_PARAM_TYPES = {"string": "string", "integer": "integer", "boolean": "boolean"}

#: what the router accepts as one path parameter (routing._check_param refuses the rest with a 400)
PATH_PARAM_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "pattern": r"^[^/\\\x00-\x1f\x7f]+$",
    "not": {"enum": [".", ".."]},
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "route"],
            "properties": {
                "code": {"type": "string", "description": "Stable and machine-readable, e.g. bad_query, shape_drift."},
                "message": {"type": "string", "description": "For humans; says what to change."},
                "route": {"type": ["string", "null"], "description": "The routes.yaml route, when one matched."},
                "details": {"description": "Every problem, when there are several (e.g. a 422's list)."},
            },
        }
    },
}

#: request bodies of the named validators (validators.py), as far as a schema can say it
BODY_SCHEMAS: Mapping[str, dict[str, Any]] = {
    "observable_new_document": {
        "type": "object",
        "description": (
            "Node ids must be distinct and `version` greater than the node count and not below the largest id; "
            "with `reindex=true` ids and version are assigned. Every violation is listed in one 422."
        ),
        "required": ["nodes"],
        "additionalProperties": False,
        "properties": {
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "integer", "minimum": 0},
                        "pinned": {"type": "boolean"},
                        "value": {"type": "string"},
                        "mode": {"type": "string", "description": "md, js, html..."},
                        "name": {"type": ["string", "null"]},
                        "data": {},
                    },
                },
            },
            "version": {"type": "integer"},
            "title": {"type": "string"},
        },
    },
    "posthog_notebook_create": {
        "type": "object",
        "description": "Any other field is refused: PostHog would ignore it. `{}` is a new untitled notebook.",
        "properties": {
            "title": {"type": ["string", "null"]},
            "content": {"type": ["object", "null"]},
            "text_content": {"type": ["string", "null"]},
            "version": {"type": "integer"},
            "deleted": {"type": "boolean"},
        },
        "additionalProperties": False,
    },
    "posthog_notebook_update": {
        "type": "object",
        "description": (
            "Non-empty `content` needs the notebook's current `version` (else 422 here, 409 upstream when stale);"
            " `version` without non-empty content is refused (PostHog would store it and roll the version back)."
            " Any other field is refused: PostHog would ignore it; so is an empty body."
        ),
        "minProperties": 1,
        "properties": {
            "title": {"type": ["string", "null"]},
            "content": {"type": ["object", "null"]},
            "text_content": {"type": ["string", "null"]},
            "version": {"type": "integer"},
            "deleted": {"type": "boolean"},
        },
        "additionalProperties": False,
    },
}

_ERRORS: Mapping[int, str] = {
    400: "Bad input: an unknown or invalid query parameter, path parameter, cursor or JSON body, or no body.",
    401: "No valid API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`.",
    403: "The API key may not call this route or method, or a web page of another origin sent the write.",
    404: "Not found upstream, or no such stable route.",
    409: "The upstream reports a conflict (e.g. a stale `version`).",
    413: "The body is larger than `server.max_body_bytes`.",
    415: "The body is not JSON.",
    421: "The `Host` is not one this gateway serves (see `server.allowed_hosts`).",
    422: "The body breaks the route's rules (every problem in `details`), or the upstream refused it.",
    429: "Over the key's rate limit or the gateway's concurrency cap; retry after `Retry-After` seconds.",
    502: (
        "The upstream failed, broke its contract (`shape_drift`), no longer serves the route"
        " (`upstream_route_gone`), refused a read the gateway built (`upstream_rejected`) or rejected"
        " the gateway's credentials."
    ),
    503: "The upstream is unavailable or rate limiting, or too many connections; `Retry-After` when known.",
    504: "The upstream did not answer in time.",
}


def _error_response(description: str, *, retry: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    if retry:
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    return {
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
