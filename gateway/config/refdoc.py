"""The configuration reference (docs/configuration.md, below its worked example), generated from the models.

``python -m gateway.config.refdoc docs/configuration.md`` rewrites the generated part in place;
tests/test_docs.py fails when it is stale, so a key cannot be added without its documentation.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from gateway.config.spec_route import DocumentSpec
from gateway.config.spec_types import SecretSourceSpec

MARKER = "<!-- generated from gateway/config/spec_*.py by `python -m gateway.config.refdoc`: do not edit below -->"

_KINDS = {
    "parse_duration": "duration",
    "parse_size": "size",
    "parse_ratio": "share",
    "parse_rate": "rate",
    "_client_rate": "rate",
}
_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null", object: "any"}


def render() -> str:
    """The generated reference: one table per section, in the order the file is read."""
    seen: set[type[BaseModel]] = set()
    out = [MARKER, "", "## Reference", ""]
    out.append(
        "Every key routes.yaml takes, generated from the config models (the same text editors show from "
        "`routes.schema.json`). `NAME` stands for a name you choose. A *duration* is `250ms`, `5s`, `1h30m`; "
        "a *size* is bytes or `512kb`, `1MiB`; a *share* is `20%` or `0.2`; a *rate* is `480/1m`; "
        "a *secret* is `{env: VAR}`, `{file: PATH}` or `{file_env: VAR}` (or a list of them, tried in order)."
    )
    for path, model in _sections(DocumentSpec, "", seen):
        out += ["", f"### `{path or 'routes.yaml'}`", "", _doc(model), "", "| Key | Type | Default | Description |"]
        out.append("|---|---|---|---|")
        for name, info in model.model_fields.items():
            key = info.alias or name
            default = "required" if info.is_required() else _default(info.default, _metadata_kind(info.metadata))
            kind = _type(info.annotation, info.metadata) + _bounds(info.metadata)
            out.append(f"| `{key}` | {kind} | {default} | {_cell(info.description or '')} |")
    return "\n".join(out) + "\n"


def _sections(model: type[BaseModel], path: str, seen: set[type[BaseModel]]) -> Iterator[tuple[str, type[BaseModel]]]:
    if model in seen or model is SecretSourceSpec:
        return
    seen.add(model)
    yield path, model
    for name, info in model.model_fields.items():
        key = info.alias or name
        for sub, suffix in _models_in(info.annotation, ""):
            yield from _sections(sub, f"{path}.{key}{suffix}" if path else f"{key}{suffix}", seen)


def _models_in(annotation: Any, suffix: str) -> Iterator[tuple[type[BaseModel], str]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, suffix
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from _models_in(args[0], suffix)
    elif origin is dict:
        yield from _models_in(args[1], suffix + ".NAME")
    elif origin is list:
        yield from _models_in(args[0], suffix + "[]")
    elif origin in (Union, types.UnionType):
        for arg in args:
            yield from _models_in(arg, suffix)


def _metadata_kind(metadata: list[Any]) -> str | None:
    for m in metadata:
        name = getattr(getattr(m, "func", None), "__name__", "")
        if name in _KINDS:
            return _KINDS[name]
    return None


def _type(annotation: Any, metadata: list[Any] = ()) -> str:  # type: ignore[assignment]
    if (kind := _metadata_kind(list(metadata))) is not None:
        return kind
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0], list(args[1:]))
    if annotation is SecretSourceSpec:
        return "secret"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if origin is Literal:
        return " \\| ".join(f"`{str(a).lower() if isinstance(a, bool) else a}`" for a in args)
    if origin is list:
        inner = _type(args[0])
        return "secret" if inner == "secret" else f"list of {inner}"
    if origin is dict:
        return f"mapping of name → {_type(args[1])}"
    if origin in (Union, types.UnionType):
        names = list(dict.fromkeys(_type(a) for a in args if a is not type(None)))
        return " or ".join(names)
    if annotation is Any:
        return "any"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _bounds(metadata: list[Any]) -> str:
    lo = next((m.ge for m in metadata if hasattr(m, "ge")), None)
    hi = next((m.le for m in metadata if hasattr(m, "le")), None)
    if lo is not None and hi is not None:
        return f", {lo} to {hi}"
    return f", at least {lo}" if lo is not None else (f", at most {hi}" if hi is not None else "")


def _default(value: Any, kind: str | None) -> str:
    if value is None or value is PydanticUndefined:
        return ""
    if kind == "duration":
        return f"`{value:g}s`"
    if kind == "share":
        return f"`{value:.0%}`"
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _doc(model: type[BaseModel]) -> str:
    return " ".join(line.strip() for line in (model.__doc__ or "").strip().splitlines())


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def write(path: Path) -> None:
    """Replace what follows the marker (or append it) with the generated reference."""
    text = path.read_text(encoding="utf-8")
    head = text.split(MARKER)[0].rstrip("\n")
    path.write_text(head + "\n\n" + render(), encoding="utf-8")


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/configuration.md"))
