"""Observable API sandbox: an aiohttp app emulating api.observablehq.com closely enough
for the gateway to be tested against it (cookie+Origin auth, before-paging, modules).

Each modelled fact names its source (Observable's notebook-kit client, community clients);
switches bring back the sandbox's earlier model (``old_modules``, ``old_node_rules``) or
turn on an unverified reading (``public_list_results``) so tests cover both.

Data is generated deterministically from a seed so tests can assert exact pages.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from .control import build_app
from .observable_data import (  # the state and data, re-exported: tests and the runner import them here
    _HEX16,
    _MODULE,
    DOCUMENT_TYPES,
    ORIGIN,
    PAGE_SIZE,
    SANDBOX_LOGIN,
    SANDBOX_OTHER_LOGIN,
    SANDBOX_OTHER_USER_ID,
    SANDBOX_T_TOKEN,
    SANDBOX_USER_ID,
    Notebook,
    ObservableState,
    _errors,
    _parse_time_us,
    format_time,
    make_session_cookie,
    parse_session_cookie,
)

__all__ = [
    "DOCUMENT_TYPES",
    "NODE_KEYS",
    "OBSERVABLE_STATE",
    "ORIGIN",
    "PAGE_SIZE",
    "SANDBOX_LOGIN",
    "SANDBOX_OTHER_LOGIN",
    "SANDBOX_OTHER_USER_ID",
    "SANDBOX_T_TOKEN",
    "SANDBOX_USER_ID",
    "Notebook",
    "ObservableState",
    "create_app",
    "format_time",
    "make_session_cookie",
    "parse_session_cookie",
    "validate_new_document",
]


OBSERVABLE_STATE = web.AppKey("observable_state", ObservableState)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(_errors(code, message), status=status)


def _not_found() -> web.Response:
    return _error(404, "NOT_FOUND", "Not found")


def _state(request: web.Request) -> ObservableState:
    return request.app[OBSERVABLE_STATE]


def _check_auth(request: web.Request) -> web.Response | None:
    """None if the request is signed in as the demo user from the right Origin, else the error."""
    state = _state(request)
    session = request.cookies.get("I")
    token = request.cookies.get("T")
    if not session or not token:
        return _error(401, "UNAUTHORIZED", "Not signed in")
    payload = parse_session_cookie(session)
    if payload is None:
        return _error(401, "UNAUTHORIZED", "Not signed in")
    if payload["expiration"] <= state.clock() * 1000 or state.session_expired:
        return _error(401, "SESSION_EXPIRED", "Session expired")
    if not hmac.compare_digest(session, state.session_cookie) or not hmac.compare_digest(token, state.token):
        return _error(401, "UNAUTHORIZED", "Not signed in")
    if request.headers.get("Origin") != ORIGIN:
        return _error(403, "FORBIDDEN", "Invalid origin")
    return None


def _signed_out_list(request: web.Request, problem: web.Response) -> web.Response:
    """A signed-in list for a visitor whose session the server ended.

    The real API answers 200 with an empty list rather than refusing (upstream-facts.md,
    "Signed-out requests", from Observable's notebook-kit client and community export
    clients); the ``signed_out: "401"`` switch keeps the sandbox's older 401 instead.
    """
    state = _state(request)
    if state.session_expired and state.signed_out == "empty":
        return web.json_response([])
    return problem


async def current_user(request: web.Request) -> web.Response:
    """``GET /user``: the signed-in user, else 200 ``null`` (not 401) for stale cookies or a missing
    Origin, as the real API does (upstream-facts.md, "Signed-out requests"); ``signed_out: "401"``
    answers the auth error instead."""
    problem = _check_auth(request)
    if problem is None:
        user = _state(request).users[SANDBOX_LOGIN]
        return web.json_response({**user, "avatar_url": None, "tier": "public"})
    return web.json_response(None) if _state(request).signed_out == "empty" else problem


def _parse_before(request: web.Request) -> tuple[int | None, web.Response | None]:
    raw = request.query.get("before")
    if raw is None:
        return None, None
    before_us = _parse_time_us(raw)
    if before_us is None:
        return None, _error(400, "INVALID_PARAMETER", f"Invalid before: {raw!r}")
    return before_us, None


def _page(request: web.Request, owner: str, kind: str) -> web.Response:
    before_us, problem = _parse_before(request)
    if problem is not None:
        return problem
    state = _state(request)
    return web.json_response([state.item_json(nb) for nb in state.listing(owner, kind, before_us)])


async def user_documents(request: web.Request) -> web.Response:
    kind = request.query.get("types")
    if kind not in DOCUMENT_TYPES:
        return _error(400, "INVALID_PARAMETER", f"types must be one of {', '.join(DOCUMENT_TYPES)}")
    problem = _check_auth(request)
    if problem is not None:
        return _signed_out_list(request, problem)
    return _page(request, SANDBOX_LOGIN, kind)


def _legacy(kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        if not _state(request).legacy_routes:
            return _not_found()
        problem = _check_auth(request)
        if problem is not None:
            return _signed_out_list(request, problem)
        return _page(request, SANDBOX_LOGIN, kind)

    return handler


async def user_public_documents(request: web.Request) -> web.Response:
    state = _state(request)
    login = request.match_info["login"]
    if login not in state.users:
        return _not_found()
    if not state.public_list_results:
        return _page(request, login, "public")
    # UNVERIFIED: one community export client reads this list as {results: [...]} paged by
    # a 1-based `page`; nothing offline confirms it (see /work/shared/upstream-facts.md).
    raw = request.query.get("page", "1")
    if not raw.isdigit() or int(raw) < 1:
        return _error(400, "INVALID_PARAMETER", f"Invalid page: {raw!r}")
    start = (int(raw) - 1) * PAGE_SIZE
    found = state.by_kind("public", login)[start : start + PAGE_SIZE]
    return web.json_response({"results": [state.item_json(nb) for nb in found]})


def _readable(request: web.Request, nb: Notebook) -> web.Response | None:
    """None if ``nb`` may be shown to this request; public ones need no auth."""
    if nb.type == "public":
        return None
    problem = _check_auth(request)
    if problem is not None:
        return problem
    return None if nb.owner == SANDBOX_LOGIN else _not_found()


async def get_document(request: web.Request) -> web.Response:
    state = _state(request)
    doc_id = request.match_info["id"]
    return _document(request, state, state.notebooks.get(doc_id) if _HEX16.match(doc_id) else None)


async def get_document_by_slug(request: web.Request) -> web.Response:
    state = _state(request)
    return _document(request, state, state.find_slug(request.match_info["login"], request.match_info["slug"]))


def _document(request: web.Request, state: ObservableState, nb: Notebook | None) -> web.Response:
    """The document of ``nb``: 404 when there is none, else what ``_readable`` refuses or the document."""
    if nb is None:
        return _not_found()
    problem = _readable(request, nb)
    return problem if problem is not None else web.json_response(state.document_json(nb))


def _legacy_module_source(nb: Notebook) -> str:
    """Runtime-1 format, what ``/d/{id}.js`` answers without ``?v=`` (notebook-download example)."""
    cells = ",\n    ".join(f"{{inputs: [], value: (function(){{return {json.dumps(n['value'])};}})}}" for n in nb.nodes)
    return (
        "// Runtime version: 1\n"
        f"// https://observablehq.com/d/{nb.id}@{nb.version}\n"
        f"const m0 = {{\n  id: {json.dumps(f'{nb.id}@{nb.version}')},\n  variables: [\n    {cells}\n  ]\n}};\n"
        "const notebook = {id: " + json.dumps(f"{nb.id}@{nb.version}") + ", modules: [m0]};\n"
        "export default notebook;\n"
    )


def _module_source(nb: Notebook) -> str:
    cells = json.dumps([n["value"] for n in nb.nodes])
    return (
        f"// {nb.title} v{nb.version}\n"
        f"// https://observablehq.com/d/{nb.id}@{nb.version}\n"
        "export default function define(runtime, observer) {\n"
        "  const main = runtime.module();\n"
        f"  const cells = {cells};\n"
        "  for (const [i, source] of cells.entries()) {\n"
        "    main.variable(observer()).define(`cell ${i}`, [], () => source);\n"
        "  }\n"
        "  return main;\n"
        "}\n"
    )


async def get_module(request: web.Request) -> web.StreamResponse:
    match = _MODULE.match(request.match_info["spec"])
    if match is None:
        return _not_found()
    nb = _state(request).notebooks.get(match["id"])
    if nb is None:
        return _not_found()
    problem = _readable(request, nb)
    if problem is not None:
        return problem
    state = _state(request)
    if match["version"] is None:
        # the redirect keeps the query string (notebook-kit's observable.ts asks /d/{id}.js?v=4)
        query = "" if state.old_modules or not request.query_string else f"?{request.query_string}"
        raise web.HTTPFound(f"/d/{nb.id}@{nb.version}.js{query}")
    if int(match["version"]) != nb.version:
        return _not_found()
    # ?v=4 (notebook-kit's client) is an ES module; without `v` the legacy runtime-1 format
    # (other `v` values are not modelled and answer the legacy format too)
    modern = state.old_modules or request.query.get("v") == "4"
    source = _module_source(nb) if modern else _legacy_module_source(nb)
    return web.Response(text=source, content_type="application/javascript", charset="utf-8")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Node keys ``/document/new`` takes: the seed thread's id, value and pinned, plus what modern
#: documents carry (notebook-kit's client and community exporters: mode, name, data).
NODE_KEYS = ("id", "value", "pinned", "mode", "name", "data")
_OLD_NODE_KEYS = ("id", "pinned", "value")


def validate_new_document(body: object, *, old_node_rules: bool = False) -> str | None:
    """The first rule ``body`` breaks for ``POST /document/new``, or None if it is valid.

    ``old_node_rules`` is the sandbox's earlier model, which refused mode, name and data.
    """
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if "title" in body and not isinstance(body["title"], str):
        return "title must be a string"
    nodes = body.get("nodes")
    if not isinstance(nodes, list):
        return "nodes must be a list"
    seen: set[int] = set()
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            return f"nodes[{i}] must be an object"
        extra = sorted(set(node) - set(_OLD_NODE_KEYS if old_node_rules else NODE_KEYS))
        if extra:
            return f"nodes[{i}] has unknown key {extra[0]!r}"
        if "id" not in node:
            return f"nodes[{i}].id is required"
        node_id = node["id"]
        if not _is_int(node_id) or node_id < 0:
            return f"nodes[{i}].id must be a non-negative integer"
        if node_id in seen:
            return f"nodes[{i}].id {node_id} is duplicated"
        seen.add(node_id)
        if "pinned" in node and not isinstance(node["pinned"], bool):
            return f"nodes[{i}].pinned must be a boolean"
        if "value" in node and not isinstance(node["value"], str):
            return f"nodes[{i}].value must be a string"
        if "mode" in node and not isinstance(node["mode"], str):
            return f"nodes[{i}].mode must be a string"
        if node.get("name") is not None and not isinstance(node["name"], str):
            return f"nodes[{i}].name must be a string or null"
    version = body.get("version")
    if not _is_int(version):
        return "version must be an integer"
    assert isinstance(version, int)
    if version <= len(nodes):
        return "version must be greater than the number of nodes"
    if seen and version < max(seen):
        return "version must not be less than any node id"
    return None


async def new_document(request: web.Request) -> web.Response:
    problem = _check_auth(request)
    if problem is not None:
        return problem
    try:
        body: object = await request.json()
    except ValueError:
        body = None
    message = validate_new_document(body, old_node_rules=_state(request).old_node_rules)
    if message is not None:
        return _error(400, "INVALID_DOCUMENT", message)
    assert isinstance(body, dict)
    state = _state(request)
    nb = state.create_document(body.get("title", "Untitled"), body["nodes"], body["version"])
    return web.json_response(state.document_json(nb))


def create_app(state: ObservableState | None = None) -> web.Application:
    """The Observable sandbox; its state is at ``app[OBSERVABLE_STATE]``."""
    app = build_app(state if state is not None else ObservableState(), OBSERVABLE_STATE)
    r = app.router
    r.add_get("/user", current_user)
    r.add_get("/user/documents", user_documents)
    # legacy_routes: the per-kind list routes (invented: they model a list moving between paths);
    # /user/drafts is private's older name
    for kind in DOCUMENT_TYPES:
        r.add_get(f"/user/{kind}", _legacy(kind))
    r.add_get("/user/drafts", _legacy("private"))
    r.add_get("/documents/@{login}", user_public_documents)
    r.add_post("/document/new", new_document)
    r.add_get("/document/@{login}/{slug:.+}", get_document_by_slug)
    r.add_get("/document/{id}", get_document)
    r.add_get("/d/{spec}", get_module)
    return app
