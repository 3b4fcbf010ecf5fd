"""The gateway's own endpoints in the OpenAPI document (/healthz, /metrics, /status, admin)."""

from __future__ import annotations

from typing import Any

from gateway.config import Config
from gateway.openapi.schemas import _error_response

OPENAPI_VERSION = "3.1.0"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_CASTS = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
_PARAM_TYPES = {"string": "string", "integer": "integer", "boolean": "boolean"}


def _own_paths(config: Config) -> dict[str, dict[str, Any]]:
    public: list[dict[str, Any]] = []  # `security: []`: reachable without a key
    rid = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}

    def plain(name: str, summary: str, media: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "get": {
                "operationId": f"gateway_{name}",
                "summary": summary,
                "tags": ["gateway"],
                "security": public,
                "responses": {"200": {"description": summary, "headers": rid, "content": {media: {"schema": schema}}}},
            }
        }

    def obj(**props: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "required": list(props), "properties": props}

    string, integer = {"type": "string"}, {"type": "integer"}
    #: what every admin-guarded endpoint may answer before it does anything
    guarded = {
        "401": _error_response("No valid admin key."),
        "403": _error_response("Admin endpoints are off: no admin.keys configured."),
    }
    admin: dict[str, Any] = {
        "operationId": "gateway_admin_reload",
        "summary": (
            "Reload routes.yaml (admin key), in every worker before answering; an invalid file is a 422 "
            "and the old config keeps serving."
        ),
        "tags": ["gateway"],
        "responses": {
            "200": {
                "description": "Reloaded.",
                "headers": rid,
                "content": {
                    "application/json": {"schema": obj(status=string, digest=string, routes=integer, workers=integer)}
                },
            },
            **guarded,
            "422": _error_response("The file is invalid; every problem (file:line: key: message) in `details`."),
            "500": _error_response(
                "With --workers: another worker did not reload (`worker_failed`, each in `details`)."
            ),
            "default": _error_response("Any other error, in the same envelope."),
        },
    }
    nullable = {"type": ["string", "null"]}
    purge: dict[str, Any] = {
        "operationId": "gateway_admin_cache_purge",
        "summary": (
            "Drop cached responses (admin key) by route, stable path prefix (whole segments), both, or all=true, "
            "in every worker before answering; as query parameters or a JSON body."
        ),
        "tags": ["gateway"],
        "parameters": [
            {"name": "route", "in": "query", "schema": string, "description": "a route name"},
            {"name": "prefix", "in": "query", "schema": string, "description": "a stable path, e.g. /v1/posthog"},
            {"name": "all", "in": "query", "schema": {"type": "string", "enum": ["true", "false"]}},
        ],
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {"route": string, "prefix": string, "all": {"type": "boolean"}},
                        "additionalProperties": False,
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "Purged.",
                "headers": rid,
                "content": {
                    "application/json": {
                        "schema": obj(status=string, route=nullable, prefix=nullable, deleted=integer, workers=integer)
                    }
                },
            },
            "400": _error_response("Nothing named to purge, an unknown route or argument, or a bad prefix."),
            **guarded,
            "409": _error_response("The response cache is off (`cache_disabled`)."),
            "500": _error_response("With --workers: another worker did not purge (`worker_failed`)."),
            "503": _error_response("The cache backend (Redis) is unreachable; nothing was purged.", retry=True),
            "default": _error_response("Any other error, in the same envelope."),
        },
    }
    if config.access.clients or config.access.admins:
        admin["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
        purge["security"] = admin["security"]
    status = plain("status", "A human status page: route health, probes, credential expiry.", "text/html", string)
    if config.access.clients:  # open only on a gateway without client keys (loopback)
        status["get"]["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}, {"basicAuth": []}]
        status["get"]["responses"].update(guarded)
    return {
        "/healthz": plain("healthz", "The process is alive.", "application/json", obj(status=string)),
        "/readyz": plain(
            "readyz",
            "A config is loaded: its path, digest and route count.",
            "application/json",
            obj(status=string, config=string, digest=string, routes=integer),
        ),
        "/metrics": plain("metrics", "Metrics in the Prometheus text format.", "text/plain", string),
        "/openapi.json": plain("openapi", "This document.", "application/json", {"type": "object"}),
        "/status": status,
        "/admin/reload": {"post": admin},
        "/admin/cache/purge": {"post": purge},
    }
