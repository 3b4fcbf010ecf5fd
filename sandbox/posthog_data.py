"""The PostHog sandbox's data: seeded notebooks, keys and scopes, and the state its switches change."""

from __future__ import annotations

import math
import random
import string
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import posthog_paging as paging
from .control import SandboxState

SANDBOX_POSTHOG_KEY = "phx_sandbox_personal_api_key_0123456789"
#: Personal API key scopes the notebook endpoints need (posthog/permissions.py APIScopePermission:
#: GET/HEAD read the viewset's ``scope_object``, other methods write it; the ``activity`` action
#: declares ``required_scopes=["activity_log:read"]`` in products/notebooks/backend/api/notebook.py).
ALL_SCOPES = frozenset({"notebook:read", "notebook:write", "activity_log:read"})
#: DRF LimitOffsetPagination with PAGE_SIZE 100 and no ``max_limit``: any ``limit`` is served whole
DEFAULT_LIMIT = 100

SANDBOX_USER: dict[str, Any] = {
    "id": 1,
    "uuid": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    "distinct_id": "demo-distinct-id-1",
    "first_name": "Demo",
    "email": "demo@example.com",
}
_OTHER_USERS: tuple[dict[str, Any], ...] = (
    {
        "id": 2,
        "uuid": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a6c",
        "distinct_id": "alice-distinct-id-2",
        "first_name": "Alice",
        "email": "alice@example.com",
    },
    {
        "id": 3,
        "uuid": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a7d",
        "distinct_id": "bob-distinct-id-3",
        "first_name": "Bob",
        "email": "bob@example.com",
    },
)

# Seeded notebooks are all older than this, so anything modified "now" sorts first.
_SEED_ANCHOR = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SHORT_ID_CHARS = string.ascii_letters + string.digits
# fmt: off
_WORDS = (
    "funnel", "retention", "cohort", "signup", "churn", "revenue", "pricing", "onboarding",
    "experiment", "feature", "flag", "dashboard", "insight", "trend", "session", "replay",
    "survey", "pipeline", "export", "weekly", "monthly", "review", "launch", "metrics",
)
# fmt: on


def _drf(kind: str, code: str, detail: str, attr: str | None = None) -> dict[str, Any]:
    return {"type": kind, "code": code, "detail": detail, "attr": attr}


def format_time(us: int) -> str:
    """PostHog's timestamp format: ISO-8601 UTC with microseconds and ``Z``."""
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _text_of(content: Any) -> str:
    """Plain text of a ProseMirror document, one line per top-level block."""
    if not isinstance(content, dict):
        return ""

    def walk(node: Any) -> str:
        if not isinstance(node, dict):
            return ""
        if node.get("type") == "text" and isinstance(node.get("text"), str):
            return str(node["text"])
        children = node.get("content")
        return "".join(walk(c) for c in children) if isinstance(children, list) else ""

    blocks = content.get("content")
    if not isinstance(blocks, list):
        return walk(content)
    return "\n".join(walk(b) for b in blocks)


def _document(title: str, paragraphs: list[str]) -> dict[str, Any]:
    return {
        "type": "doc",
        "content": [
            {
                "type": "heading",
                "attrs": {"level": 1},
                "content": [{"type": "text", "text": title}],
            },
            *({"type": "paragraph", "content": [{"type": "text", "text": p}]} for p in paragraphs),
        ],
    }


@dataclass
class PostHogNotebook:
    """One notebook of one project; timestamps are microseconds since the epoch."""

    id: str
    short_id: str
    title: str | None
    created_us: int
    created_by: dict[str, Any]
    last_modified_us: int
    last_modified_by: dict[str, Any]
    content: dict[str, Any] | None
    text_content: str | None
    version: int = 0
    deleted: bool = False
    activity: list[dict[str, Any]] = field(default_factory=list)


