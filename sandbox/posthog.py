"""PostHog notebooks API sandbox: an aiohttp app emulating /api/projects/:id/notebooks/
(DRF-style errors, limit/offset paging with absolute links, versioned PATCH, key scopes, throttling),
and its alias /api/environments/:id/notebooks/ (the same answers, with Deprecation and Sunset headers).

Each modelled fact names its source in PostHog/posthog; where the sandbox used to model a
fact differently, a switch (``old_version_check``, ``old_deleted_404``) brings that old
behaviour back so tests can cover a gateway against both.

Data is generated deterministically from a seed so tests can assert exact pages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from . import posthog_paging as paging
from .control import build_app
from .posthog_data import (  # the state and data, re-exported: tests and the runner import them here
    ALL_SCOPES,
    DEFAULT_LIMIT,
    SANDBOX_POSTHOG_KEY,
    SANDBOX_USER,
    PostHogNotebook,
    PostHogState,
    _drf,
    format_time,
)

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_LIMIT",
    "POSTHOG_STATE",
    "SANDBOX_POSTHOG_KEY",
    "SANDBOX_USER",
    "PostHogNotebook",
    "PostHogState",
    "create_app",
    "format_time",
]

POSTHOG_STATE = web.AppKey("posthog_state", PostHogState)

Handler = Callable[[web.Request, int], Awaitable[web.StreamResponse]]
Handler0 = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, kind: str, code: str, detail: str, attr: str | None = None) -> web.Response:
    return web.json_response(_drf(kind, code, detail, attr), status=status)


def _invalid(detail: str, attr: str | None) -> web.Response:
    return _error(400, "validation_error", "invalid_input", detail, attr)


def _not_found() -> web.Response:
    return _error(404, "invalid_request", "not_found", "Not found.")


def _method_not_allowed(request: web.Request, allow: str) -> web.Response:
    response = _error(405, "invalid_request", "method_not_allowed", f'Method "{request.method}" not allowed.')
    response.headers["Allow"] = allow
    return response


def _state(request: web.Request) -> PostHogState:
    return request.app[POSTHOG_STATE]


def _required_scope(request: web.Request) -> str:
    """The scope a personal API key needs for this request (see ALL_SCOPES)."""
    if request.path.rstrip("/").endswith("/activity"):
        return "activity_log:read"
    return "notebook:read" if request.method in ("GET", "HEAD", "OPTIONS") else "notebook:write"


def _guarded(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Auth, then project lookup, then throttling, in DRF's order, before ``handler``."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        state = _state(request)
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _error(
                401,
                "authentication_error",
                "not_authenticated",
                "Authentication credentials were not provided.",
            )
        key = key.strip()
        if key not in state.api_keys:
            return _error(401, "authentication_error", "authentication_failed", "Invalid personal API key.")
        scope = _required_scope(request)
        if scope not in state.scopes_of(key):
            # posthog/permissions.py APIScopePermission: a DRF PermissionDenied, after authentication
            return _error(403, "authentication_error", "permission_denied", f"API key missing required scope '{scope}'")
        raw_pid = request.match_info["pid"]
        project_id = int(raw_pid) if raw_pid.isdigit() else -1
        if project_id not in state.projects:
            return _error(404, "invalid_request", "not_found", "Project not found.")
        wait = state.throttle_wait(key)
        if wait is not None:
            unit = "second" if wait == 1 else "seconds"
            return _error(
                429,
                "throttled_error",
                "throttled",
                f"Request was throttled. Expected available in {wait} {unit}.",
            )
        return await handler(request, project_id)

    return wrapper


def _query_int(request: web.Request, name: str, default: int, minimum: int) -> int | web.Response:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return _invalid("A valid integer is required.", name)
    if value < minimum:
        return _invalid(f"Ensure this value is greater than or equal to {minimum}.", name)
    return value


async def _json_object(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "validation_error", "parse_error", "JSON parse error.")
    if not isinstance(body, dict):
        return _invalid("Invalid data. Expected a dictionary.", "non_field_errors")
    return body


def _check_fields(body: Mapping[str, Any]) -> web.Response | None:
    """DRF-style type validation of the writable fields present in ``body``."""
    if "title" in body and body["title"] is not None and not isinstance(body["title"], str):
        return _invalid("Not a valid string.", "title")
    if "content" in body and body["content"] is not None and not isinstance(body["content"], dict):
        return _invalid("Value must be valid JSON object.", "content")
    text = body.get("text_content")
    if text is not None and not isinstance(text, str):
        return _invalid("Not a valid string.", "text_content")
    if "deleted" in body and not isinstance(body["deleted"], bool):
        return _invalid("Must be a valid boolean.", "deleted")
    version = body.get("version")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
        return _invalid("A valid integer is required.", "version")
    return None


async def notebooks(request: web.Request, project_id: int) -> web.StreamResponse:
    state = _state(request)
    if request.method in ("GET", "HEAD"):
        limit = _query_int(request, "limit", DEFAULT_LIMIT, 1)
        if isinstance(limit, web.Response):
            return limit
        offset = _query_int(request, "offset", 0, 0)
        if isinstance(offset, web.Response):
            return offset
        items = state.visible(project_id)
        if state.list_paging == "cursor":
            start = paging.decode_token(request.query.get("cursor", "")) if "cursor" in request.query else 0
            if start is None:
                return _invalid("Invalid cursor.", "cursor")
            page = [state.item_json(nb) for nb in items[start : start + limit]]
            return web.json_response({"results": page, "meta": paging.cursor_meta(start, limit, len(items))})
        url = request.url
        nxt = None
        if offset + limit < len(items):
            nxt = str(url.update_query(limit=limit, offset=offset + limit))
        prev = None
        if offset > 0:
            prev_url = url.update_query(limit=limit)
            if offset - limit > 0:
                prev_url = prev_url.update_query(offset=offset - limit)
            else:
                prev_url = prev_url.without_query_params("offset")
            prev = str(prev_url)
        return web.json_response(
            headers=paging.link_header(nxt) if state.list_link_header else None,
            data={
                "count": len(items),
                "next": nxt,
                "previous": prev,
                "results": [state.item_json(nb) for nb in items[offset : offset + limit]],
            },
        )
    if request.method == "POST":
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        problem = _check_fields(body)
        if problem is not None:
            return problem
        nb = state.create(project_id, body.get("title"), body.get("content"), body.get("text_content"))
        return web.json_response(state.detail_json(nb), status=201)
    return _method_not_allowed(request, "GET, POST, HEAD, OPTIONS")


def _etag_matches(header: str, version: int) -> bool:
    for tag in header.split(","):
        tag = tag.strip()
        tag = tag.removeprefix("W/").strip('"')
        if tag == str(version):
            return True
    return False


async def notebook(request: web.Request, project_id: int) -> web.StreamResponse:
    state = _state(request)
    if request.method == "DELETE":
        # PostHog's destroy() answers a bare 405: notebooks are only soft-deleted.
        return web.Response(status=405)
    if request.method not in ("GET", "HEAD", "PATCH"):
        return _method_not_allowed(request, "GET, PATCH, DELETE, HEAD, OPTIONS")
    # The viewset filters deleted=False for every action but updates (products/notebooks/backend/
    # api/notebook.py), so a PATCH reaches a soft-deleted notebook; old_deleted_404 hides it.
    patch = request.method == "PATCH"
    nb = state.get(project_id, request.match_info["short_id"], deleted_too=patch and not state.old_deleted_404)
    if nb is None:
        return _not_found()
    if patch:
        body = await _json_object(request)
        if isinstance(body, web.Response):
            return body
        problem = _check_fields(body)
        if problem is not None:
            return problem
        # NotebookSerializer.update checks the version only `if validated_data.get("content")`
        checked = "content" in body if state.old_version_check else bool(body.get("content"))
        if checked and body.get("version") != nb.version:
            return _error(409, "server_error", "conflict", "Someone else edited the Notebook")
        state.update(nb, body)
        return web.json_response(state.detail_json(nb))
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and _etag_matches(if_none_match, nb.version):
        return web.Response(status=304)
    return web.json_response(state.detail_json(nb))


async def activity(request: web.Request, project_id: int) -> web.StreamResponse:
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed(request, "GET, HEAD, OPTIONS")
    nb = _state(request).get(project_id, request.match_info["short_id"])
    if nb is None:
        return _not_found()
    state = _state(request)
    # PostHog: products/notebooks/backend/api/notebook.py activity() and
    # posthog/models/activity_logging/activity_page.py: ?page= (from 1) &limit= (default 10)
    page = paging.activity_page(request, list(reversed(nb.activity)), state.activity_paging)
    if page is None:
        return _invalid("A valid integer is required.", "page")
    return web.json_response(page)


#: What ``/api/environments/...`` answers beside the ``/api/projects/...`` answer it aliases.  PostHog
#: sends both headers there; their values are the sandbox's own (the facts name only the headers).
DEPRECATION_HEADERS = {"Deprecation": "true", "Sunset": "Thu, 01 Jul 2027 00:00:00 GMT"}


def _deprecated(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Handler0:
    """``handler`` answering an ``/api/environments/{id}/...`` path, as PostHog's in-process rewrite
    to ``/api/projects/{id}/...`` does: the same answer (errors too), plus the deprecation headers."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        response.headers.update(DEPRECATION_HEADERS)
        return response

    return wrapper


def create_app(state: PostHogState | None = None) -> web.Application:
    """The PostHog sandbox; its state is at ``app[POSTHOG_STATE]``."""
    app = build_app(state if state is not None else PostHogState(), POSTHOG_STATE)
    for root in ("/api/projects", "/api/environments"):
        base = root + "/{pid}/notebooks"
        for path, handler in (
            (base, notebooks),
            (base + "/{short_id}", notebook),
            (base + "/{short_id}/activity", activity),
        ):
            guarded = _guarded(handler)
            if root == "/api/environments":
                guarded = _deprecated(guarded)
            app.router.add_route("*", path, guarded)  # the trailing slash is optional
            app.router.add_route("*", path + "/", guarded)
    return app
