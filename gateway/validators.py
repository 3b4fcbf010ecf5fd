"""Named request-body validators that routes.yaml can attach with ``validate: NAME``.

Some upstream rules are too intricate for a declarative schema (distinct ids, a
version tied to the node count) yet must be checked *before* forwarding: a write
the upstream rejects halfway is worse than one never sent.  Each validator gets the
parsed JSON body and the route's params, and returns the body to forward or raises
``Unprocessable`` listing every problem at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.config.names import VALIDATOR_NAMES
from gateway.errors import Unprocessable

Validator = Callable[[Any, Mapping[str, Any]], Any]

# What modern Observable nodes carry besides id/value (notebook-kit's client, community exporters):
# mode (md, js, html...), name, data and pinned.  Only these keys are forwarded.
_NODE_KEYS = ("id", "value", "pinned", "mode", "name", "data")


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number"
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def observable_new_document(body: Any, params: Mapping[str, Any]) -> Any:
    """Observable's ``/document/new`` rules; ``reindex=true`` repairs ids and version."""
    if not isinstance(body, dict):
        raise Unprocessable("the body must be a JSON object", details=["body: expected an object"])
    problems: list[str] = []
    reindex = bool(params.get("reindex"))
    nodes = body.get("nodes")
    if not isinstance(nodes, list):
        problems.append(
            "nodes: required (a list)" if "nodes" not in body else f"nodes: must be a list, got {_kind(nodes)}"
        )
        nodes = []
    allowed_top = {"nodes", "version", "title"}
    for key in sorted(set(body) - allowed_top):
        problems.append(f"{key}: unknown key (allowed: {', '.join(sorted(allowed_top))})")
    if "title" in body and not isinstance(body["title"], str):
        problems.append("title: must be a string")
    clean: list[dict[str, Any]] = []
    seen: dict[int, int] = {}
    for i, node in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(node, dict):
            problems.append(f"{where}: must be an object")
            continue
        for key in sorted(set(node) - set(_NODE_KEYS)):
            problems.append(f"{where}.{key}: unknown key (allowed: {', '.join(_NODE_KEYS)})")
        nid: Any = node.get("id")
        if "id" not in node:
            if not reindex:
                problems.append(f"{where}.id: required")
        elif not _is_int(nid) or nid < 0:
            if not reindex:
                problems.append(f"{where}.id: must be a non-negative integer, got {nid!r}")
        elif nid in seen and not reindex:
            problems.append(f"{where}.id: {nid} is used twice (also nodes[{seen[nid]}])")
        else:
            seen.setdefault(nid, i)
        pinned = node.get("pinned", False)
        if not isinstance(pinned, bool):
            problems.append(f"{where}.pinned: must be true or false")
        value = node.get("value", "")
        if not isinstance(value, str):
            problems.append(f"{where}.value: must be a string")
        if "mode" in node and not isinstance(node["mode"], str):
            problems.append(f"{where}.mode: must be a string such as md, js or html, got {_kind(node['mode'])}")
        if node.get("name") is not None and not isinstance(node["name"], str):
            problems.append(f"{where}.name: must be a string or null, got {_kind(node['name'])}")
        extra = {k: node[k] for k in ("mode", "name", "data") if k in node}
        clean.append({"id": nid, "pinned": pinned, "value": value, **extra})
    version: Any = body.get("version")
    if reindex:
        for i, node in enumerate(clean):
            node["id"] = i
        # the smallest valid version: above len(nodes), and ids are now 0..n-1
        version = len(clean) + 1
    elif "version" not in body:
        problems.append("version: required")
    elif not _is_int(version):
        problems.append(f"version: must be an integer, got {version!r}")
    else:
        if version <= len(nodes):
            problems.append(f"version: must be greater than the number of nodes ({len(nodes)}), got {version}")
        ids = [n["id"] for n in clean if _is_int(n["id"])]
        if ids and version < max(ids):
            problems.append(f"version: must not be less than the largest node id ({max(ids)}), got {version}")
    if problems:
        raise Unprocessable(
            f"the notebook is invalid: {len(problems)} problem(s)", code="invalid_document", details=problems
        )
    out: dict[str, Any] = {"nodes": clean, "version": version}
    if "title" in body:
        out["title"] = body["title"]
    return out


