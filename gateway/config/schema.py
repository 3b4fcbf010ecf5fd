"""The routes.yaml models at work: the JSON Schema editors read, and pydantic errors as ``file:line: key`` problems.

``gateway schema`` prints :func:`render`; the committed ``routes.schema.json`` is its output, which
the shipped routes.yaml names in its ``# yaml-language-server: $schema=`` line.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Set as AbstractSet
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, Tag, ValidationError

from gateway.config.node import _closest, _kind, _Node
from gateway.config.spec_route import DocumentSpec
from gateway.config.spec_types import Wording

M = TypeVar("M", bound=BaseModel)

_UNKNOWN = object()
#: union branch names in an error's loc that say only which kind of value was tried there
_KIND_TAGS = {"scalar", "mapping", "list", "str", "int", "float", "bool"}

#: a ``${VAR}`` string stands for any scalar: the editor cannot know the environment
_INTERPOLATED = {"type": "string", "pattern": r"\$\{"}


@functools.cache
def fields_of(model: type[BaseModel]) -> frozenset[str]:
    """The keys a section takes, as written in routes.yaml (aliases such as ``from``)."""
    return frozenset(f.alias or name for name, f in model.model_fields.items())


@functools.cache
def required_of(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(f.alias or name for name, f in model.model_fields.items() if f.is_required())


def json_schema() -> dict[str, Any]:
    """The JSON Schema of routes.yaml (draft 2020-12), for editors' validation and completion."""
    schema = DocumentSpec.model_json_schema(by_alias=True)
    _relax(schema)
    schema["patternProperties"] = {"^x-": {"description": "YAML anchors for merge keys (<<: *name); not read."}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def render() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def _relax(node: Any) -> None:
    """An absent key is written by leaving it out, not as ``null``; a scalar may be a ``${VAR}``."""
    if isinstance(node, list):
        for item in node:
            _relax(item)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        _relax(value)
    for prop in (node.get("properties") or {}).values():
        if prop.pop("nullable", False):  # null means something here (a key written as ``null`` on purpose)
            prop.pop("default", None)
            continue
        if prop.get("default", 0) is None and "anyOf" in prop:
            prop.pop("default")
            prop["anyOf"] = [s for s in prop["anyOf"] if s != {"type": "null"}]
            if len(prop["anyOf"]) == 1:
                prop.update(prop.pop("anyOf")[0])
    if node.get("type") in ("integer", "number", "boolean"):
        plain = {k: node.pop(k) for k in list(node) if k not in ("description", "title", "default")}
        node["anyOf"] = [plain, _INTERPOLATED]


def validate(
    node: _Node,
    model: type[M],
    hand: AbstractSet[str] = frozenset(),
    *,
    partial: bool = False,
    required: AbstractSet[str] = frozenset(),
) -> M | None:
    """Parse one section with its model; every error becomes a problem at its own key and line.

    ``hand`` names keys read on their own (by their own model, or by hand), left out of this one.
    ``partial``: where some keys are wrong, the section of the other keys (None if that fails too), so
    the checks spanning keys still report on them: every problem of a file is listed at once. A key
    holding a mapping of names (``params: {NAME: ...}``) loses only its wrong entries.
    ``required``: keys the model leaves optional so that one wrong key keeps the others (``partial``),
    told missing here as the model would tell them (not where an unknown key is taken for one)."""
    if required and isinstance(node.value, dict):
        allowed = fields_of(model)
        hinted = {_closest(k, allowed) for k in node.value if k not in allowed}
        for key in sorted(required - set(node.value) - hinted):
            node.error(f"missing required key {key!r}")
    value = {k: v for k, v in node.value.items() if k not in hand} if isinstance(node.value, dict) else node.value
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        report(node, model, exc)
        if not partial or not isinstance(value, dict):
            return None
        wrong: set[Any] = set()
        entries: dict[Any, set[Any]] = {}  # a mapping of NAME → value keeps its good entries
        for err in exc.errors(include_input=False, include_url=False):
            loc = err["loc"]
            if len(loc) > 1 and isinstance(value.get(loc[0]), dict) and get_origin(_walk(model, loc[:1])[0]) is dict:
                entries.setdefault(loc[0], set()).add(loc[1])
            elif loc:
                wrong.add(loc[0])
    rest = {k: v for k, v in value.items() if k not in wrong}
    for key, bad in entries.items():
        if key in rest:
            rest[key] = {name: v for name, v in rest[key].items() if name not in bad}
    try:
        return model.model_validate(rest)
    except ValidationError:
        return None


def report(node: _Node, model: type[BaseModel], exc: ValidationError) -> None:
    """Map pydantic's errors to the gateway's wording; inputs are never included (they may be secrets)."""
    errors = exc.errors(include_input=False, include_url=False)
    hinted: dict[tuple[Any, ...], set[str]] = {}
    for err in errors:  # a misspelt key is reported once, as unknown, and not also as missing
        if err["type"] == "extra_forbidden":
            parent, key = err["loc"][:-1], str(err["loc"][-1])
            hint = _closest(key, _allowed(model, parent))
            hinted.setdefault(parent, set()).add(hint or "")
    for err in errors:
        loc = err["loc"]
        kind = err["type"]
        if kind == "missing":
            if str(loc[-1]) in hinted.get(loc[:-1], set()):
                continue
            where, message = _at(node, loc[:-1]), f"missing required key {loc[-1]!r}"
            if (wording := _walk(model, loc)[1]) is not None and wording.choices:  # say what to choose from
                message += f": {wording.text()}"
        elif kind == "extra_forbidden" and _walk(model, loc[:-1])[2]:
            # within a secret, a stray key may be the secret itself ({sk_live_...}): neither the
            # message nor the key path names it
            allowed = _allowed(model, loc[:-1])
            hint = f" (did you mean {h!r}?)" if (h := _closest(str(loc[-1]), allowed)) else ""
            where = _at(node, loc[:-1])
            message = f"an unknown key{hint}, not shown as it may be a secret; allowed: {', '.join(sorted(allowed))}"
        else:
            where = _at(node, loc)
            # a union's branch (``cursor_key.SecretSourceSpec``) is no place in the document: its value is unknown
            # (a by-kind union's tag names the kind of the value there, which is known)
            bare = tuple(p for p in loc if p not in _KIND_TAGS)
            value = where.value if where.path in (_path(node, loc), _path(node, bare)) else _UNKNOWN
            message = _message(err, value, model, loc)
        where.error(message)


def _path(node: _Node, loc: tuple[Any, ...]) -> str:
    path = node.path
    for part in loc:
        path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path else str(part))
    return path