class PostHogState(SandboxState):
    """All sandbox data, the accepted keys and the PostHog-only rate-limit switch."""

    service = "posthog"

    def __init__(
        self,
        seed: int = 0,
        *,
        notebook_count: int = 250,
        other_project_notebook_count: int = 12,
        deleted_count: int = 3,
        api_keys: Iterable[str] | None = None,
        scopes: Mapping[str, Iterable[str]] | None = None,
        rate_limit_per_minute: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        #: paging switches (sandbox.posthog_paging)
        self.activity_paging = "page"
        self.list_paging = "offset"
        self.list_link_header = False
        self.clock = clock
        self.api_keys: set[str] = set(api_keys) if api_keys is not None else {SANDBOX_POSTHOG_KEY}
        # a key not named here has every scope, so the demo key keeps working
        self.base_scopes: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in (scopes or {}).items()}
        self.key_scopes: dict[str, frozenset[str]] = {}  # the `key_scopes` switch, over base_scopes
        self.old_version_check = False
        self.old_deleted_404 = False
        self.rate_limit_per_minute = rate_limit_per_minute
        self._hits: dict[str, deque[float]] = {}
        self._rng = random.Random(seed)
        self._short_ids: set[str] = set()
        self._last_us = 0
        self.projects: dict[int, dict[str, PostHogNotebook]] = {1: {}, 2: {}}
        self._seed(1, notebook_count, deleted_count)
        self._seed(2, other_project_notebook_count, 0)

    # -- data -----------------------------------------------------------------

    def _new_uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _new_short_id(self) -> str:
        while True:
            candidate = "".join(self._rng.choice(_SHORT_ID_CHARS) for _ in range(8))
            if candidate not in self._short_ids:
                self._short_ids.add(candidate)
                return candidate

    def _now_us(self) -> int:
        """Now, but always later than any timestamp handed out before (keeps order total)."""
        self._last_us = max(int(self.clock() * 1_000_000), self._last_us + 1)
        return self._last_us

    def _seed(self, project_id: int, count: int, deleted: int) -> None:
        rng = self._rng
        us = (_SEED_ANCHOR - _EPOCH) // timedelta(microseconds=1) - project_id * 1_000_000
        users = (SANDBOX_USER, *_OTHER_USERS)
        for i in range(count + deleted):
            us -= rng.randint(1_000_000, 86_400_000_000)  # strictly decreasing: unique
            words = [rng.choice(_WORDS) for _ in range(rng.randint(2, 4))]
            title = " ".join(words).capitalize()
            paragraphs = [
                " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
                for _ in range(rng.randint(1, 3))
            ]
            content = _document(title, paragraphs)
            created_by = rng.choice(users)
            created_us = us - rng.randint(0, 30 * 86_400_000_000)
            nb = PostHogNotebook(
                id=self._new_uuid(),
                short_id=self._new_short_id(),
                title=title,
                created_us=created_us,
                created_by=created_by,
                last_modified_us=us,
                last_modified_by=rng.choice(users),
                content=content,
                text_content=_text_of(content),
                version=rng.randint(0, 25),
                deleted=i >= count,
            )
            nb.activity.append(self._activity(nb, "created", created_by, created_us, None))
            self.projects[project_id][nb.short_id] = nb
        self._last_us = max(self._last_us, (_SEED_ANCHOR - _EPOCH) // timedelta(microseconds=1))

    def _activity(
        self,
        nb: PostHogNotebook,
        activity: str,
        user: dict[str, Any],
        at_us: int,
        changes: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        return {
            "id": self._new_uuid(),
            "user": dict(user),
            "activity": activity,
            "scope": "Notebook",
            "item_id": nb.short_id,
            "detail": {
                "changes": changes,
                "trigger": None,
                "name": nb.title,
                "short_id": nb.short_id,
                "type": None,
            },
            "created_at": format_time(at_us),
        }

    def visible(self, project_id: int) -> list[PostHogNotebook]:
        """Non-deleted notebooks of a project, ordered by ``-last_modified_at``."""
        found = [nb for nb in self.projects[project_id].values() if not nb.deleted]
        return sorted(found, key=lambda nb: nb.last_modified_us, reverse=True)

    def get(self, project_id: int, short_id: str, *, deleted_too: bool = False) -> PostHogNotebook | None:
        """A notebook (a deleted one only if ``deleted_too``), or None."""
        nb = self.projects[project_id].get(short_id)
        return None if nb is None or (nb.deleted and not deleted_too) else nb

    def scopes_of(self, key: str) -> frozenset[str]:
        """The scopes of an accepted key: the switch's, else the constructor's, else all."""
        return self.key_scopes.get(key, self.base_scopes.get(key, ALL_SCOPES))

    def item_json(self, nb: PostHogNotebook) -> dict[str, Any]:
        """A notebook as the list shows it (no content)."""
        return {
            "id": nb.id,
            "short_id": nb.short_id,
            "title": nb.title,
            "deleted": nb.deleted,
            "created_at": format_time(nb.created_us),
            "created_by": dict(nb.created_by),
            "last_modified_at": format_time(nb.last_modified_us),
            "last_modified_by": dict(nb.last_modified_by),
            "user_access_level": "editor",
        }

    def detail_json(self, nb: PostHogNotebook) -> dict[str, Any]:
        """A notebook as the detail endpoint shows it."""
        out = self.item_json(nb)
        out["content"] = nb.content
        out["text_content"] = nb.text_content
        out["version"] = nb.version
        return out

    def create(
        self,
        project_id: int,
        title: str | None,
        content: dict[str, Any] | None,
        text_content: str | None = None,
    ) -> PostHogNotebook:
        now = self._now_us()
        nb = PostHogNotebook(
            id=self._new_uuid(),
            short_id=self._new_short_id(),
            title=title,
            created_us=now,
            created_by=SANDBOX_USER,
            last_modified_us=now,
            last_modified_by=SANDBOX_USER,
            content=content,
            text_content=text_content,  # stored as sent: PostHog derives nothing from content
        )
        nb.activity.append(self._activity(nb, "created", SANDBOX_USER, now, None))
        self.projects[project_id][nb.short_id] = nb
        return nb

    def update(self, nb: PostHogNotebook, changes: Mapping[str, Any]) -> None:
        """Apply already-checked PATCH fields and record the activity.

        Like ``NotebookSerializer.update``: non-empty ``content`` sets ``version`` to the
        old one plus one; otherwise ``version`` is a plain writable field, stored as sent
        (so a stale one rolls the counter back).  ``text_content`` is never derived from
        ``content``: the client sends it (PostHog's own front end does), else it goes stale.
        ``old_version_check`` restores the sandbox's earlier model: read-only version, bumped
        only when content changes.
        """
        now = self._now_us()
        recorded: list[dict[str, Any]] = []
        changes = dict(changes)
        if self.old_version_check:
            changes.pop("version", None)
        elif changes.get("content"):
            changes["version"] = nb.version + 1
        for name in ("title", "content", "text_content", "deleted", "version"):
            if name not in changes or getattr(nb, name) == changes[name]:
                continue
            recorded.append(
                {
                    "type": "Notebook",
                    "action": "changed",
                    "field": name,
                    "before": getattr(nb, name),
                    "after": changes[name],
                }
            )
            setattr(nb, name, changes[name])
            if name == "content" and self.old_version_check:
                nb.version += 1
        nb.last_modified_us = now
        nb.last_modified_by = SANDBOX_USER
        nb.activity.append(self._activity(nb, "updated", SANDBOX_USER, now, recorded))

    def throttle_wait(self, key: str) -> int | None:
        """Seconds until ``key`` may call again, or None (and the call is recorded)."""
        limit = self.rate_limit_per_minute
        if limit is None:
            return None
        now = self.clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - 60:
            hits.popleft()
        if len(hits) >= limit:
            return max(1, math.ceil(hits[0] + 60 - now))
        hits.append(now)
        return None

    # -- switches -------------------------------------------------------------

    def reset_switches(self) -> None:
        super().reset_switches()
        self.rate_limit_per_minute = None
        self._hits.clear()
        self.key_scopes = {}
        self.old_version_check = False
        self.old_deleted_404 = False
        self.activity_paging = "page"
        self.list_paging = "offset"
        self.list_link_header = False

    def switches_json(self) -> dict[str, Any]:
        out = super().switches_json()
        out["rate_limit_per_minute"] = self.rate_limit_per_minute
        out["key_scopes"] = {k: sorted(v) for k, v in sorted(self.key_scopes.items())}
        out["old_version_check"] = self.old_version_check
        out["old_deleted_404"] = self.old_deleted_404
        out["activity_paging"] = self.activity_paging
        out["list_paging"] = self.list_paging
        out["list_link_header"] = self.list_link_header
        return out

    def _apply_extra_switches(self, body: Mapping[str, Any]) -> None:
        limit = body.get("rate_limit_per_minute", self.rate_limit_per_minute)
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
            raise ValueError("rate_limit_per_minute must be an integer or null")
        key_scopes = dict(self.key_scopes)
        raw_scopes = body.get("key_scopes", {})
        if not isinstance(raw_scopes, Mapping):
            raise ValueError("key_scopes must be an object: {key: [scope, ...] or null}")
        for key, scopes in raw_scopes.items():
            if scopes is None:
                key_scopes.pop(key, None)
            elif isinstance(scopes, list) and all(isinstance(x, str) for x in scopes):
                key_scopes[key] = frozenset(scopes)
            else:
                raise ValueError("key_scopes values must be lists of scope names, or null")
        flags = {name: body.get(name, getattr(self, name)) for name in ("old_version_check", "old_deleted_404")}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a boolean")
        activity = body.get("activity_paging", self.activity_paging)
        if activity not in paging.ACTIVITY_PAGING:
            raise ValueError(f"activity_paging must be one of {list(paging.ACTIVITY_PAGING)}")
        listing = body.get("list_paging", self.list_paging)
        if listing not in paging.LIST_PAGING:
            raise ValueError(f"list_paging must be one of {list(paging.LIST_PAGING)}")
        link = body.get("list_link_header", self.list_link_header)
        if not isinstance(link, bool):
            raise ValueError("list_link_header must be a boolean")
        if limit != self.rate_limit_per_minute:
            self._hits.clear()
        self.rate_limit_per_minute = limit
        self.key_scopes = key_scopes
        self.old_version_check = flags["old_version_check"]
        self.old_deleted_404 = flags["old_deleted_404"]
        self.activity_paging, self.list_paging, self.list_link_header = activity, listing, link

    def error_body(self, status: int, method: str = "GET") -> dict[str, Any]:
        if status == 400:
            return _drf("validation_error", "invalid_input", "Invalid input.")
        if status == 401:
            return _drf(
                "authentication_error",
                "not_authenticated",
                "Authentication credentials were not provided.",
            )
        if status == 403:
            return _drf(
                "authentication_error",
                "permission_denied",
                "You do not have permission to perform this action.",
            )
        if status == 404:
            return _drf("invalid_request", "not_found", "Not found.")
        if status == 405:
            return _drf("invalid_request", "method_not_allowed", f'Method "{method}" not allowed.')
        if status == 429:
            detail = "Request was throttled. Expected available in 60 seconds."
            return _drf("throttled_error", "throttled", detail)
        return _drf("server_error", "error", "A server error occurred.")