# What PostHog's NotebookSerializer writes on update, and the type DRF validates each against.
# Its read-only fields are dropped without a word (a PATCH of only those changes nothing but
# last_modified_at), as is a misspelt field: both are refused here, naming the field.
_NOTEBOOK_WRITABLE: Mapping[str, tuple[tuple[type, ...], str]] = {
    "title": ((str, type(None)), "a string or null"),
    "content": ((dict, type(None)), "an object (ProseMirror JSON) or null"),
    "text_content": ((str, type(None)), "a string or null"),
    "version": ((int,), "an integer"),
    "deleted": ((bool,), "true or false"),
}
_NOTEBOOK_READ_ONLY = (
    "id",
    "short_id",
    "created_at",
    "created_by",
    "last_modified_at",
    "last_modified_by",
    "user_access_level",
    "updated_at",  # the gateway's name for last_modified_at
)


def _notebook_field_problems(body: Mapping[str, Any]) -> list[str]:
    """A problem for each field PostHog would ignore, and each writable one of the wrong type."""
    problems: list[str] = []
    allowed = ", ".join(_NOTEBOOK_WRITABLE)
    for key in sorted(set(body) - set(_NOTEBOOK_WRITABLE)):
        if key in _NOTEBOOK_READ_ONLY:
            problems.append(f"{key}: read-only (PostHog ignores it; writable: {allowed})")
        else:
            problems.append(f"{key}: unknown field (writable: {allowed})")
    for key, (types, kind) in _NOTEBOOK_WRITABLE.items():
        if key == "version" or key not in body:  # version: checked with content below
            continue
        value = body[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            problems.append(f"{key}: must be {kind}, got {_kind(value)}")
    return problems


def posthog_notebook_update(body: Any, params: Mapping[str, Any]) -> Any:
    """PostHog's PATCH checks ``version`` only when ``content`` is non-empty, and otherwise
    stores the ``version`` it is sent (NotebookSerializer.update): a title-only PATCH with a
    stale version would roll the counter back.  So content needs a version, and a version
    needs content.  A field PostHog does not write (misspelt, or read-only) would be dropped
    silently and the PATCH answered 200: refused too, as is an empty body (it would change nothing
    but the notebook's place in the list).  The body is forwarded unchanged."""
    if not isinstance(body, dict):
        raise Unprocessable("the body must be a JSON object", details=["body: expected an object"])
    problems = _notebook_field_problems(body)
    if not body:  # PostHog would answer 200 and bump last_modified_at: the notebook jumps to the list's top
        problems.append(f"body: nothing to update (writable: {', '.join(_NOTEBOOK_WRITABLE)})")
    has_content = bool(body.get("content"))
    if has_content and "version" not in body:
        problems.append("version: required with non-empty content (the notebook's current version, from a GET)")
    elif has_content and not _is_int(body["version"]):
        problems.append(f"version: must be an integer, got {body['version']!r}")
    elif "version" in body and not has_content:
        problems.append(
            "version: only allowed with non-empty content"
            " (PostHog would store it as sent and roll the notebook's version back)"
        )
    if problems:
        raise Unprocessable(
            f"the notebook update is invalid: {len(problems)} problem(s)", code="invalid_update", details=problems
        )
    return body


def posthog_notebook_create(body: Any, params: Mapping[str, Any]) -> Any:
    """PostHog's create drops a field it does not write as silently as its PATCH does: ``{"titel": ...}``
    made an untitled, empty notebook and answered 201.  Refused here, naming the field, as are
    writable fields of the wrong type.  An empty body is a new untitled notebook, as PostHog makes it.
    The body is forwarded unchanged."""
    if not isinstance(body, dict):
        raise Unprocessable("the body must be a JSON object", details=["body: expected an object"])
    problems = _notebook_field_problems(body)
    if "version" in body and not _is_int(body["version"]):
        problems.append(f"version: must be an integer, got {body['version']!r}")
    if problems:
        raise Unprocessable(
            f"the new notebook is invalid: {len(problems)} problem(s)", code="invalid_document", details=problems
        )
    return body


VALIDATORS: Mapping[str, Validator] = {
    "observable_new_document": observable_new_document,
    "posthog_notebook_create": posthog_notebook_create,
    "posthog_notebook_update": posthog_notebook_update,
}

# config checks ``validate:`` names against its own list (it imports no runtime code): keep both in step
if set(VALIDATORS) != VALIDATOR_NAMES:  # pragma: no cover - a developer's mistake, caught by any import
    raise ImportError(
        f"gateway.config.names.VALIDATOR_NAMES {sorted(VALIDATOR_NAMES)} != validators {sorted(VALIDATORS)}"
    )
