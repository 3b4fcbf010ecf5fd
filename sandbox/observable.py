"""Observable API sandbox: an aiohttp app emulating api.observablehq.com closely enough
for the gateway to be tested against it (cookie+Origin auth, before-paging, modules).

Each modelled fact names its source (Observable's notebook-kit client, community clients);
switches bring back the sandbox's earlier model (``old_modules``, ``old_node_rules``) or
turn on an unverified reading (``public_list_results``) so tests cover both.

Data is generated deterministically from a seed so tests can assert exact pages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from aiohttp import web

from .control import SandboxState, build_app

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

SANDBOX_LOGIN = "demo"
SANDBOX_USER_ID = "5a1b2c3d4e5f6071"
SANDBOX_OTHER_LOGIN = "alice"
SANDBOX_OTHER_USER_ID = "a11ce0000000beef"
SANDBOX_T_TOKEN = "8f14e45fceea167a5a36dedd4bea2543"
ORIGIN = "https://observablehq.com"
PAGE_SIZE = 30
DOCUMENT_TYPES = ("public", "shared", "private", "trash")

_SECRET = b"routegate-observable-sandbox-secret"
_WEEK_MS = 7 * 24 * 3600 * 1000
# Seeded notebooks are all older than this, so anything created "now" sorts first.
_SEED_ANCHOR = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
_MODULE = re.compile(r"^(?P<id>[0-9a-f]{16})(?:@(?P<version>\d+))?\.js$")

# fmt: off
_WORDS = (
    "arc", "bar", "bay", "beam", "bloom", "chart", "cloud", "coast", "color", "curve", "data",
    "delta", "dot", "dune", "edge", "fern", "field", "flow", "forest", "frame", "glyph", "graph",
    "grid", "hill", "hue", "lake", "layer", "leaf", "line", "map", "maze", "mesh", "moon", "node",
    "orbit", "path", "peak", "pixel", "plot", "prism", "quilt", "radar", "rain", "ray", "ridge",
    "river", "scale", "shade", "sketch", "slope", "spark", "star", "stream", "tide", "trail",
    "tree", "wave", "wind",
)
# fmt: on


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(segment: str) -> str:
    return _b64url(hmac.new(_SECRET, segment.encode("ascii"), hashlib.sha256).digest())


def make_session_cookie(expiration_ms: int, user_id: str = SANDBOX_USER_ID) -> str:
    """An ``I`` cookie in Observable's shape: base64url JSON payload, ``.``, HMAC signature."""
    payload = json.dumps({"id": user_id, "expiration": expiration_ms}, separators=(",", ":"))
    segment = _b64url(payload.encode())
    return f"{segment}.{_sign(segment)}"


def parse_session_cookie(value: str) -> dict[str, Any] | None:
    """The payload of a correctly signed ``I`` cookie, or None if forged/garbled."""
    segment, dot, signature = value.partition(".")
    if not dot or not hmac.compare_digest(signature, _sign(segment)):
        return None
    try:
        payload = json.loads(_unb64url(segment))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("expiration"), int):
        return None
    return payload


