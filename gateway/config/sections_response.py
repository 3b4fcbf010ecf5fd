"""Section parsers for a route's pagination and response mapping."""

from __future__ import annotations

import re
from typing import Any

from gateway.config.model import FieldExpr, KeepOtherFields, Pagination, ResponseSpec
from gateway.config.node import _kind, _Node
from gateway.config.pagination_keys import STYLE_KEYS, check_pagination
from gateway.config.schema import fields_of, validate
from gateway.config.spec_route import FieldSpec, PaginationSpec
from gateway.config.spec_route import ResponseSpec as ResponseSpecModel
from gateway.config.values import _HEADER_NAME


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _pagination(node: _Node | None) -> Pagination | None:
    """The ``pagination:`` section: ``style`` first (its message explains the styles), then the keys and
    types by the pydantic model, then which keys each style takes (``STYLE_KEYS``) and the dotted paths."""
    if node is None:
        return None
    if not node.is_map():
        node.error(f"expected a mapping, got {_kind(node.value)}")
        return None
    style = node.value.get("style")
    if style not in STYLE_KEYS:
        (node.get("style") or node).error(
            "expected 'before' (the last item's field), 'offset' (limit/offset), 'page' (page number),"
            " 'next_url' (the upstream's next link) or 'cursor' (a token from the body)"
        )
        return None
    spec = validate(node, PaginationSpec, partial=True)
    if spec is None:
        return None
    ok = len(spec.model_fields_set) == len(node.value)  # a key the model refused is reported already
    every = set().union(*STYLE_KEYS.values())
    for key in node.value:
        if key in every and key not in STYLE_KEYS[style]:
            node.child(key).error(f"not a key of style {style!r}; it takes: {', '.join(sorted(STYLE_KEYS[style]))}")
            ok = False
    kw: dict[str, Any] = {"style": style}
    items = spec.items if spec.items is not None else ("" if style == "before" else "results")
    kw["items_path"] = tuple(x for x in items.split(".") if x)
    for key, attr in (
        ("param", "before_param"),
        ("field", "field"),
        ("limit_param", "limit_param"),
        ("offset_param", "offset_param"),
        ("count", "count_key"),
        ("page_param", "page_param"),
        ("size_param", "size_param"),
        ("token_param", "token_param"),
        ("page_size", "page_size"),
        ("default_limit", "default_limit"),
        ("max_limit", "max_limit"),
        ("max_items", "max_items"),
        ("first_page", "first_page"),
    ):
        if (value := getattr(spec, key)) is not None:
            kw[attr] = value
    if "size_param" in node.value and node.value["size_param"] is None:
        kw["size_param"] = ""  # null: the upstream's page size is its own, none is sent
    if style in ("next_url", "cursor"):
        kw.setdefault("size_param", "")  # the page size is sent only when the upstream takes one
    paths = (("total", "total_path"), ("next", "next_path"), ("token", "token_path"), ("has_more", "has_more_path"))
    for key, attr in paths:
        value = getattr(spec, key)
        if value is None:
            continue
        if key == "next" and style == "offset":
            kw["next_key"] = value
        elif not all(value.split(".")):
            node.child(key).error("expected a dotted field path such as 'meta.next_cursor'")
            ok = False
        else:
            kw[attr] = tuple(value.split("."))
    p = Pagination(**kw)
    if p.default_limit > p.max_limit:
        node.error("default_limit cannot exceed max_limit")
    for key, message in check_pagination(p):
        (node.get(key) or node).error(message)
        ok = False
    return p if ok else None


def _field_expr(node: _Node, known: frozenset[str]) -> FieldExpr | None:
    v = node.value
    if isinstance(v, str):
        return FieldExpr("field", path=tuple(v.split(".")))
    if not isinstance(v, dict):
        node.error(f"expected a field name or a mapping ({{field|param|const|location: ...}}), got {_kind(v)}")
        return None
    if not node.keys(fields_of(FieldSpec)):
        return None
    sources = [k for k in ("field", "param", "const", "location") if k in v]
    if len(sources) != 1:
        node.error("give exactly one of field, param, const or location")
        return None
    cast = v.get("type")
    if cast is not None and cast not in ("int", "str", "float", "bool"):
        node.child("type").error("expected int, str, float or bool")
        cast = None
    optional = bool(v.get("optional", False))
    src = sources[0]
    if src == "field":
        return FieldExpr("field", path=tuple(str(v["field"]).split(".")), cast=cast, optional=optional)
    if src == "param":
        name = str(v["param"])
        if name not in known:
            node.child("param").error(f"{name!r} is neither a path nor a declared param")
        return FieldExpr("param", name=name, cast=cast, optional=optional)
    if src == "const":
        return FieldExpr("const", value=_plain(v["const"]), cast=cast)
    try:
        pattern = re.compile(str(v["location"]))
    except re.error as exc:
        node.child("location").error(f"bad regular expression: {exc}")
        return None
    if pattern.groups < 1:
        node.child("location").error("the pattern needs one capture group for the value")
        return None
    return FieldExpr("location", pattern=pattern, cast=cast, optional=optional)


def _mapping(node: _Node, known: frozenset[str]) -> tuple[tuple[str, FieldExpr], ...] | None:
    if not node.is_map("a mapping of stable field → upstream field"):
        return None
    out = []
    for k, fn in node.items():
        fe = _field_expr(fn, known)
        if fe is not None:
            out.append((k, fe))
    return tuple(out)


def _response(node: _Node | None, known: frozenset[str], pagination: Pagination | None) -> ResponseSpec:
    if node is None:
        return ResponseSpec()
    if not node.keys(fields_of(ResponseSpecModel)):
        return ResponseSpec()
    kw: dict[str, Any] = {}
    if (n := node.get("item")) is not None:
        if pagination is not None:  # it would be ignored, and the items served unmapped
            n.error("'item' maps one entity; this route is a collection (it has pagination): use 'items'")
        kw["item"] = _mapping(n, known)
    if (n := node.get("items")) is not None:
        if pagination is None:
            n.error("'items' maps collection items; this route has no pagination (use 'item')")
        kw["items"] = _mapping(n, known)
    if (n := node.get("raw")) is not None and (b := n.boolean()) is not None:
        kw["raw"] = b
        if b and ("item" in node.value or "items" in node.value):
            n.error("a raw response passes the body through; it cannot also map fields")
    if (n := node.get("status")) is not None:
        kw["status"] = n.integer(100, 599)
    if (n := node.get("headers")) is not None and n.is_map():
        hs = []
        for hk, hn in n.items():
            if not _HEADER_NAME.match(hk):
                hn.error(f"{hk!r} is not a valid header name")
            fe = _field_expr(hn, known)
            if fe is not None:
                hs.append((hk, fe))
        kw["headers"] = tuple(hs)
    if (n := node.get("keep_other_fields")) is not None and n.boolean():
        if "item" not in kw:
            n.error("keep_other_fields passes the rest of a single document through; it needs 'item'")
        else:
            kw["item"], kw["keep_other_fields"] = KeepOtherFields(kw["item"]), True
    return ResponseSpec(**kw)
