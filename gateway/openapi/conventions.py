"""What the HTTP conventions add to a stable route's operation: conditional requests and NDJSON.

Kept beside the code they describe (gateway.pipeline.conventions ``validator``, gateway.ndjson) so a
generated client knows of them: a ``304`` declared is not parsed as the ``default`` error, and a
collection's NDJSON form is a media type it may ask for with ``Accept``.  Only what the gateway
really sends is declared, on the routes where it sends it.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Route
from gateway.ndjson import NDJSON_TYPE

#: the response headers these conventions add, shared through ``#/components/headers``
HEADERS: dict[str, Any] = {
    "ETag": {
        "description": (
            'A weak validator of the body (`W/"<24 hex digits>"`): send it back as `If-None-Match`. '
            "Not on an NDJSON `all=true` stream (written as it arrives)."
        ),
        "schema": {"type": "string"},
    },
    "X-Next-Cursor": {
        "description": (
            "NDJSON pages only (`Accept: application/x-ndjson` without `all=true`): the page's `next_cursor`, "
            "to pass back as `cursor`; absent on the last page."
        ),
        "schema": {"type": "string"},
    },
}

IF_NONE_MATCH: dict[str, Any] = {
    "name": "If-None-Match",
    "in": "header",
    "description": "The `ETag` of the answer you kept (or a list of them, or `*`): a `304` without a body if current.",
    "schema": {"type": "string"},
}

_REF_ETAG = {"$ref": "#/components/headers/ETag"}


def validated(route: Route) -> bool:
    """Does the route's ``200`` carry an ``ETag`` (gateway.pipeline.conventions.validator)?

    GET routes only, and only a ``200``; a raw route's body is relayed as it comes (no validator)
    unless the response cache serves it, which stores a tag with each entry."""
    if route.method != "GET" or route.response.status not in (None, 200):
        return False
    return not route.response.raw or route.cache is not None


def add_conditional(
    route: Route, params: list[dict[str, Any]], success: dict[str, Any], cache: dict[str, Any]
) -> dict[str, Any]:
    """``If-None-Match`` and the ``200``'s ``ETag`` where the route has a validator; the ``304`` to add.

    ``cache``: the cache's response headers (``X-Cache``, ``Age``) the route's answers carry, which a
    ``304`` repeats; empty where the route does not cache."""
    if not validated(route):
        return {}
    params.append(IF_NONE_MATCH)
    raw = {**HEADERS["ETag"], "description": "A weak validator, on the answers the response cache serves."}
    success["200"]["headers"]["ETag"] = raw if route.response.raw else _REF_ETAG
    headers: dict[str, Any] = {"ETag": _REF_ETAG, "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
    headers.update(cache)
    return {
        "304": {
            "description": "Not Modified: the `If-None-Match` tag names the current answer; no body.",
            "headers": headers,
        }
    }


def add_ndjson(route: Route, success: dict[str, Any]) -> None:
    """A collection's NDJSON form beside its JSON one (gateway.ndjson): one item per line."""
    if route.pagination is None or "200" not in success:
        return
    ok = success["200"]
    content = ok.get("content", {})
    page = content.get("application/json", {}).get("schema", {})
    item = page.get("properties", {}).get("items", {}).get("items", {})
    ok["headers"]["X-Next-Cursor"] = {"$ref": "#/components/headers/X-Next-Cursor"}
    content[NDJSON_TYPE] = {
        "schema": {
            "type": "string",
            "description": (
                "With `Accept: application/x-ndjson`: one item per line (compact JSON, each line ending in `\\n`; "
                "each line is `x-item-schema`). A page's cursor is in `X-Next-Cursor`; `all=true` is streamed, "
                'and a failure midway ends it with one `{"error": {...}}` line and no end-of-body marker.'
            ),
        },
        "x-item-schema": item,
    }
    ok["content"] = content
