"""The Observable sandbox's data: seeded notebooks, session cookies, and the state its switches change."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from .control import SandboxState

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


def _errors(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


_FLAGS = ("legacy_routes", "old_modules", "old_node_rules", "public_list_results")


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
    """One notebook; ``type`` is the list it is in (public, shared, private or trash), which
    ``/user/documents?types=`` filters on and documents do not show."""

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
        """A notebook as ``/document/...`` shows it: the item plus what Observable's documents carry.

        The real documents have no ``type`` (the list a notebook is in is the ``types=`` asked for):
        public ones have ``publish_level`` "public", trashed ones ``trashed: true``.  ``roles`` are
        the signed-in user's on a team notebook (the sandbox has no teams), ``files`` the attachments
        (none seeded), ``latest_version`` the newest version (the one shown: no history here).
        """
        doc = self.item_json(nb)
        owner = self._owner_json(nb.owner)
        doc.update(
            publish_level="public" if nb.type == "public" else None,
            trashed=nb.type == "trash",
            roles=[],
            latest_version=nb.version,
            creator=owner,
            authors=[dict(owner, approved=True)],
            files=[],
            nodes=[dict(n) for n in nb.nodes],
        )
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