def _at(node: _Node, loc: tuple[Any, ...]) -> _Node:
    """The deepest node of ``loc`` that exists in the document (a union's branch names are skipped)."""
    for part in loc:
        if _has(node.value, part):
            node = node.child(part)
    return node


def _has(value: Any, part: Any) -> bool:
    if isinstance(value, dict):
        return isinstance(part, str) and part in value
    return isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> frozenset[str]:
    sub = _walk(model, loc)[0]
    return fields_of(sub) if isinstance(sub, type) and issubclass(sub, BaseModel) else frozenset()


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Any, Wording | None, bool]:
    """Follow an error's ``loc`` through the model's types: the type it ends at, the innermost
    :class:`Wording` on the way (a model field's own, else its type's), and whether a secret was passed."""
    ann: Any = model
    wording: Wording | None = None
    secret = False
    for part in loc:
        ann, wording, secret = _open(ann, wording, secret)
        if _is_union(ann):  # the part names the branch
            named = [b for b in get_args(ann) if _tag(b) == part]
            if not named:
                return None, wording, secret  # a branch that is not a model or a tagged type: a scalar's error
            ann = named[0]
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            field = next((f for n, f in ann.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None, wording, secret
            ann = field.annotation
            wording = next((m for m in field.metadata if isinstance(m, Wording)), None)
            secret = secret or bool(wording and wording.secret)
        elif get_origin(ann) in (dict, list):  # an entry speaks for itself, not as the whole mapping or list
            ann, wording = get_args(ann)[-1], None
        else:
            return None, wording, secret
    return _open(ann, wording, secret)


def _open(ann: Any, wording: Wording | None, secret: bool) -> tuple[Any, Wording | None, bool]:
    """Unwrap ``Annotated`` (keeping its wording) and ``X | None`` down to the type a ``loc`` steps into."""
    while True:
        ann, found = _unwrap(ann)
        if found is not None:
            wording, secret = found, secret or found.secret
        branches = [b for b in get_args(ann) if b is not type(None)] if _is_union(ann) else []
        if len(branches) != 1:
            return ann, wording, secret
        ann = branches[0]


def _unwrap(ann: Any) -> tuple[Any, Wording | None]:
    wording = None
    while get_origin(ann) is Annotated:
        wording = next((m for m in ann.__metadata__ if isinstance(m, Wording)), wording)
        ann = get_args(ann)[0]
    return ann, wording


def _is_union(ann: Any) -> bool:
    return get_origin(ann) in (Union, UnionType)


def _tag(ann: Any) -> str | None:
    """The name pydantic gives a union's branch in an error's ``loc``."""
    if get_origin(ann) is Annotated:
        tag = next((m for m in ann.__metadata__ if isinstance(m, Tag)), None)
        return str(tag.tag) if tag is not None else _tag(get_args(ann)[0])
    return ann.__name__ if isinstance(ann, type) else None


def _message(err: Any, value: Any, model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed = _allowed(model, loc[:-1])
        hint = _closest(str(loc[-1]), allowed)
        return (
            f"unknown key {loc[-1]!r}"
            + (f" (did you mean {hint!r}?)" if hint else "")
            + f"; allowed: {', '.join(sorted(allowed))}"
        )
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    _, wording, secret = _walk(model, loc)
    # a string is named by its kind only: it may be a secret, interpolated from the environment;
    # within a secret, not even a number or a kind is said
    got = ", got a string" if isinstance(value, str) else f", got {_kind(value)}"
    if kind == "too_short":
        got = f", got an empty {'list' if isinstance(value, list) else 'one'}"
    if secret or value is _UNKNOWN:
        got = ""
    if wording is not None and wording.secret and kind == "too_short":  # an empty list of sources
        return f"expected a non-empty list, each {wording.text()}"
    if wording is not None:
        return f"expected {wording.text()}" + ("" if wording.choices and isinstance(value, str) else got)
    if secret and kind in ("greater_than_equal", "less_than_equal"):
        return f"must be at {'least' if kind == 'greater_than_equal' else 'most'} {ctx.get('ge', ctx.get('le'))}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer{got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false{got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping{got}"
    if kind == "too_short":
        return "expected a non-empty list, got an empty one"
    if kind == "list_type":
        return f"expected a non-empty list{got}"
    if kind in ("string_type",):
        return f"expected a string{got}"
    if kind == "literal_error":
        return f"expected {ctx['expected']}{got}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, got {value}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, got {value}"
    return str(err["msg"])
