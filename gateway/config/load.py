"""Reading a routes file: YAML, interpolation, the sections, the cross-route checks, then the frozen ``Config``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import yaml

from gateway.config.errors import ConfigError, Problem
from gateway.config.model import AccessSpec, Config, Route
from gateway.config.model_upstream import Upstream
from gateway.config.node import _Ctx, _interpolate, _kind, _Node
from gateway.config.schema import validate
from gateway.config.sections_access import _check_probe_samples, _check_route_overlaps, _keys, _probe_settings
from gateway.config.sections_route import _route
from gateway.config.sections_server import _cache_settings, _check_buffer_cap, _server, _upstream
from gateway.config.spec_entry import DocumentEntrySpec
from gateway.config.yamlload import LocatedDict, _path_to, read_yaml, syntax_message
from gateway.digest import digest


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a routes file.  Raises ``ConfigError`` listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(p), 0, "(file)", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        why = f"not UTF-8 text: byte 0x{exc.object[exc.start]:02x} cannot be decoded (save the file as UTF-8)"
        raise ConfigError([Problem(str(p), line, "(file)", why)]) from exc
    return parse_config(text, str(p), env)


def parse_config(text: str, file: str = "routes.yaml", env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    ctx = _Ctx(file, env)
    try:
        doc, duplicate_keys = read_yaml(text)
    except yaml.YAMLError as exc:
        line, message = syntax_message(exc)
        raise ConfigError([Problem(file, line, "(syntax)", message)]) from exc
    for line, key, mapping in duplicate_keys:
        where = _path_to(doc, mapping, "")
        full = f"{where}.{key}" if where else key
        ctx.add(line, full, f"duplicate key {key!r} (YAML would silently keep only the last one)")
    if not isinstance(doc, LocatedDict):
        got = "a string" if isinstance(doc, str) else _kind(doc)  # a string is named by its kind only
        ctx.add(1, "(document)", f"expected a mapping with 'upstreams' and 'routes', got {got}")
        raise ConfigError(ctx.problems)
    # ``x-`` blocks hold anchors for merge keys (``x-defaults: &d {...}`` then ``<<: *d``): not config
    for key in [k for k in doc if k.startswith("x-")]:
        del doc[key]
    doc = _interpolate(ctx, doc, "", 1)
    root = _Node(ctx, doc, "", 1)
    # its own keys: version, and upstreams and routes as mappings of names; each section on its own
    validate(root, DocumentEntrySpec)
    server = _server(root.get("server"))
    upstreams: dict[str, Upstream] = {}
    if (node := root.get("upstreams")) is not None:
        for name, un in node.items():
            up = _upstream(name, un)
            if up is not None:
                upstreams[name] = up
    _check_buffer_cap(root, server, upstreams)
    routes: list[Route] = []
    if (node := root.get("routes")) is not None:
        for name, rn in node.items():
            r = _route(name, rn, upstreams, root)
            if r is not None:
                routes.append(r)
    _check_route_overlaps(ctx, routes)
    _check_probe_samples(root.get("routes"), routes)
    probes = _probe_settings(root.get("probes"))
    cache = _cache_settings(root.get("cache"))
    # key grants name routes by glob: checked against every route in the file, so that a route with a
    # mistake is reported once, where it is wrong, and not again by every grant that names it
    routes_node = root.get("routes")
    named = list(routes_node.value) if routes_node is not None and isinstance(routes_node.value, dict) else []
    # parsed before the problems check: a mistyped key must fail the load, never leave the gateway open
    access = AccessSpec(_keys(root.get("clients"), named), _keys(root.get("admin"), None))
    if ctx.problems:
        raise ConfigError(ctx.problems)
    return Config(
        path=file,
        digest=digest(text),
        server=server,
        upstreams=MappingProxyType(upstreams),
        routes=tuple(routes),
        access=access,
        cache=cache,
        probes=probes,
        source=text,
    )
