"""routes.yaml → typed, frozen config objects, built once per load.

Everything the hot path needs (path matchers, templates, regexes, pre-serialized
constant bodies) is compiled here, so serving a request never touches YAML or
compiles a pattern.  Loading never stops at the first mistake: every problem is
collected with its file, line and key path, so an operator fixes them all in one
edit, and a failed load raises ``ConfigError`` without touching the running config.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml
from yarl import URL

# --------------------------------------------------------------------------- problems


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key}: {self.message}"


class ConfigError(Exception):
    """A routes file that cannot be served; ``problems`` lists every mistake found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in problems))


# --------------------------------------------------------------------------- YAML with lines


class LocatedDict(dict[str, Any]):
    """A mapping that remembers on which line each key was written."""

    line: int = 0
    key_lines: dict[str, int]


class LocatedList(list[Any]):
    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    duplicate_keys: list[tuple[int, str]]


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
            loader.duplicate_keys.append((line, key))
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LocatedList:
    out = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)

# --------------------------------------------------------------------------- config objects

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
METHODS: frozenset[str] = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where one secret may come from: an env var, or a file (optionally one JSON key in it)."""

    kind: Literal["env", "file", "file_env"]
    name: str  # env var name, file path, or env var holding a file path
    json_key: str | None = None
    #: what to tell the operator to set when nothing is found (never the value)
    hint: str = ""


@dataclass(frozen=True, slots=True)
class Secret:
    sources: tuple[SecretSource, ...]

    def hint(self) -> str:
        return " or ".join(s.hint for s in self.sources)


@dataclass(frozen=True, slots=True)
class AuthSpec:
    bearer: Secret | None = None
    cookies: tuple[tuple[str, Secret], ...] = ()
    headers: tuple[tuple[str, Secret], ...] = ()


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0
    total: float = 60.0


@dataclass(frozen=True, slots=True)
class Upstream:
    name: str
    base_url: URL
    timeouts: Timeouts
    headers: tuple[tuple[str, str], ...]
    auth: AuthSpec | None
    max_connections: int
    #: upstream calls one aggregation may run at once (offset pagination only)
    concurrency: int
    max_response_bytes: int
    max_redirects: int


@dataclass(frozen=True, slots=True)
class Template:
    """``"types={type}"``-style text: literal parts and parameter names, split once."""

    raw: str
    parts: tuple[tuple[bool, str], ...]  # (is_param, text or param name)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(t for is_param, t in self.parts if is_param)

    @property
    def is_single_param(self) -> bool:
        return len(self.parts) == 1 and self.parts[0][0]


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A path split into segments; each segment is a literal or a ``Template``."""

    raw: str
    segments: tuple[Template, ...]

    @property
    def names(self) -> frozenset[str]:
        out: set[str] = set()
        for seg in self.segments:
            out |= seg.names
        return frozenset(out)


ParamType = Literal["string", "integer", "boolean"]


@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    type: ParamType = "string"
    default: Any = None
    required: bool = False
    enum: tuple[str, ...] | None = None
    #: comma-separated values, each fetched as its own upstream stream and merged
    fan_out: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class BodySpec:
    mode: Literal["none", "passthrough", "const"]
    const: bytes = b""


@dataclass(frozen=True, slots=True)
class Target:
    method: str
    path: PathTemplate
    query: tuple[tuple[str, Template], ...]
    body: BodySpec
    redirect: Literal["follow", "report"]
    line: int


@dataclass(frozen=True, slots=True)
class Pagination:
    style: Literal["before", "offset"]
    items_path: tuple[str, ...]
    # before: the upstream param and the item field whose last value asks for the next page
    before_param: str = "before"
    field: str = "update_time"
    # offset
    limit_param: str = "limit"
    offset_param: str = "offset"
    next_key: str = "next"
    count_key: str = "count"
    page_size: int = 100
    default_limit: int = 50
    max_limit: int = 200


