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

from gateway.errors import Unprocessable

Validator = Callable[[Any, Mapping[str, Any]], Any]

_NODE_KEYS = {"id", "pinned", "value"}


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
        for key in sorted(set(node) - _NODE_KEYS):
            problems.append(f"{where}.{key}: unknown key (allowed: id, pinned, value)")
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
        clean.append({"id": nid, "pinned": pinned, "value": value})
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


VALIDATORS: Mapping[str, Validator] = {
    "observable_new_document": observable_new_document,
}
