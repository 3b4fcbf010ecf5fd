"""Section parsers for a route's pagination and response mapping."""

from __future__ import annotations

import re
from typing import Any

from gateway.config.model import FieldExpr, KeepOtherFields, Pagination, ResponseSpec
from gateway.config.node import _Node
from gateway.config.pagination_keys import STYLE_KEYS, check_pagination
from gateway.config.schema import validate
from gateway.config.spec_calls import FieldSpec, PaginationSpec
from gateway.config.spec_calls import ResponseSpec as ResponseSpecModel
from gateway.config.values import _HEADER_NAME


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _pagination(node: _Node | None) -> Pagination | None:
    """The ``pagination:`` section: the keys and types by the pydantic model (``style`` with its styles
    explained), then which keys each style takes (``STYLE_KEYS``) and the dotted paths."""
    if node is None:
        return None
    spec = validate(node, PaginationSpec, partial=True)
    if spec is None or not isinstance(node.value, dict):  # a wrong style included: nothing to check keys against
        return None
    style = spec.style
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


def _field_expr(ref: str | FieldSpec, node: _Node, known: frozenset[str]) -> FieldExpr:
    """One stable field's source, read by its model (``FieldSpec``); a ``param`` must be one the route has."""
    if isinstance(ref, str):
        return FieldExpr("field", path=tuple(ref.split(".")))
    cast, optional = ref.type, bool(ref.optional)
    if ref.field is not None:
        return FieldExpr("field", path=tuple(ref.field.split(".")), cast=cast, optional=optional)
    if ref.param is not None:
        if ref.param not in known:
            node.child("param").error(f"{ref.param!r} is neither a path nor a declared param")
        return FieldExpr("param", name=ref.param, cast=cast, optional=optional)
    if ref.location is not None:
        return FieldExpr("location", pattern=re.compile(ref.location), cast=cast, optional=optional)
    return FieldExpr("const", value=_plain(ref.const), cast=cast)


def _mapping(refs: dict[str, str | FieldSpec], node: _Node, known: frozenset[str]) -> tuple[tuple[str, FieldExpr], ...]:
    return tuple((k, _field_expr(ref, node.child(k), known)) for k, ref in refs.items())


def _response(node: _Node | None, known: frozenset[str], pagination: Pagination | None) -> ResponseSpec:
    """``response:``: keys and types by its pydantic model (each field's source too), then what spans keys
    or the route: item for one entity and items for a collection, raw without mappings, header names."""
    if node is None:
        return ResponseSpec()
    spec = validate(node, ResponseSpecModel, partial=True)
    if spec is None or not isinstance(node.value, dict):
        return ResponseSpec()
    given = node.value
    kw: dict[str, Any] = {}
    if "item" in given and pagination is not None:  # it would be ignored, and the items served unmapped
        node.child("item").error("'item' maps one entity; this route is a collection (it has pagination): use 'items'")
    if "items" in given and pagination is None:
        node.child("items").error("'items' maps collection items; this route has no pagination (use 'item')")
    if spec.item is not None:
        kw["item"] = _mapping(spec.item, node.child("item"), known)
    if spec.items is not None:
        kw["items"] = _mapping(spec.items, node.child("items"), known)
    if spec.raw is not None:
        kw["raw"] = spec.raw
        if spec.raw and ("item" in given or "items" in given):
            node.child("raw").error("a raw response passes the body through; it cannot also map fields")
    if spec.status is not None:
        kw["status"] = spec.status
    if spec.headers is not None:
        for hk in spec.headers:
            if not _HEADER_NAME.match(hk):
                node.child("headers").child(hk).error(f"{hk!r} is not a valid header name")
        kw["headers"] = _mapping(spec.headers, node.child("headers"), known)
    if spec.keep_other_fields:
        if "item" not in given:
            node.child("keep_other_fields").error(
                "keep_other_fields passes the rest of a single document through; it needs 'item'"
            )
        elif "item" in kw:
            kw["item"], kw["keep_other_fields"] = KeepOtherFields(kw["item"]), True
    return ResponseSpec(**kw)
