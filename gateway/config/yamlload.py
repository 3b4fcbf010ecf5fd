"""YAML with line numbers: every mapping and list remembers where its keys and items were written."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml


class LocatedDict(dict[str, Any]):
    """A mapping that remembers on which line each key was written."""

    line: int = 0
    key_lines: dict[str, int]


class LocatedList(list[Any]):
    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    """The pure-Python loader: its syntax errors name the offending character (a tab, say)."""

    #: (line, key, the mapping it repeats in)
    duplicate_keys: list[tuple[int, str, LocatedDict]]


#: libyaml scans ten times faster (3,000 routes load in a second); a file it refuses is read again
#: by the pure-Python loader, whose error message says more
_FastBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _FastLoader(_FastBase):  # type: ignore[valid-type,misc]
    duplicate_keys: list[tuple[int, str, LocatedDict]]


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LocatedDict:
    # a merge key (``<<: *defaults``) puts the merged pairs first; the mapping's own keys then override
    # them, which is the point of a merge and no duplicate (a key written twice by hand still is one)
    own = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    merged = len(node.value) - own
    out = LocatedDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    written: set[str] = set()
    for i, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        key = str(key) if not isinstance(key, str) else key
        line = key_node.start_mark.line + 1
        if i >= merged:
            if key in written:
                loader.duplicate_keys.append((line, key, out))
            written.add(key)
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _path_to(value: Any, target: LocatedDict, path: str) -> str | None:
    """The key path (as problems name it: ``routes.x.targets[0]``) of the mapping ``target`` in ``value``."""
    if value is target:
        return path
    if isinstance(value, dict):
        items: Iterator[tuple[str, Any]] = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub, child in items:
        if (found := _path_to(child, target, sub)) is not None:
            return found
    return None


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LocatedList:
    out = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


for _cls in (_Loader, _FastLoader):
    _cls.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    _cls.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def read_yaml(text: str) -> tuple[Any, list[tuple[int, str, LocatedDict]]]:
    """The document (mappings and lists with their lines) and its duplicate keys; raises ``yaml.YAMLError``."""
    for cls in (_FastLoader, _Loader):
        loader = cls(text)
        loader.duplicate_keys = []
        try:
            return loader.get_single_data(), loader.duplicate_keys
        except yaml.YAMLError:
            if cls is _Loader:
                raise
        finally:
            loader.dispose()
    raise AssertionError("unreachable")  # pragma: no cover


_DUPLICATE_ANCHOR = re.compile(r"found duplicate anchor (?P<name>.+); first occurrence$")
#: contexts whose start, not where PyYAML gave up, is where the slip is: an unclosed quote is noticed
#: lines later (often at the end of the file), a key without ':' on the line after it.  Not a flow
#: ([...], {...}): its slip may be on any of its lines, so the line named is the problem's
_STARTS_AT_CONTEXT = ("while scanning a quoted scalar", "while scanning a simple key")


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def syntax_message(exc: yaml.YAMLError) -> tuple[int, str]:
    """(line, message) for a YAML syntax error: where it is (line and column) and, for the usual slips, a hint.

    PyYAML's errors are a problem at one place and, often, a context at another (where the quote,
    bracket or key began; a duplicate anchor's first definition): each is named with its own line.
    """
    if not isinstance(exc, yaml.MarkedYAMLError):
        return 0, str(exc)
    problem, context = exc.problem_mark, exc.context_mark
    dup = _DUPLICATE_ANCHOR.match(exc.context or "")
    if dup and problem is not None and context is not None:
        first = f"first defined on line {context.line + 1}"
        hint = f"give each anchor its own name, or write *{dup['name'].strip(chr(39))} to reuse the first"
        return problem.line + 1, f"duplicate anchor {dup['name']} ({first}); hint: {hint}"
    text = f"{exc.problem or exc}"
    if exc.context and context is None:  # a context without a place of its own reads as part of the problem
        text += f" {exc.context}"
    if problem is not None:
        text += f" ({_at(problem)})"
    if exc.context and context is not None:
        text += f", {exc.context} from {_at(context)}"
    at_context = context is not None and (problem is None or (exc.context or "").startswith(_STARTS_AT_CONTEXT))
    mark = context if at_context else problem
    if mark is None:
        return 0, text
    for needle, hint in _HINTS:
        if needle in text:
            text += f"; hint: {hint}"
            break
    return mark.line + 1, text


_HINTS = (
    ("'\\t'", "indent with spaces, not tabs"),
    ("mapping values are not allowed", "a value holding ': ' must be quoted, or a key is indented too far"),
    ("expected <block end>", "this line's indentation does not match the lines around it"),
    ("found undefined alias", "define the anchor (&name) before the alias (*name) uses it"),
    ("found unhashable key", "a key cannot be a mapping or list; quote it if it starts with { or ["),
    ("while scanning a simple key", "this line's key has no ':' after it"),
    ("while scanning a quoted scalar", "a quote opened on this line is never closed"),
    ("while parsing a flow", "the [ or { named is not closed, or an item in it lacks a comma"),
)
