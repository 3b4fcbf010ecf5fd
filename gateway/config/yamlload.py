"""YAML with line numbers: every mapping and list remembers where its keys and items were written."""

from __future__ import annotations

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
    #: (line, key, the mapping it repeats in)
    duplicate_keys: list[tuple[int, str, LocatedDict]]


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    out = LocatedDict()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        key = str(key) if not isinstance(key, str) else key
        line = key_node.start_mark.line + 1
        if key in out:
            loader.duplicate_keys.append((line, key, out))
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


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