@dataclass(frozen=True, slots=True)
class FieldExpr:
    """Where one stable field comes from.  ``source`` picks the branch."""

    source: Literal["field", "param", "const", "location"]
    path: tuple[str, ...] = ()
    name: str = ""
    value: Any = None
    pattern: re.Pattern[str] | None = None
    cast: Literal["int", "str", "float", "bool"] | None = None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class ResponseSpec:
    item: tuple[tuple[str, FieldExpr], ...] | None = None
    items: tuple[tuple[str, FieldExpr], ...] | None = None
    raw: bool = False
    status: int | None = None
    headers: tuple[tuple[str, FieldExpr], ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    method: str
    path: PathTemplate
    upstream: str
    auth: bool
    params: tuple[ParamSpec, ...]
    targets: tuple[Target, ...]
    pagination: Pagination | None
    response: ResponseSpec
    validate: str | None
    description: str
    line: int

    @property
    def stable(self) -> str:
        return f"{self.method} {self.path.raw}"

    def param(self, name: str) -> ParamSpec | None:
        for p in self.params:
            if p.name == name:
                return p
        return None


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A key a team script (or an operator, for admin keys) presents to the gateway."""

    name: str
    secret: Secret
    #: route-name globs this key may call (all when empty)
    routes: tuple[str, ...] = ()
    #: methods this key may use (all when None); a read-only key is ``[GET, HEAD]``
    methods: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class AccessSpec:
    clients: tuple[ClientKey, ...] = ()
    admins: tuple[ClientKey, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerSettings:
    max_body_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    digest: str
    server: ServerSettings
    upstreams: Mapping[str, Upstream]
    routes: tuple[Route, ...]
    access: AccessSpec = AccessSpec()


# --------------------------------------------------------------------------- parsing helpers

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1,
    "b": 1,
    "kb": 1000,
    "kib": 1024,
    "mb": 1000**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "gib": 1024**3,
}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def parse_duration(value: Any) -> float:
    """``"5s"``, ``"250ms"``, ``"1h"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 250ms or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a duration such as 5s, 250ms or 1h")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(value: Any) -> int:
    """``"1MiB"``, ``"512kb"`` or a number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 1MiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a size such as 1MiB or 64kb")
    unit = m.group(2).lower() if m.group(2) else None
    return int(m.group(1)) * _SIZE_UNITS[unit]


def parse_template(raw: str) -> Template:
    parts: list[tuple[bool, str]] = []
    pos = 0
    for m in _PARAM.finditer(raw):
        if m.start() > pos:
            parts.append((False, raw[pos : m.start()]))
        parts.append((True, m.group(1)))
        pos = m.end()
    if pos < len(raw):
        parts.append((False, raw[pos:]))
    return Template(raw, tuple(parts))


def parse_path(raw: str) -> PathTemplate:
    segs = raw.strip("/").split("/") if raw.strip("/") else []
    return PathTemplate(raw, tuple(parse_template(s) for s in segs))


# --------------------------------------------------------------------------- the loader


class _Ctx:
    """Collects problems while walking the document, so all are reported at once."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.problems: list[Problem] = []

    def add(self, line: int, key: str, message: str) -> None:
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

    def keys(self, allowed: set[str], required: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
        """Reject unknown keys (with a did-you-mean) and report missing required ones."""
        if not self.is_map():
            return False
        ok = True
        for k in self.value:
            if k not in allowed:
                hint = _closest(k, allowed)
                self.child(k).error(
                    f"unknown key {k!r}"
                    + (f" (did you mean {hint!r}?)" if hint else "")
                    + f"; allowed: {', '.join(sorted(allowed))}"
                )
                ok = False
        for k in sorted(required - set(self.value)):
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


def _closest(word: str, choices: set[str]) -> str | None:
    import difflib

    hits = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return hits[0] if hits else None


def _interpolate(ctx: _Ctx, value: Any, path: str, line: int) -> Any:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in every string; ``$${`` escapes."""
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


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a routes file.  Raises ``ConfigError`` listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(p), 0, "(file)", f"cannot read: {exc.strerror or exc}")]) from exc
    return parse_config(text, str(p), env)


def parse_config(text: str, file: str = "routes.yaml", env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    ctx = _Ctx(file, env)
    loader = _Loader(text)
    loader.duplicate_keys = []
    try:
        doc = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError(
            [Problem(file, line, "(syntax)", f"{exc.problem or exc}" + (f" {exc.context}" if exc.context else ""))]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 0, "(syntax)", str(exc))]) from exc
    finally:
        loader.dispose()
    for line, key in loader.duplicate_keys:
        ctx.add(line, key, f"duplicate key {key!r} (YAML would silently keep only the last one)")
    if not isinstance(doc, LocatedDict):
        ctx.add(1, "(document)", f"expected a mapping with 'upstreams' and 'routes', got {_kind(doc)}")
        raise ConfigError(ctx.problems)
    doc = _interpolate(ctx, doc, "", 1)
    root = _Node(ctx, doc, "", 1)
    root.keys({"version", "server", "upstreams", "routes", "clients", "admin"}, {"upstreams", "routes"})
    if (v := root.get("version")) is not None and v.value != 1:
        v.error(f"unsupported version {v.value!r}; this gateway reads version 1")
    server = _server(root.get("server"))
    upstreams: dict[str, Upstream] = {}
    if (node := root.get("upstreams")) is not None and node.is_map():
        for name, un in node.items():
            up = _upstream(name, un)
            if up is not None:
                upstreams[name] = up
    routes: list[Route] = []
    if (node := root.get("routes")) is not None and node.is_map():
        for name, rn in node.items():
            r = _route(name, rn, node.value.get("upstreams", None), upstreams, root)
            if r is not None:
                routes.append(r)
    _check_route_overlaps(ctx, routes)
    if ctx.problems:
        raise ConfigError(ctx.problems)
    access = AccessSpec(_keys(root.get("clients"), routes), _keys(root.get("admin"), None))
    return Config(
        path=file,
        digest=hashlib.sha256(text.encode()).hexdigest()[:16],
        server=server,
        upstreams=MappingProxyType(upstreams),
        routes=tuple(routes),
        access=access,
    )


def _server(node: _Node | None) -> ServerSettings:
    if node is None:
        return ServerSettings()
    node.keys({"max_body_bytes"})
    kw: dict[str, Any] = {}
    if (n := node.get("max_body_bytes")) is not None and (size := n.convert(parse_size)) is not None:
        kw["max_body_bytes"] = size
    return ServerSettings(**kw)


def _secret(node: _Node) -> Secret | None:
    """One source or a list of alternatives, tried in order at request time."""
    if not isinstance(node.value, dict | list):
        # never echo the value: it may be a secret pasted in by mistake
        node.error("expected {env: VAR}, {file: PATH} or {file_env: VAR}; secrets are never written in routes.yaml")
        return None
    items = node.value if isinstance(node.value, list) else None
    nodes = [node.child(i) for i in range(len(items))] if items is not None else [node]
    sources: list[SecretSource] = []
    for sn in nodes:
        if not sn.keys({"env", "file", "file_env", "json_key"}):
            continue
        given = [k for k in ("env", "file", "file_env") if k in sn.value]
        if len(given) != 1:
            sn.error(
                "a secret needs exactly one of 'env: VAR', 'file: PATH' or 'file_env: VAR' "
                "(secrets are never written in routes.yaml)"
            )
            continue
        kind = given[0]
        value = sn.child(kind).string()
        jk = sn.get("json_key")
        json_key = jk.string() if jk is not None else None
        if value is None:
            continue
        if kind == "env":
            if json_key is not None:
                sn.error("'json_key' goes with 'file' or 'file_env'")
            sources.append(SecretSource("env", value, hint=value))
        elif kind == "file":
            sources.append(SecretSource("file", value, json_key, hint=f"the file {value}"))
        else:
            sources.append(SecretSource("file_env", value, json_key, hint=value))
    return Secret(tuple(sources)) if sources else None


def _upstream(name: str, node: _Node) -> Upstream | None:
    if not _NAME.match(name):
        node.error("upstream names use letters, digits, '_', '-' and '.'")
    node.keys(
        {
            "base_url",
            "timeouts",
            "headers",
            "auth",
            "max_connections",
            "concurrency",
            "max_response_bytes",
            "max_redirects",
            "description",
        },
        {"base_url"},
    )
    base_url: URL | None = None
    if (b := node.get("base_url")) is not None and (s := b.string("a URL")) is not None:
        try:
            base_url = URL(s)
        except ValueError as exc:
            b.error(f"not a URL: {exc}")
        else:
            if base_url.scheme not in ("http", "https") or not base_url.host:
                b.error(f"{s!r} is not an absolute http(s) URL")
                base_url = None
            elif base_url.query_string or base_url.fragment:
                b.error("base_url cannot carry a query or fragment (credentials never go in URLs)")
                base_url = None
    timeouts = Timeouts()
    if (t := node.get("timeouts")) is not None and t.keys({"connect", "read", "total"}):
        kw = {}
        for k, tn in t.items():
            if (d := tn.convert(parse_duration)) is not None:
                kw[k] = d
        timeouts = Timeouts(**kw)
    headers: list[tuple[str, str]] = []
    if (h := node.get("headers")) is not None and h.is_map():
        for hk, hn in h.items():
            if not _HEADER_NAME.match(hk):
                hn.error(f"{hk!r} is not a valid header name")
            hv = hn.string("a header value")
            if hv is not None:
                if "\r" in hv or "\n" in hv:
                    hn.error("header values cannot contain line breaks")
                headers.append((hk, hv))
    auth = _auth(node.get("auth"))

    def intval(key: str, default: int, lo: int, hi: int | None = None) -> int:
        n = node.get(key)
        v = n.integer(lo, hi) if n is not None else None
        return default if v is None else v

    max_resp = 64 << 20
    if (mr := node.get("max_response_bytes")) is not None:
        got = mr.convert(parse_size)
        max_resp = got if got is not None else max_resp
    if base_url is None:
        return None
    return Upstream(
        name=name,
        base_url=base_url,
        timeouts=timeouts,
        headers=tuple(headers),
        auth=auth,
        max_connections=intval("max_connections", 100, 1),
        concurrency=intval("concurrency", 4, 1, 64),
        max_response_bytes=max_resp,
        max_redirects=intval("max_redirects", 5, 0, 20),
    )


def _auth(node: _Node | None) -> AuthSpec | None:
    if node is None or node.value is None:
        return None
    if not node.keys({"bearer", "cookies", "headers"}):
        return None
    bearer = _secret(b) if (b := node.get("bearer")) is not None else None
    cookies: list[tuple[str, Secret]] = []
    headers: list[tuple[str, Secret]] = []
    for key, out in (("cookies", cookies), ("headers", headers)):
        if (m := node.get(key)) is not None and m.is_map():
            for k, sn in m.items():
                if key == "headers" and not _HEADER_NAME.match(k):
                    sn.error(f"{k!r} is not a valid header name")
                sec = _secret(sn)
                if sec is not None:
                    out.append((k, sec))
    return AuthSpec(bearer, tuple(cookies), tuple(headers))


def _stable_line(node: _Node, text: str) -> tuple[str, str] | None:
    parts = text.split()
    if len(parts) != 2:
        node.error(f"expected 'METHOD /path', got {text!r}")
        return None
    method, path = parts[0].upper(), parts[1]
    if method not in METHODS:
        node.error(f"unknown HTTP method {parts[0]!r}; use one of {', '.join(sorted(METHODS))}")
        return None
    if not path.startswith("/"):
        node.error(f"the path must start with '/', got {path!r}")
        return None
    return method, path


def _check_path_template(node: _Node, tpl: PathTemplate, stable: bool) -> None:
    for seg in tpl.segments:
        text = seg.raw
        if "{" in _PARAM.sub("", text) or "}" in _PARAM.sub("", text):
            node.error(f"malformed placeholder in path segment {text!r}")
        if stable and seg.names and not seg.is_single_param:
            node.error(f"a stable path segment must be all literal or one {{param}}, got {text!r}")
        if text in (".", ".."):
            node.error("paths cannot contain '.' or '..' segments")


def _route(name: str, node: _Node, _unused: Any, upstreams: dict[str, Upstream], root: _Node) -> Route | None:
    ctx = node.ctx
    if not _NAME.match(name):
        node.error("route names use letters, digits, '_', '-' and '.' (they become metric labels)")
    if not node.keys(
        {
            "stable",
            "upstream",
            "auth",
            "params",
            "targets",
            "pagination",
            "response",
            "validate",
            "description",
            "cache",
            "probe",
            "shape",
        },
        {"stable", "upstream", "targets"},
    ) and not isinstance(node.value, dict):
        return None
    method = path_raw = None
    if (s := node.get("stable")) is not None and (text := s.string("'METHOD /path'")) is not None:
        parsed = _stable_line(s, text)
        if parsed:
            method, path_raw = parsed
    stable_path = parse_path(path_raw) if path_raw else None
    if stable_path is not None and s is not None:
        _check_path_template(s, stable_path, stable=True)
    upstream_name = None
    if (u := node.get("upstream")) is not None and (un := u.string()) is not None:
        all_declared = root.get("upstreams")
        declared = set(all_declared.value) if all_declared and isinstance(all_declared.value, dict) else set()
        if un not in declared:
            hint = _closest(un, declared)
            u.error(f"no upstream named {un!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
        upstream_name = un
    auth = True
    if (a := node.get("auth")) is not None:
        if a.value in ("none", False):
            auth = False
        elif a.value in ("required", True):
            auth = True
        else:
            a.error("expected 'required' or 'none'")
    params = _params(node.get("params"), stable_path)
    path_names = stable_path.names if stable_path else frozenset()
    known = path_names | {p.name for p in params}
    pagination = _pagination(node.get("pagination"))
    if pagination is not None:
        reserved = {"limit", "cursor", "all"} & {p.name for p in params}
        for r in sorted(reserved):
            node.error(f"param {r!r} is reserved for pagination on collections")
    fan = [p for p in params if p.fan_out]
    if len(fan) > 1:
        node.error("at most one param may fan out")
    if fan and (pagination is None or pagination.style != "before"):
        node.error("fan_out merges streams by their 'before' field; it needs pagination style 'before'")
    targets: list[Target] = []
    if (tn := node.get("targets")) is not None:
        if not isinstance(tn.value, list) or not tn.value:
            tn.error("expected a non-empty list of upstream targets")
        else:
            for i in range(len(tn.value)):
                t = _target(tn.child(i), known, method or "GET")
                if t is not None:
                    targets.append(t)
    response = _response(node.get("response"), known, pagination)
    validate = None
    if (v := node.get("validate")) is not None and (vn := v.string()) is not None:
        from gateway.validators import VALIDATORS

        if vn not in VALIDATORS:
            v.error(f"unknown validator {vn!r}; known: {', '.join(sorted(VALIDATORS))}")
        validate = vn
    desc = ""
    if (d := node.get("description")) is not None:
        desc = d.string() or ""
    if ctx.problems or method is None or stable_path is None or upstream_name is None:
        return None
    return Route(
        name=name,
        method=method,
        path=stable_path,
        upstream=upstream_name,
        auth=auth,
        params=params,
        targets=tuple(targets),
        pagination=pagination,
        response=response,
        validate=validate,
        description=desc,
        line=node.line,
    )


def _params(node: _Node | None, path: PathTemplate | None) -> tuple[ParamSpec, ...]:
    if node is None or not node.is_map():
        return ()
    out: list[ParamSpec] = []
    path_names = path.names if path else frozenset()
    for name, pn in node.items():
        if name in path_names:
            pn.error(f"{name!r} is a path parameter already")
            continue
        if pn.value is None:
            out.append(ParamSpec(name))
            continue
        if not pn.keys({"type", "default", "required", "enum", "fan_out", "description"}):
            continue
        kw: dict[str, Any] = {"name": name}
        if (t := pn.get("type")) is not None:
            if t.value not in ("string", "integer", "boolean"):
                t.error("expected string, integer or boolean")
            else:
                kw["type"] = t.value
        if (e := pn.get("enum")) is not None:
            if not isinstance(e.value, list) or not e.value:
                e.error("expected a non-empty list of allowed values")
            else:
                kw["enum"] = tuple(str(x) for x in e.value)
        if (f := pn.get("fan_out")) is not None and (b := f.boolean()) is not None:
            kw["fan_out"] = b
        if (r := pn.get("required")) is not None and (b := r.boolean()) is not None:
            kw["required"] = b
        if (d := pn.get("default")) is not None:
            kw["default"] = d.value
            if kw.get("enum") and str(d.value) not in kw["enum"]:
                d.error(f"default {d.value!r} is not one of the enum values")
        if (ds := pn.get("description")) is not None:
            kw["description"] = ds.string() or ""
        out.append(ParamSpec(**kw))
    return tuple(out)


def _target(node: _Node, known: frozenset[str], stable_method: str) -> Target | None:
    raw = node.value
    if isinstance(raw, str):
        request_node, spec = node, None
        request = raw
    elif isinstance(raw, dict):
        if not node.keys({"request", "query", "body", "redirect"}, {"request"}):
            return None
        request_node = node.child("request")
        request = request_node.string("'METHOD /path'") or ""
        spec = node
    else:
        node.error(f"expected 'METHOD /path' or a mapping with 'request', got {_kind(raw)}")
        return None
    path_part, _, query_part = request.partition("?")
    parsed = _stable_line(request_node, path_part)
    if parsed is None:
        return None
    method, path_raw = parsed
    path = parse_path(path_raw)
    _check_path_template(request_node, path, stable=False)
    query: list[tuple[str, Template]] = []
    if query_part:
        for pair in query_part.split("&"):
            k, _, v = pair.partition("=")
            query.append((k, parse_template(v)))
    redirect: Literal["follow", "report"] = "follow"
    body = BodySpec(
        "passthrough" if method in ("POST", "PUT", "PATCH") and stable_method in ("POST", "PUT", "PATCH") else "none"
    )
    if spec is not None:
        if (q := spec.get("query")) is not None and q.is_map():
            for k, qn in q.items():
                if (qv := qn.string()) is not None:
                    query.append((k, parse_template(qv)))
        if (r := spec.get("redirect")) is not None:
            if r.value not in ("follow", "report"):
                r.error("expected 'follow' (fetch the final target) or 'report' (answer from Location)")
            else:
                redirect = r.value
        if (b := spec.get("body")) is not None:
            if b.value == "passthrough":
                body = BodySpec("passthrough")
            elif b.value == "none":
                body = BodySpec("none")
            elif isinstance(b.value, dict) and set(b.value) == {"const"}:
                body = BodySpec("const", json.dumps(_plain(b.value["const"]), separators=(",", ":")).encode())
            else:
                b.error("expected 'passthrough', 'none' or {const: <JSON value>}")
    for _, tpl in query:
        for name in sorted(tpl.names - known):
            request_node.error(f"query template uses {{{name}}}, which is neither a path nor a declared param")
    for name in sorted(path.names - known):
        request_node.error(f"path uses {{{name}}}, which is neither a path nor a declared param")
    return Target(method, path, tuple(query), body, redirect, node.line)


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _pagination(node: _Node | None) -> Pagination | None:
    if node is None:
        return None
    if not node.keys(
        {
            "style",
            "items",
            "param",
            "field",
            "limit_param",
            "offset_param",
            "next",
            "count",
            "page_size",
            "default_limit",
            "max_limit",
        },
        {"style"},
    ):
        return None
    style = node.value.get("style")
    if style not in ("before", "offset"):
        node.child("style").error("expected 'before' (cursor from the last item) or 'offset' (limit/offset)")
        return None
    kw: dict[str, Any] = {"style": style}
    items_default = "" if style == "before" else "results"
    items = node.value.get("items", items_default)
    kw["items_path"] = tuple(x for x in str(items).split(".") if x)
    for key, attr in (
        ("param", "before_param"),
        ("field", "field"),
        ("limit_param", "limit_param"),
        ("offset_param", "offset_param"),
        ("next", "next_key"),
        ("count", "count_key"),
    ):
        if (n := node.get(key)) is not None and (v := n.string()) is not None:
            kw[attr] = v
    for key in ("page_size", "default_limit", "max_limit"):
        if (n := node.get(key)) is not None and (iv := n.integer(1, 10000)) is not None:
            kw[key] = iv
    p = Pagination(**kw)
    if p.default_limit > p.max_limit:
        node.error("default_limit cannot exceed max_limit")
    return p


def _field_expr(node: _Node, known: frozenset[str]) -> FieldExpr | None:
    v = node.value
    if isinstance(v, str):
        return FieldExpr("field", path=tuple(v.split(".")))
    if not isinstance(v, dict):
        node.error(f"expected a field name or a mapping ({{field|param|const|location: ...}}), got {_kind(v)}")
        return None
    if not node.keys({"field", "param", "const", "location", "type", "optional"}):
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
    if not node.keys({"item", "items", "raw", "status", "headers"}):
        return ResponseSpec()
    kw: dict[str, Any] = {}
    if (n := node.get("item")) is not None:
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
    return ResponseSpec(**kw)


def _keys(node: _Node | None, routes: list[Route] | None) -> tuple[ClientKey, ...]:
    """``clients:`` (with per-key routes/methods) or ``admin:`` (keys only)."""
    if node is None or not node.keys({"keys"}, {"keys"}):
        return ()
    keys_node = node.child("keys")
    if not keys_node.is_map("a mapping of key name → {key: {env: VAR}, ...}"):
        return ()
    out: list[ClientKey] = []
    allowed = {"key", "routes", "methods", "description"} if routes is not None else {"key", "description"}
    for name, kn in keys_node.items():
        if not _NAME.match(name):
            kn.error("key names use letters, digits, '_', '-' and '.'")
        if not kn.keys(allowed, {"key"}):
            continue
        secret = _secret(kn.child("key"))
        globs: tuple[str, ...] = ()
        if (rn := kn.get("routes")) is not None:
            if not isinstance(rn.value, list) or not all(isinstance(g, str) for g in rn.value):
                rn.error("expected a list of route names (globs such as posthog_* allowed)")
            else:
                globs = tuple(rn.value)
                names = [r.name for r in routes or []]
                for g in globs:
                    if not fnmatch.filter(names, g):
                        rn.error(f"{g!r} matches no route")
        methods: frozenset[str] | None = None
        if (mn := kn.get("methods")) is not None:
            if not isinstance(mn.value, list) or not all(str(m).upper() in METHODS for m in mn.value):
                mn.error(f"expected a list of HTTP methods ({', '.join(sorted(METHODS))})")
            else:
                methods = frozenset(str(m).upper() for m in mn.value)
                if "GET" in methods:
                    methods |= {"HEAD"}
        if secret is not None:
            out.append(ClientKey(name, secret, globs, methods))
    return tuple(out)


def _check_route_overlaps(ctx: _Ctx, routes: list[Route]) -> None:
    """Two routes answering the same method and path shape would shadow each other."""
    seen: dict[tuple[str, tuple[str, ...]], Route] = {}
    for r in routes:
        shape = tuple("{}" if seg.names else seg.raw for seg in r.path.segments)
        key = (r.method, shape)
        if key in seen:
            ctx.add(r.line, r.name, f"{r.stable} shadows route {seen[key].name!r} ({seen[key].stable})")
        else:
            seen[key] = r
