"""Walking the document: a position with its key path and line, problems collected, ``${VAR}`` expanded.

Its keys and values are read by the models (gateway.config.schema.validate); a node only says where."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from gateway.config.errors import Problem
from gateway.config.values import _ENV_REF
from gateway.config.yamlload import LocatedDict, LocatedList


class _Ctx:
    """Collects problems while walking the document, so all are reported at once."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.problems: list[Problem] = []
        #: mappings and lists already expanded, with the path they were first met at: an anchor used twice is
        #: one object, and ``$${`` must unescape once
        self.expanded: dict[int, str] = {}
        #: key path → the text as written, for each string that interpolated ``${VAR}`` (where a secret may
        #: have come from: a target's query string refuses them)
        self.interpolated: dict[str, str] = {}

    def add(self, line: int, key: str, message: str) -> None:
        key = key or "(document)"  # the top level has no key path of its own
        # one problem per key: a follow-on error (an unset ${VAR} is then not a URL) is noise
        if any(p.key == key for p in self.problems):
            return
        self.problems.append(Problem(self.file, line, key, message))


def _line_of(container: Any, key: str | int, default: int = 0) -> int:
    if isinstance(container, LocatedDict):
        return container.key_lines.get(str(key), container.line)
    if isinstance(container, LocatedList) and isinstance(key, int):
        if 0 <= key < len(container.item_lines):
            return container.item_lines[key]
        return container.line
    return default


class _Node:
    """A position in the document: value, its key path and its line (where a model's error is told)."""

    __slots__ = ("ctx", "line", "path", "value")

    def __init__(self, ctx: _Ctx, value: Any, path: str, line: int) -> None:
        self.ctx = ctx
        self.value = value
        self.path = path
        self.line = line

    def error(self, message: str) -> None:
        self.ctx.add(self.line, self.path, message)

    def child(self, key: str | int) -> _Node:
        sub = f"{self.path}[{key}]" if isinstance(key, int) else (f"{self.path}.{key}" if self.path else key)
        value = self.value[key]
        line = getattr(value, "line", 0) if isinstance(value, LocatedDict | LocatedList) else 0
        return _Node(self.ctx, value, sub, _line_of(self.value, key, line) or line or self.line)

    def items(self) -> Iterator[tuple[str, _Node]]:
        if isinstance(self.value, dict):
            for k in self.value:
                yield k, self.child(k)

    def get(self, key: str) -> _Node | None:
        if isinstance(self.value, dict) and key in self.value:
            return self.child(key)
        return None


def _kind(v: Any) -> str:
    if v is None:
        return "nothing (null)"
    if isinstance(v, bool):
        return f"a boolean ({v})"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, int | float):
        return f"a number ({v})"
    return f"{v!r}"


def _closest(word: str, choices: AbstractSet[str]) -> str | None:
    import difflib

    hits = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return hits[0] if hits else None


def _below(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def _interpolate(ctx: _Ctx, value: Any, path: str, line: int) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string; ``$${`` escapes."""
    if isinstance(value, LocatedDict | LocatedList):
        first = ctx.expanded.get(id(value))
        if first is not None:  # an alias of an anchor expanded already: its interpolations are this path's too
            ctx.interpolated.update(
                {path + at[len(first) :]: text for at, text in list(ctx.interpolated.items()) if _below(at, first)}
            )
            return value
        ctx.expanded[id(value)] = path
    if isinstance(value, LocatedDict):
        for k in list(value):
            value[k] = _interpolate(ctx, value[k], f"{path}.{k}" if path else k, value.key_lines[k])
        return value
    if isinstance(value, LocatedList):
        for i, item in enumerate(value):
            value[i] = _interpolate(ctx, item, f"{path}[{i}]", value.item_lines[i])
        return value
    if isinstance(value, str) and "${" in value:
        placeholder = "\x00"
        text = value.replace("$${", placeholder)
        if _ENV_REF.search(text):
            ctx.interpolated[path] = text

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            got = ctx.env.get(name)
            if got is not None and (got != "" or default is None):
                return got
            if default is not None:
                return default
            ctx.add(
                line, path, f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
            )
            return ""

        return _ENV_REF.sub(sub, text).replace(placeholder, "${")
    return value


def _env_names(raw: str) -> list[str]:
    return [m.group(1) for m in _ENV_REF.finditer(raw)]