def format_time(ms: int) -> str:
    """Observable's timestamp format: ISO-8601 UTC with milliseconds and ``Z``."""
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _parse_time_us(text: str) -> int | None:
    """Microseconds since the epoch of an ISO-8601 timestamp, None if unparseable."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1)


@dataclass
class Notebook:
    """One notebook; ``type`` is public, shared, private or trash."""

    id: str
    slug: str | None
    title: str
    version: int
    update_ms: int
    owner: str
    type: str
    likes: int = 0
    fork_of: dict[str, Any] | None = None
    publish_ms: int | None = None
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def update_time(self) -> str:
        return format_time(self.update_ms)


class ObservableState(SandboxState):
    """All sandbox data plus the valid demo credentials and the Observable-only switch."""

    service = "observable"

    def __init__(
        self,
        seed: int = 0,
        *,
        public_count: int = 75,
        shared_count: int = 40,
        private_count: int = 35,
        trash_count: int = 5,
        other_public_count: int = 45,
        session_expiration_ms: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.clock = clock
        self.legacy_routes = False
        self.old_modules = False
        self.old_node_rules = False
        self.public_list_results = False
        #: the server ended the demo session (Observable expires sessions about weekly), cookies unchanged
        self.session_expired = False
        #: how a signed-out visitor is answered: "empty" as the real API does (200 null, 200 []), or "401"
        self.signed_out = "empty"
        if session_expiration_ms is None:
            session_expiration_ms = int(clock() * 1000) + _WEEK_MS
        self.session_cookie = make_session_cookie(session_expiration_ms)
        self.token = SANDBOX_T_TOKEN
        self.users: dict[str, dict[str, Any]] = {
            SANDBOX_LOGIN: {"id": SANDBOX_USER_ID, "login": SANDBOX_LOGIN, "name": "Demo User"},
            SANDBOX_OTHER_LOGIN: {
                "id": SANDBOX_OTHER_USER_ID,
                "login": SANDBOX_OTHER_LOGIN,
                "name": "Alice Example",
            },
        }
        self.notebooks: dict[str, Notebook] = {}
        self._rng = random.Random(seed)
        self._seed(
            [(SANDBOX_OTHER_LOGIN, "public")] * other_public_count
            + [(SANDBOX_LOGIN, "public")] * public_count
            + [(SANDBOX_LOGIN, "shared")] * shared_count
            + [(SANDBOX_LOGIN, "private")] * private_count
            + [(SANDBOX_LOGIN, "trash")] * trash_count
        )

    # -- data -----------------------------------------------------------------

    def _new_id(self) -> str:
        while True:
            candidate = f"{self._rng.getrandbits(64):016x}"
            if candidate not in self.notebooks:
                return candidate

    def _seed(self, slots: list[tuple[str, str]]) -> None:
        rng = self._rng
        rng.shuffle(slots)  # interleave types so every listing spans the whole timeline
        ms = (_SEED_ANCHOR - _EPOCH) // timedelta(milliseconds=1)
        slugs: set[tuple[str, str]] = set()
        alice_public: list[Notebook] = []
        for owner, kind in slots:
            ms -= rng.randint(60_000, 2 * 86_400_000)  # strictly decreasing: unique times
            nb_id = self._new_id()
            words = [rng.choice(_WORDS) for _ in range(rng.randint(2, 4))]
            title = " ".join(words).capitalize()
            if rng.random() < 0.15:
                slug = f"d/{nb_id}"
            else:
                slug = "-".join(words)
                n = 2
                while (owner, slug) in slugs:
                    slug = f"{'-'.join(words)}-{n}"
                    n += 1
            slugs.add((owner, slug))
            nodes = self._seed_nodes(title)
            fork_of = None
            if owner == SANDBOX_LOGIN and alice_public and rng.random() < 0.2:
                parent = rng.choice(alice_public)
                fork_of = {
                    "id": parent.id,
                    "slug": parent.slug,
                    "title": parent.title,
                    "version": parent.version,
                    "owner": self._owner_json(parent.owner),
                }
            nb = Notebook(
                id=nb_id,
                slug=slug,
                title=title,
                version=max(n["id"] for n in nodes) + rng.randint(1, 40),
                update_ms=ms,
                owner=owner,
                type=kind,
                likes=rng.randint(0, 120) if kind == "public" else 0,
                fork_of=fork_of,
                publish_ms=ms - rng.randint(0, 3_600_000) if kind == "public" else None,
                nodes=nodes,
            )
            self.notebooks[nb_id] = nb
            if owner == SANDBOX_OTHER_LOGIN:
                alice_public.append(nb)

    def _seed_nodes(self, title: str) -> list[dict[str, Any]]:
        rng = self._rng
        count = rng.randint(2, 6)
        ids = sorted(rng.sample(range(1, 3 * count + 1), count))
        values = [f"md`# {title}`"] + [f"{rng.choice(_WORDS)}{i} = {rng.randint(0, 999)}" for i in range(1, count)]
        return [
            {
                "id": node_id,
                "value": value,
                "pinned": rng.random() < 0.3,
                "mode": "js",
                "data": None,
                "name": None,
            }
            for node_id, value in zip(ids, values, strict=True)
        ]

    def _owner_json(self, login: str) -> dict[str, Any]:
        return dict(self.users[login])

    def item_json(self, nb: Notebook) -> dict[str, Any]:
        """A notebook as listings show it."""
        return {
            "id": nb.id,
            "slug": nb.slug,
            "title": nb.title,
            "version": nb.version,
            "update_time": nb.update_time,
            "likes": nb.likes,
            "fork_of": nb.fork_of,
            "publish_time": None if nb.publish_ms is None else format_time(nb.publish_ms),
            "owner": self._owner_json(nb.owner),
        }

    def document_json(self, nb: Notebook) -> dict[str, Any]:
        """A notebook as ``/document/...`` shows it: the item plus nodes and type."""
        doc = self.item_json(nb)
        doc["type"] = nb.type
        doc["nodes"] = [dict(n) for n in nb.nodes]
        return doc

    def listing(self, owner: str, kind: str, before_us: int | None = None) -> list[Notebook]:
        """One page: ``owner``'s ``kind`` notebooks updated strictly before ``before_us``."""
        matches = [
            nb
            for nb in self.notebooks.values()
            if nb.owner == owner and nb.type == kind and (before_us is None or nb.update_ms * 1000 < before_us)
        ]
        matches.sort(key=lambda nb: nb.update_ms, reverse=True)
        return matches[:PAGE_SIZE]

    def by_kind(self, kind: str, owner: str = SANDBOX_LOGIN) -> list[Notebook]:
        """Every ``owner`` notebook of ``kind``, newest first (for tests' expectations)."""
        found = [nb for nb in self.notebooks.values() if nb.owner == owner and nb.type == kind]
        return sorted(found, key=lambda nb: nb.update_ms, reverse=True)

    def find_slug(self, login: str, slug: str) -> Notebook | None:
        for nb in self.notebooks.values():
            if nb.owner == login and nb.slug == slug:
                return nb
        return None

    def create_document(self, title: str, nodes: list[dict[str, Any]], version: int) -> Notebook:
        """A new private notebook, newer than everything else."""
        now_ms = int(self.clock() * 1000)
        latest = max((nb.update_ms for nb in self.notebooks.values()), default=0)
        nb = Notebook(
            id=self._new_id(),
            slug=None,
            title=title,
            version=version,
            update_ms=max(now_ms, latest + 1),
            owner=SANDBOX_LOGIN,
            type="private",
            nodes=[
                {
                    "id": n["id"],
                    "value": n.get("value", ""),
                    "pinned": n.get("pinned", False),
                    "mode": n.get("mode", "js"),
                    "data": n.get("data"),
                    "name": n.get("name"),
                }
                for n in nodes
            ],
        )
        self.notebooks[nb.id] = nb
        return nb

    # -- switches -------------------------------------------------------------

    def reset_switches(self) -> None:
        super().reset_switches()
        for name in _FLAGS:
            setattr(self, name, False)
        self.session_expired = False
        self.signed_out = "empty"

    def switches_json(self) -> dict[str, Any]:
        out = super().switches_json()
        for name in _FLAGS:
            out[name] = getattr(self, name)
        out["session_expired"] = self.session_expired
        out["signed_out"] = self.signed_out
        return out

    def _apply_extra_switches(self, body: Mapping[str, Any]) -> None:
        flags = {name: body.get(name, getattr(self, name)) for name in (*_FLAGS, "session_expired")}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a boolean")
        signed_out = body.get("signed_out", self.signed_out)
        if signed_out not in ("empty", "401"):
            raise ValueError('signed_out must be "empty" (200 null / 200 []) or "401"')
        for name, value in flags.items():
            setattr(self, name, value)
        self.signed_out = signed_out

    def error_body(self, status: int, method: str = "GET") -> dict[str, Any]:
        code = {
            400: "INVALID_PARAMETER",
            401: "UNAUTHORIZED",
            403: "FORBIDDEN",
            404: "NOT_FOUND",
            405: "METHOD_NOT_ALLOWED",
            429: "TOO_MANY_REQUESTS",
        }.get(status, "INTERNAL_ERROR" if status >= 500 else "ERROR")
        message = "Not found" if status == 404 else HTTPStatus(status).phrase
        return _errors(code, message)


#: The boolean switches: legacy_routes (the per-kind /user/{public,shared,private,trash} and
#: /user/drafts answer, as a list that moved would),
#: old_modules (every module is an ES module and the redirect drops the query: the sandbox's
#: earlier model), old_node_rules (nodes may carry only id, value and pinned: ditto),
#: public_list_results (/documents/@login answers {results} paged by `page`: unverified).
_FLAGS = ("legacy_routes", "old_modules", "old_node_rules", "public_list_results")

OBSERVABLE_STATE = web.AppKey("observable_state", ObservableState)


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


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
