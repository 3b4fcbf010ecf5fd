"""Walking the document: a position with its key path and line, problems collected, ``${VAR}`` expanded."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
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
        #: mappings and lists already expanded: an anchor used twice is one object, and ``$${`` must unescape once
        self.expanded: set[int] = set()

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
    """A position in the document: value, its key path and its line."""

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

    def is_map(self, what: str = "a mapping") -> bool:
        if not isinstance(self.value, dict):
            self.error(f"expected {what}, got {_kind(self.value)}")
            return False
        return True

    def keys(self, allowed: AbstractSet[str], required: AbstractSet[str] = frozenset()) -> bool:
        """Reject unknown keys (with a did-you-mean) and report missing required ones."""
        if not self.is_map():
            return False
        ok = True
        suggested = set()
        for k in self.value:
            if k not in allowed:
                hint = _closest(k, allowed)
                suggested.add(hint)
                self.child(k).error(
                    f"unknown key {k!r}"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + f"; allowed: {', '.join(sorted(allowed))}"
                )
                ok = False
        for k in sorted(required - set(self.value) - suggested):  # a misspelt one is reported above, once
            self.error(f"missing required key {k!r}")
            ok = False
        return ok

    def items(self) -> Iterator[tuple[str, _Node]]:
        if isinstance(self.value, dict):
            for k in self.value:
                yield k, self.child(k)

    def get(self, key: str) -> _Node | None:
        if isinstance(self.value, dict) and key in self.value:
            return self.child(key)
        return None

    def string(self, what: str = "a string") -> str | None:
        if isinstance(self.value, bool) or not isinstance(self.value, str | int | float):
            self.error(f"expected {what}, got {_kind(self.value)}")
            return None
        return str(self.value)

    def integer(self, lo: int | None = None, hi: int | None = None) -> int | None:
        v = self.value
        if isinstance(v, bool) or not isinstance(v, int):
            self.error(f"expected an integer, got {_kind(v)}")
            return None
        if lo is not None and v < lo:
            self.error(f"must be at least {lo}, got {v}")
            return None
        if hi is not None and v > hi:
            self.error(f"must be at most {hi}, got {v}")
            return None
        return v

    def boolean(self) -> bool | None:
        if not isinstance(self.value, bool):
            self.error(f"expected true or false, got {_kind(self.value)}")
            return None
        return self.value

    def convert(self, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(self.value)
        except ValueError as exc:
            self.error(str(exc))
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


def _interpolate(ctx: _Ctx, value: Any, path: str, line: int) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string; ``$${`` escapes."""
    if isinstance(value, LocatedDict | LocatedList):
        if id(value) in ctx.expanded:
            return value
        ctx.expanded.add(id(value))
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
