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
from dataclasses import dataclass, field, replace
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
class ExpirySpec:
    """Where a credential's expiry can be read: a dot-separated segment of it that is
    base64url JSON (Observable's ``I`` cookie, a JWT) and the field holding the time."""

    #: "bearer", "cookie:NAME" or "header:NAME" (also the metric label)
    credential: str
    segment: int = 0
    field: str = "exp"
    #: the field's unit: seconds or milliseconds since the epoch
    unit: Literal["s", "ms"] = "s"


@dataclass(frozen=True, slots=True)
class SessionCheck:
    """``auth.check``: a safe GET whose JSON answer holds ``expect`` only while signed in
    (Observable answers a dead session with 200 ``null`` and empty lists; gateway.session)."""

    path: str
    #: the dotted field that must be present and non-null
    expect: tuple[str, ...]
    #: "bearer", "cookie:NAME" or "header:NAME": the credential the metric and errors name
    credential: str
    #: how long one answer stands for a burst of empty lists
    memo: float = 5.0


@dataclass(frozen=True, slots=True)
class AuthSpec:
    bearer: Secret | None = None
    cookies: tuple[tuple[str, Secret], ...] = ()
    headers: tuple[tuple[str, Secret], ...] = ()
    expiry: ExpirySpec | None = None
    check: SessionCheck | None = None


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0
    total: float = 60.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of one upstream call: idempotent methods, or any method before it was sent."""

    #: tries per call, the first included (1 = never retry)
    attempts: int = 2
    #: the first backoff; it doubles per retry, capped at ``max_backoff``, with full jitter
    backoff: float = 0.1
    max_backoff: float = 2.0
    #: the longest Retry-After (or PostHog "available in N seconds") the gateway waits out
    max_wait: float = 10.0
    #: retries may add at most this share of calls over a 10 s window (a floor of 10 always allowed)
    budget: float = 0.2


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Open after ``failures`` consecutive failed exchanges (0 = no breaker); probe after ``cooldown``."""

    failures: int = 0
    cooldown: float = 30.0


@dataclass(frozen=True, slots=True)
class RequestBudget:
    """Outbound requests allowed per credential: ``(requests, per_seconds)`` windows, all enforced."""

    limits: tuple[tuple[int, float], ...] = ()
    #: the longest a call queues for a slot; a longer wait is a 503 with Retry-After
    max_wait: float = 5.0


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
    retries: RetryPolicy = RetryPolicy()
    breaker: BreakerPolicy = BreakerPolicy()
    budget: RequestBudget = RequestBudget()


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
    """How one upstream pages (gateway.pagination reads it; one strategy module per style)."""

    style: Literal["before", "offset", "page", "next_url", "cursor"]
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
    # page: page number and size parameters, first page number, optional total in the body
    page_param: str = "page"
    size_param: str = "limit"
    first_page: int = 1
    total_path: tuple[str, ...] = ()
    # next_url: the next link from a body field (next_path) or, when empty, the Link header
    next_path: tuple[str, ...] = ()
    # cursor: the token's body field and the query parameter it goes back in
    token_path: tuple[str, ...] = ()
    token_param: str = "cursor"
    #: a body field that, when false, ends the walk (any style)
    has_more_path: tuple[str, ...] = ()
    default_limit: int = 50
    max_limit: int = 200
    #: an all=true aggregation larger than this is refused (502) rather than held or looped on
    max_items: int = 1_000_000


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
class RouteCache:
    """A route's ``cache:``.  Reads get ttl/stale_if_error/vary/private; writes only ``invalidates``."""

    #: how long a stored response is served without asking the upstream (0 = never, stale copy only)
    ttl: float = 0.0
    #: how long past ``ttl`` the last good copy may stand in for a failing upstream
    stale_if_error: float = 0.0
    #: request headers whose values split the cache key (lower-cased)
    vary: tuple[str, ...] = ()
    #: store what the upstream marks private/no-store/no-cache (keys are per client and credential)
    private: bool = False
    #: routes whose every entry a successful write on this route drops (beyond its own path)
    invalidates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """The root ``cache:``: where cached responses live, shared by every route that caches."""

    #: off: the per-route settings are checked but nothing is cached (no X-Cache, no invalidation)
    enabled: bool = True
    #: auto: redis when its URL resolves (ROUTEGATE_REDIS_URL set), else memory
    backend: Literal["memory", "redis", "auto"] = "memory"
    #: memory: total bytes of stored responses (keys, headers and bodies), LRU beyond it
    max_bytes: int = 64 << 20
    #: a response larger than this is served but not stored
    max_entry_bytes: int = 8 << 20
    #: redis: the URL (a secret: it may carry a password), the key prefix, the per-operation timeout
    redis_url: Secret | None = None
    redis_prefix: str = "routegate"
    redis_timeout: float = 0.25
    #: redis: after an error, go straight to the upstream for this long before trying Redis again
    redis_retry_after: float = 1.0


#: JSON types a ``shape`` field may be declared as (``string|null`` allows either)
SHAPE_TYPES = frozenset({"string", "integer", "number", "boolean", "array", "object", "null", "any"})


@dataclass(frozen=True, slots=True)
class ShapeSpec:
    """What a working upstream answer looks like; checked on every live response and probe."""

    #: the upstream's success status (None: any 2xx, or a reported redirect)
    status: int | None = None
    #: the media type, without parameters (None: not checked)
    content_type: str | None = None
    #: (dotted path, allowed JSON types) each item (collections) or the object must have
    fields: tuple[tuple[tuple[str, ...], frozenset[str]], ...] = ()


@dataclass(frozen=True, slots=True)
class ProbeSample:
    """A probe param taken from another route's probe answer (its first item's ``field``)."""

    route: str
    field: tuple[str, ...]
    line: int


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    """A route's contract probe: the safe GET to send, with sample path and query params."""

    path_params: tuple[tuple[str, str | ProbeSample], ...] = ()
    query: tuple[tuple[str, str | ProbeSample], ...] = ()
    line: int = 0

    @property
    def depends_on(self) -> frozenset[str]:
        return frozenset(v.route for _, v in (*self.path_params, *self.query) if isinstance(v, ProbeSample))


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """The background prober: one round every ``interval`` ± ``jitter``, ``concurrency`` at once."""

    enabled: bool = True
    interval: float = 60.0
    jitter: float = 10.0
    concurrency: int = 4
    #: a probe taking longer is broken (``probe_timeout``)
    timeout: float = 30.0


#: a route without ``fallback_on``: a gone upstream path hands over to the next target
DEFAULT_FALLBACK_ON: frozenset[int | str] = frozenset({404, 410})


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
    cache: RouteCache | None = None
    probe: ProbeSpec | None = None
    shape: ShapeSpec | None = None
    #: what hands a request over to the next target: upstream statuses, and "shape" (gateway.fallback)
    fallback_on: frozenset[int | str] = DEFAULT_FALLBACK_ON
    #: answers say ``Cache-Control: no-store`` rather than ``private`` (gateway.cache.downstream)
    no_store: bool = False

    @property
    def stable(self) -> str:
        return f"{self.method} {self.path.raw}"

    def param(self, name: str) -> ParamSpec | None:
        for p in self.params:
            if p.name == name:
                return p
        return None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A client key's token bucket: ``rate`` requests per second, bursts of up to ``burst``."""

    rate: float
    burst: int
    #: as written in routes.yaml, for error messages
    text: str


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A key a team script (or an operator, for admin keys) presents to the gateway."""

    name: str
    secret: Secret
    #: route-name globs this key may call (all when empty)
    routes: tuple[str, ...] = ()
    #: methods this key may use (all when None); a read-only key is ``[GET, HEAD]``
    methods: frozenset[str] | None = None
    #: requests this key may make (unlimited when None); over it is a 429 with Retry-After
    rate_limit: RateLimit | None = None


@dataclass(frozen=True, slots=True)
class AccessSpec:
    clients: tuple[ClientKey, ...] = ()
    admins: tuple[ClientKey, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerSettings:
    max_body_bytes: int = 1 << 20
    #: stable requests served at once (unlimited when None); more get a 429 with Retry-After
    max_concurrency: int | None = None
    #: a client must finish its request headers this long after connecting (or after its last
    #: response); idle keep-alive connections close then too.  Fixed when the server starts.
    header_timeout: float = 15.0
    #: a request body must arrive completely within this long, else 408
    body_timeout: float = 30.0
    #: signs stable pagination cursors (gateway.pagination.cursor); derived when unset
    cursor_key: Secret | None = None
    #: Host header names served besides loopback and the bound address (gateway.edge); "*" is any
    allowed_hosts: tuple[str, ...] = ()
    #: open client connections at once (None: half the open-file limit); then idle ones are closed
    max_connections: int | None = None
    #: open client connections from one IP address (unlimited when None)
    max_connections_per_ip: int | None = None
    #: upstream answer bytes buffered by all requests in flight at once; past it a 503 with
    #: Retry-After (gateway.buffers); at least every upstream's max_response_bytes
    max_buffered_bytes: int = 64 << 20


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    digest: str
    server: ServerSettings
    upstreams: Mapping[str, Upstream]
    routes: tuple[Route, ...]
    access: AccessSpec = AccessSpec()
    cache: CacheSettings = CacheSettings()
    probes: ProbeSettings = ProbeSettings()
    #: the text it was built from: with ``--workers``, a replacement worker falls back to it (gateway.peers)
    source: str = field(default="", repr=False)


# --------------------------------------------------------------------------- parsing helpers

_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
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
    """``"5s"``, ``"250ms"``, ``"1h30m"``; a bare number only for 0 (is ``60`` seconds or minutes?)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 250ms or 1h30m")
    text = str(value).strip().replace(" ", "")
    if isinstance(value, int | float) or text.replace(".", "", 1).isdigit():
        if float(text) == 0:
            return 0.0
        raise ValueError(f"{value!r} has no unit: write {text}s for seconds (or ms, m, h, d)")
    if text.startswith("-"):
        raise ValueError("a duration cannot be negative")
    if not _DURATION.match(text):
        raise ValueError(f"{value!r} is not a duration such as 5s, 250ms or 1h30m")
    return sum(float(n) * _DURATION_UNITS[unit] for n, unit in _DURATION_PART.findall(text))


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


_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(value: Any) -> tuple[int, float]:
    """``"480/1m"``, ``"480/min"``, ``"5/500ms"`` → (requests, per seconds)."""
    count, slash, per = str(value).partition("/")
    if not slash or not count.strip().isdigit() or int(count) < 1:
        raise ValueError(f"{value!r} is not a budget such as 480/1m or 4800/1h")
    unit = per.strip().lower()
    seconds = _RATE_UNITS[unit] if unit in _RATE_UNITS else parse_duration(per)
    if seconds <= 0:
        raise ValueError(f"{value!r}: the window must be longer than 0s")
    return int(count), seconds


def parse_ratio(value: Any) -> float:
    """``"20%"`` or ``0.2``, from 0 to 1."""
    if isinstance(value, bool):
        raise ValueError("expected a share such as 20% or 0.2")
    text = str(value).strip()
    try:
        ratio = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a share such as 20% or 0.2") from None
    if not 0 <= ratio <= 1:
        raise ValueError(f"{value!r} must be between 0% and 100%")
    return ratio


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
    for line, key, mapping in loader.duplicate_keys:
        where = _path_to(doc, mapping, "")
        full = f"{where}.{key}" if where else key
        ctx.add(line, full, f"duplicate key {key!r} (YAML would silently keep only the last one)")
    if not isinstance(doc, LocatedDict):
        ctx.add(1, "(document)", f"expected a mapping with 'upstreams' and 'routes', got {_kind(doc)}")
        raise ConfigError(ctx.problems)
    doc = _interpolate(ctx, doc, "", 1)
    root = _Node(ctx, doc, "", 1)
    root.keys(
        {"version", "server", "upstreams", "routes", "clients", "admin", "cache", "probes"}, {"upstreams", "routes"}
    )
    if (v := root.get("version")) is not None and v.value != 1:
        v.error(f"unsupported version {v.value!r}; this gateway reads version 1")
    server = _server(root.get("server"))
    upstreams: dict[str, Upstream] = {}
    if (node := root.get("upstreams")) is not None and node.is_map():
        for name, un in node.items():
            up = _upstream(name, un)
            if up is not None:
                upstreams[name] = up
    _check_buffer_cap(root, server, upstreams)
    routes: list[Route] = []
    if (node := root.get("routes")) is not None and node.is_map():
        for name, rn in node.items():
            r = _route(name, rn, node.value.get("upstreams", None), upstreams, root)
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
        digest=hashlib.sha256(text.encode()).hexdigest()[:16],
        server=server,
        upstreams=MappingProxyType(upstreams),
        routes=tuple(routes),
        access=access,
        cache=cache,
        probes=probes,
        source=text,
    )


def _cache_settings(node: _Node | None) -> CacheSettings:
    """The root ``cache:`` section; the memory backend when it is absent."""
    if node is None or not node.keys({"enabled", "backend", "max_bytes", "max_entry_bytes", "redis"}):
        return CacheSettings()
    kw: dict[str, Any] = {}
    if (en := node.get("enabled")) is not None:
        # usually ${ROUTEGATE_CACHE:-off}, so a string after interpolation
        flag = str(en.value).lower() if not isinstance(en.value, bool) else en.value
        if flag in (True, "true", "on", "yes", "1"):
            kw["enabled"] = True
        elif flag in (False, "false", "off", "no", "0"):
            kw["enabled"] = False
        else:
            en.error(f"expected on or off, got {_kind(en.value)}")
    backend = node.value.get("backend", "memory")
    if backend not in ("memory", "redis", "auto"):
        node.child("backend").error(
            "expected 'memory' (this process), 'redis' (shared by every replica) or 'auto' (redis when its URL is set)"
        )
        backend = "memory"
    kw["backend"] = backend
    for key in ("max_bytes", "max_entry_bytes"):
        if (n := node.get(key)) is not None and (size := n.convert(parse_size)) is not None:
            if size < 1:
                n.error("must be at least 1 byte")
            kw[key] = size
    settings = CacheSettings(**kw)
    if settings.max_entry_bytes > settings.max_bytes:
        kw["max_entry_bytes"] = settings.max_bytes  # one entry can never exceed the whole cache
    rn = node.get("redis")
    if backend in ("redis", "auto") and rn is None:
        node.error(f"backend '{backend}' needs redis: {{url: {{env: VAR}}}}")
    if rn is not None:
        if backend == "memory":
            rn.error("'redis' settings are only read with backend: redis")
        elif rn.keys({"url", "prefix", "timeout", "retry_after"}, {"url"}):
            kw["redis_url"] = _secret(rn.child("url"))
            if (pn := rn.get("prefix")) is not None and (prefix := pn.string()) is not None:
                if not _NAME.match(prefix):
                    pn.error("the key prefix uses letters, digits, '_', '-' and '.'")
                kw["redis_prefix"] = prefix
            for key, attr in (("timeout", "redis_timeout"), ("retry_after", "redis_retry_after")):
                if (dn := rn.get(key)) is not None and (d := dn.convert(parse_duration)) is not None:
                    if d <= 0:
                        dn.error("must be longer than 0s")
                    kw[attr] = d
    return CacheSettings(**kw)


def _route_cache(node: _Node | None, method: str | None, root: _Node) -> RouteCache | None:
    """A route's ``cache:``: freshness for reads, what else to drop for writes; ``false`` is off."""
    if node is None or node.value is False or method is None:  # no method: reported at `stable`, not here too
        return None
    reads = method in ("GET", "HEAD")
    if not node.keys({"ttl", "stale_if_error", "vary", "private"} if reads else {"invalidates"}):
        if not reads and isinstance(node.value, dict) and set(node.value) & {"ttl", "stale_if_error"}:
            node.error(f"{method} responses are never cached; a write route only lists what it 'invalidates'")
        return None
    kw: dict[str, Any] = {}
    invalid = False
    for key in ("ttl", "stale_if_error"):
        if (n := node.get(key)) is not None:
            if (d := n.convert(parse_duration)) is None:
                invalid = True  # already reported at the key: one mistake, one problem
            else:
                kw[key] = d
    if reads and not invalid and not kw.get("ttl") and not kw.get("stale_if_error"):
        node.error("give a ttl (and/or stale_if_error) longer than 0s, or write cache: false")
    if (vn := node.get("vary")) is not None:
        if not isinstance(vn.value, list) or not all(isinstance(h, str) and _HEADER_NAME.match(h) for h in vn.value):
            vn.error("expected a list of request header names")
        else:
            kw["vary"] = tuple(sorted({h.lower() for h in vn.value}))
    if (pn := node.get("private")) is not None and (b := pn.boolean()) is not None:
        kw["private"] = b
    if (inv := node.get("invalidates")) is not None:
        routes_node = root.get("routes")
        declared = set(routes_node.value) if routes_node is not None and isinstance(routes_node.value, dict) else set()
        if not isinstance(inv.value, list) or not all(isinstance(r, str) for r in inv.value):
            inv.error("expected a list of route names")
        else:
            for name in inv.value:
                if name not in declared:
                    hint = _closest(name, declared)
                    inv.error(f"no route named {name!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
            kw["invalidates"] = tuple(inv.value)
    return RouteCache(**kw)


def _check_buffer_cap(root: _Node, server: ServerSettings, upstreams: Mapping[str, Upstream]) -> None:
    """An answer larger than the cap on all buffered answers could never be served."""
    for name, up in upstreams.items():
        if up.max_response_bytes > server.max_buffered_bytes:
            ups = root.get("upstreams")
            un = ups.get(name) if ups is not None else None
            at = un.get("max_response_bytes") if un is not None else None
            if at is None:
                at = root.get("server")
            if at is None:
                at = root
            at.error(
                f"upstream {name!r} allows answers of {up.max_response_bytes} bytes, more than "
                f"server.max_buffered_bytes ({server.max_buffered_bytes}): lower one or raise the other"
            )


def _server(node: _Node | None) -> ServerSettings:
    if node is None:
        return ServerSettings()
    node.keys(
        {
            "max_body_bytes",
            "max_concurrency",
            "client_timeouts",
            "cursor_key",
            "allowed_hosts",
            "max_connections",
            "max_connections_per_ip",
            "max_buffered_bytes",
        }
    )
    kw: dict[str, Any] = {}
    if (n := node.get("cursor_key")) is not None:
        kw["cursor_key"] = _secret(n)
    if (n := node.get("allowed_hosts")) is not None:
        if not isinstance(n.value, list) or not all(isinstance(h, str) and h.strip() for h in n.value):
            n.error("expected a list of host names (a leading '*.' matches subdomains; '*' any host)")
        else:
            kw["allowed_hosts"] = tuple(h.strip().lower().rstrip(".") for h in n.value)
    for key in ("max_connections", "max_connections_per_ip"):
        if (n := node.get(key)) is not None and (cap := n.integer(1, 10_000_000)) is not None:
            kw[key] = cap
    if (n := node.get("max_body_bytes")) is not None and (size := n.convert(parse_size)) is not None:
        kw["max_body_bytes"] = size
    if (n := node.get("max_buffered_bytes")) is not None and (size := n.convert(parse_size)) is not None:
        kw["max_buffered_bytes"] = size
    if (n := node.get("max_concurrency")) is not None and (cap := n.integer(1, 1_000_000)) is not None:
        kw["max_concurrency"] = cap
    if (t := node.get("client_timeouts")) is not None and t.keys({"headers", "body"}):
        for key, tn in t.items():
            if (d := tn.convert(parse_duration)) is not None:
                if d <= 0:
                    tn.error("must be longer than 0s")
                else:
                    kw["header_timeout" if key == "headers" else "body_timeout"] = d
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
            "retries",
            "circuit_breaker",
            "request_budget",
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

    max_resp = 16 << 20  # the largest answer of the shipped routes is far smaller; see docs/security-memory.md
    if (mr := node.get("max_response_bytes")) is not None:
        got = mr.convert(parse_size)
        max_resp = got if got is not None else max_resp
    retries = _retries(node.get("retries"))
    breaker = _breaker(node.get("circuit_breaker"))
    budget = _request_budget(node.get("request_budget"))
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
        retries=retries,
        breaker=breaker,
        budget=budget,
    )


def _retries(node: _Node | None) -> RetryPolicy:
    if node is None or not node.keys({"attempts", "backoff", "max_backoff", "max_wait", "budget"}):
        return RetryPolicy()
    kw: dict[str, Any] = {}
    if (n := node.get("attempts")) is not None and (v := n.integer(1, 10)) is not None:
        kw["attempts"] = v
    for key in ("backoff", "max_backoff", "max_wait"):
        if (n := node.get(key)) is not None and (d := n.convert(parse_duration)) is not None:
            kw[key] = d
    if (n := node.get("budget")) is not None and (r := n.convert(parse_ratio)) is not None:
        kw["budget"] = r
    return RetryPolicy(**kw)


def _breaker(node: _Node | None) -> BreakerPolicy:
    if node is None or not node.keys({"failures", "cooldown"}, {"failures"}):
        return BreakerPolicy()
    kw: dict[str, Any] = {}
    if (v := node.child("failures").integer(0, 1000)) is not None:
        kw["failures"] = v
    if (n := node.get("cooldown")) is not None and (d := n.convert(parse_duration)) is not None:
        if d <= 0:
            n.error("the cool-down must be longer than 0s")
        else:
            kw["cooldown"] = d
    return BreakerPolicy(**kw)


def _request_budget(node: _Node | None) -> RequestBudget:
    if node is None or not node.keys({"limits", "max_wait"}, {"limits"}):
        return RequestBudget()
    limits: list[tuple[int, float]] = []
    ln = node.child("limits")
    if not isinstance(ln.value, list) or not ln.value:
        ln.error("expected a list of budgets such as [480/1m, 4800/1h]")
    else:
        for i in range(len(ln.value)):
            if (lim := ln.child(i).convert(parse_rate)) is not None:
                limits.append(lim)
    kw: dict[str, Any] = {"limits": tuple(limits)}
    if (n := node.get("max_wait")) is not None and (d := n.convert(parse_duration)) is not None:
        kw["max_wait"] = d
    return RequestBudget(**kw)


def _auth(node: _Node | None) -> AuthSpec | None:
    if node is None or node.value is None:
        return None
    if not node.keys({"bearer", "cookies", "headers", "expiry", "check"}):
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
    expiry = _expiry(e, node) if (e := node.get("expiry")) is not None else None
    spec = AuthSpec(bearer, tuple(cookies), tuple(headers), expiry)
    return replace(spec, check=_session_check(c, spec)) if (c := node.get("check")) is not None else spec


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
    problems_before = len(ctx.problems)  # an earlier route's problem must not drop this one
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
            "fallback_on",
            "no_store",
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
    params_node = node.get("params")
    params = _params(params_node, stable_path)
    path_names = stable_path.names if stable_path else _names_in(node.get("stable"))
    # a param with a mistake is reported there; the targets and mappings naming it are not wrong too
    declared = set(params_node.value) if params_node is not None and isinstance(params_node.value, dict) else set()
    known = path_names | {p.name for p in params} | declared
    pagination_node = node.get("pagination")
    pagination = _pagination(pagination_node)
    # a pagination section with a mistake is reported where it is wrong; the rest of the route is
    # checked as the collection it was meant to be, not flagged again for having no pagination
    paged = pagination if pagination is not None or pagination_node is None else _SOME_PAGINATION
    if paged is not None:
        reserved = {"limit", "cursor", "all"} & {p.name for p in params}
        for r in sorted(reserved):
            node.error(f"param {r!r} is reserved for pagination on collections")
    fan = [p for p in params if p.fan_out]
    if len(fan) > 1 and params_node is not None:
        params_node.child(fan[1].name).child("fan_out").error("at most one param may fan out")
    if fan and (pagination_node is None or (pagination is not None and pagination.style != "before")):
        where = params_node.child(fan[0].name).child("fan_out") if params_node is not None else node
        where.error("fan_out merges streams by their 'before' field; it needs pagination style 'before'")
    targets: list[Target] = []
    if (tn := node.get("targets")) is not None:
        if not isinstance(tn.value, list) or not tn.value:
            tn.error("expected a non-empty list of upstream targets")
        else:
            for i in range(len(tn.value)):
                t = _target(tn.child(i), known, method or "GET")
                if t is not None:
                    targets.append(t)
    response = _response(node.get("response"), known, paged)
    validate = None
    if (v := node.get("validate")) is not None and (vn := v.string()) is not None:
        from gateway.validators import VALIDATORS

        if vn not in VALIDATORS:
            v.error(f"unknown validator {vn!r}; known: {', '.join(sorted(VALIDATORS))}")
        validate = vn
    cache = _route_cache(node.get("cache"), method, root)
    probe = _probe(node.get("probe"), method, stable_path, params, paged)
    shape = _shape(node.get("shape"), response, targets)
    fallback_on = _fallback_on(node.get("fallback_on"), len(targets), response, shape)
    desc = ""
    if (d := node.get("description")) is not None:
        desc = d.string() or ""
    if len(ctx.problems) > problems_before or method is None or stable_path is None or upstream_name is None:
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
        cache=cache,
        probe=probe,
        shape=shape,
        fallback_on=fallback_on,
        no_store=bool((n := node.get("no_store")) is not None and n.boolean()),
    )


def _names_in(stable: _Node | None) -> frozenset[str]:
    """The {names} of a ``stable:`` line that did not parse, so its targets are not flagged for using them."""
    text = stable.value if stable is not None and isinstance(stable.value, str) else ""
    return frozenset(re.findall(r"\{(\w+)\}", text))


#: stands in for a route's pagination section that has a mistake, while the rest of the route is checked
_SOME_PAGINATION = Pagination(style="offset", items_path=("results",))


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
            kind = kw.get("type", "string")
            fits = {
                "integer": isinstance(d.value, int) and not isinstance(d.value, bool),
                "boolean": isinstance(d.value, bool),
                "string": isinstance(d.value, str | int | float) and not isinstance(d.value, bool),
            }[kind]
            if not fits:
                d.error(f"default {d.value!r} is not a {kind}, the param's type")
            elif kw.get("enum") and str(d.value) not in kw["enum"]:
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
    """The ``pagination:`` section; which keys each style takes is ``gateway.pagination.styles.STYLE_KEYS``."""
    from gateway.pagination.styles import STYLE_KEYS, check_pagination

    if node is None:
        return None
    every = set().union(*STYLE_KEYS.values())
    if not node.keys(every, {"style"}):
        return None
    style = node.value.get("style")
    if style not in STYLE_KEYS:
        node.child("style").error(
            "expected 'before' (the last item's field), 'offset' (limit/offset), 'page' (page number),"
            " 'next_url' (the upstream's next link) or 'cursor' (a token from the body)"
        )
        return None
    ok = True
    for key in node.value:
        if key not in STYLE_KEYS[style]:
            node.child(key).error(f"not a key of style {style!r}; it takes: {', '.join(sorted(STYLE_KEYS[style]))}")
            ok = False
    kw: dict[str, Any] = {"style": style}
    items_default = "" if style == "before" else "results"
    items = node.value.get("items", items_default)
    kw["items_path"] = tuple(x for x in str(items).split(".") if x)
    for key, attr in (
        ("param", "before_param"),
        ("field", "field"),
        ("limit_param", "limit_param"),
        ("offset_param", "offset_param"),
        ("count", "count_key"),
        ("page_param", "page_param"),
        ("size_param", "size_param"),
        ("token_param", "token_param"),
    ):
        if (n := node.get(key)) is not None and (v := n.string()) is not None:
            kw[attr] = v
    if style in ("next_url", "cursor"):
        kw.setdefault("size_param", "")  # the page size is sent only when the upstream takes one
    for key, attr in (
        ("total", "total_path"),
        ("next", "next_path"),
        ("token", "token_path"),
        ("has_more", "has_more_path"),
    ):
        if (n := node.get(key)) is not None and (v := n.string()) is not None:
            if key == "next" and style == "offset":
                kw["next_key"] = v
            elif not all(v.split(".")):
                n.error("expected a dotted field path such as 'meta.next_cursor'")
                ok = False
            else:
                kw[attr] = tuple(v.split("."))
    for key in ("page_size", "default_limit", "max_limit"):
        if (n := node.get(key)) is not None and (iv := n.integer(1, 10000)) is not None:
            kw[key] = iv
    if (n := node.get("max_items")) is not None and (iv := n.integer(1)) is not None:
        kw["max_items"] = iv
    if (n := node.get("first_page")) is not None and (iv := n.integer(0, 1)) is not None:
        kw["first_page"] = iv
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
    return ResponseSpec(**kw)


def _keys(node: _Node | None, routes: list[str] | None) -> tuple[ClientKey, ...]:
    """``clients:`` (with per-key routes/methods) or ``admin:`` (keys only)."""
    if node is None or not node.keys({"keys"}, {"keys"}):
        return ()
    keys_node = node.child("keys")
    if not keys_node.is_map("a mapping of key name → {key: {env: VAR}, ...}"):
        return ()
    out: list[ClientKey] = []
    allowed = (
        {"key", "routes", "methods", "rate_limit", "description"} if routes is not None else {"key", "description"}
    )
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
                for g in globs:
                    if not fnmatch.filter(routes or [], g):
                        rn.error(f"{g!r} matches no route")
        methods: frozenset[str] | None = None
        if (mn := kn.get("methods")) is not None:
            if not isinstance(mn.value, list) or not all(str(m).upper() in METHODS for m in mn.value):
                mn.error(f"expected a list of HTTP methods ({', '.join(sorted(METHODS))})")
            else:
                methods = frozenset(str(m).upper() for m in mn.value)
                if "GET" in methods:
                    methods |= {"HEAD"}
        limit = _rate_limit(rl) if (rl := kn.get("rate_limit")) is not None else None
        if secret is not None:
            out.append(ClientKey(name, secret, globs, methods, limit))
    return tuple(out)


def _client_rate(value: Any) -> tuple[int, float]:
    try:
        return parse_rate(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a rate such as 10/s or 600/1m (or write {{requests: 600, per: 1m, burst: 20}})"
        ) from None


def _rate_limit(node: _Node) -> RateLimit | None:
    """``10/s``, ``600/1m`` (bursts of the full count) or ``{requests: 600, per: 1m, burst: 20}``."""
    if isinstance(node.value, dict):
        if not node.keys({"requests", "per", "burst"}, {"requests", "per"}):
            return None
        count = node.child("requests").integer(1)
        per = node.child("per").convert(parse_duration)
        burst = node.child("burst").integer(1) if "burst" in node.value else count
        if per is not None and per <= 0:
            node.child("per").error("the window must be longer than 0s")
            return None
        if count is None or per is None or burst is None:
            return None
        text = f"{count}/{node.value['per']}"
    else:
        parsed = node.convert(_client_rate)
        if parsed is None:
            return None
        count, per = parsed
        burst, text = count, str(node.value)
    return RateLimit(rate=count / per, burst=burst, text=text)


def _check_route_overlaps(ctx: _Ctx, routes: list[Route]) -> None:
    """Two routes answering the same method and path shape would shadow each other."""
    seen: dict[tuple[str, tuple[str, ...]], Route] = {}
    for r in routes:
        shape = tuple("{}" if seg.names else seg.raw for seg in r.path.segments)
        key = (r.method, shape)
        if key in seen:
            other = seen[key]
            ctx.add(
                r.line,
                f"routes.{r.name}.stable",
                f"{r.stable} shadows route {other.name!r} ({other.stable}, line {other.line}); one of them must change",
            )
        else:
            seen[key] = r


# --------------------------------------------------------------------------- probes, shapes, expiry


def _probe(
    node: _Node | None,
    method: str | None,
    path: PathTemplate | None,
    params: tuple[ParamSpec, ...],
    pagination: Pagination | None,
) -> ProbeSpec | None:
    """``probe: true`` or ``probe: {params: {name: value | {from: ROUTE, field: F}}}``."""
    if node is None or node.value is False or path is None:  # no path: reported at `stable`, not here too
        return None
    if method is not None and method != "GET":
        node.error(f"a probe sends a safe GET; this route answers {method}")
        return None
    values: dict[str, tuple[str | ProbeSample, _Node]] = {}
    if node.value is not True:
        if not node.keys({"params", "description"}):
            return None
        if (pn := node.get("params")) is not None and pn.is_map("a mapping of param name → sample value"):
            for name, vn in pn.items():
                value = _probe_value(vn)
                if value is not None:
                    values[name] = (value, vn)
    path_names = path.names if path is not None else frozenset()
    query_names = {p.name for p in params} | ({"limit"} if pagination is not None else set())
    for name in sorted(path_names - set(values)):
        node.error(f"the probe needs a sample value for path param {name!r} (under 'params')")
    for name, (_, vn) in values.items():
        if name not in path_names and name not in query_names:
            allowed = ", ".join(sorted(path_names | query_names)) or "none"
            vn.error(f"{name!r} is neither a path param nor a query param of this route; allowed: {allowed}")
    path_params = tuple((k, v) for k, (v, _) in values.items() if k in path_names)
    query = [(k, v) for k, (v, _) in values.items() if k not in path_names]
    if pagination is not None and "limit" not in values:
        query.append(("limit", "1"))  # one item is enough to check a collection's shape
    return ProbeSpec(path_params, tuple(query), node.line)


def _probe_value(node: _Node) -> str | ProbeSample | None:
    v = node.value
    if isinstance(v, dict):
        if not node.keys({"from", "field"}, {"from", "field"}):
            return None
        route = node.child("from").string("a route name")
        field = node.child("field").string("a field name of that route's answer")
        if route is None or field is None:
            return None
        return ProbeSample(route, tuple(field.split(".")), node.line)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str | int | float):
        return str(v)
    node.error(f"expected a sample value or {{from: ROUTE, field: FIELD}}, got {_kind(v)}")
    return None


def _check_probe_samples(routes_node: _Node | None, routes: list[Route]) -> None:
    """``from:`` must name another probed route, and samples may not go round in a circle."""
    if routes_node is None or routes_node.ctx.problems:
        return
    ctx = routes_node.ctx
    by_name = {r.name: r for r in routes}
    for r in routes:
        if r.probe is None:
            continue
        for name, value in (*r.probe.path_params, *r.probe.query):
            if not isinstance(value, ProbeSample):
                continue
            key = f"routes.{r.name}.probe.params.{name}.from"
            other = by_name.get(value.route)
            if other is None:
                hint = _closest(value.route, set(by_name) - {r.name})
                suggestion = f" (did you mean {hint!r}?)" if hint else ""
                ctx.add(value.line, key, f"no route named {value.route!r}{suggestion}")
            elif other.probe is None:
                ctx.add(value.line, key, f"route {value.route!r} has no probe to take a sample from")
            elif other.name == r.name:
                ctx.add(value.line, key, "a probe cannot take a sample from itself")
    if ctx.problems:
        return
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = [*trail[trail.index(name) :], name]
            route = by_name[name]
            line = route.probe.line if route.probe else route.line
            ctx.add(line, f"routes.{name}.probe", f"probe samples go round in a circle: {' → '.join(cycle)}")
            return
        state[name] = 1
        probe = by_name[name].probe
        for dep in sorted(probe.depends_on if probe else ()):
            visit(dep, [*trail, name])
        state[name] = 2

    for r in routes:
        if r.probe is not None:
            visit(r.name, [])


def _shape(node: _Node | None, response: ResponseSpec, targets: list[Target]) -> ShapeSpec | None:
    """``shape: {status: 200, content_type: application/json, fields: {id: string, version: integer}}``."""
    if node is None or not node.keys({"status", "content_type", "fields"}):
        return None
    kw: dict[str, Any] = {}
    if (n := node.get("status")) is not None:
        kw["status"] = n.integer(100, 599)
    if (n := node.get("content_type")) is not None and (ct := n.string("a media type")) is not None:
        if "/" not in ct or ";" in ct:
            n.error(f"expected a media type such as application/json (no parameters), got {ct!r}")
        else:
            kw["content_type"] = ct.strip().lower()
    if (fn := node.get("fields")) is not None and fn.is_map("a mapping of field → JSON type"):
        if response.raw:
            fn.error("a raw response is passed through unparsed; its fields cannot be checked")
        elif any(t.redirect == "report" for t in targets):
            fn.error("this route answers from a redirect's Location; there is no body whose fields to check")
        fields: list[tuple[tuple[str, ...], frozenset[str]]] = []
        for name, tn in fn.items():
            raw = tn.value
            kinds = [str(k).strip() for k in raw] if isinstance(raw, list) else str(raw).split("|")
            bad = [k for k in kinds if k not in SHAPE_TYPES]
            if isinstance(raw, bool) or raw is None or bad or not kinds:
                tn.error(f"expected one of {', '.join(sorted(SHAPE_TYPES))} (or several joined with '|')")
                continue
            fields.append((tuple(name.split(".")), frozenset(kinds)))
        kw["fields"] = tuple(fields)
    return ShapeSpec(**kw)


def _fallback_on(
    node: _Node | None, targets: int, response: ResponseSpec, shape: ShapeSpec | None
) -> frozenset[int | str]:
    """``fallback_on: [404, 410, 400, shape]``: what hands a request over to the next target."""
    if node is None:
        return DEFAULT_FALLBACK_ON
    if not isinstance(node.value, list) or not node.value:
        node.error("expected a non-empty list of upstream statuses (400-599) and/or 'shape'")
        return frozenset()
    out: set[int | str] = set()
    for i, value in enumerate(node.value):
        item = node.child(i)
        if value == "shape":
            if response.raw and shape is None:
                item.error("a raw response is passed through unchecked; declare 'shape:' for 'shape' to mean anything")
            out.add("shape")
        elif isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
            if value in (401, 403, 429):
                item.error(f"{value} is about the gateway's credential or pace, which another target shares")
            out.add(value)
        else:
            item.error(f"expected an upstream status from 400 to 599 or 'shape', got {value!r}")
    if targets == 1:
        node.error("the route has one target: there is no next target to hand over to")
    return frozenset(out)


def _probe_settings(node: _Node | None) -> ProbeSettings:
    """The root ``probes:`` section: how often and how many at once the background prober runs."""
    if node is None or not node.keys({"enabled", "interval", "jitter", "concurrency", "timeout"}):
        return ProbeSettings()
    kw: dict[str, Any] = {}
    if (n := node.get("enabled")) is not None and (b := n.boolean()) is not None:
        kw["enabled"] = b
    for key in ("interval", "jitter", "timeout"):
        if (n := node.get(key)) is not None and (d := n.convert(parse_duration)) is not None:
            if key != "jitter" and d <= 0:
                n.error(f"the {key} must be longer than 0s")
            else:
                kw[key] = d
    if (n := node.get("concurrency")) is not None and (c := n.integer(1, 64)) is not None:
        kw["concurrency"] = c
    settings = ProbeSettings(**kw)
    if settings.jitter >= settings.interval:
        node.error(f"jitter ({settings.jitter:g}s) must be shorter than the interval ({settings.interval:g}s)")
    return settings


def _expiry(node: _Node, auth: _Node) -> ExpirySpec | None:
    """``expiry: {cookie: I, segment: 0, field: expiration, unit: ms}`` (or ``bearer: true``, ``header: X``)."""
    if not node.keys({"cookie", "header", "bearer", "segment", "field", "unit"}, {"field"}):
        return None
    given = [k for k in ("cookie", "header", "bearer") if k in node.value]
    if len(given) != 1:
        node.error("name exactly one credential: 'cookie: NAME', 'header: NAME' or 'bearer: true'")
        return None
    which = given[0]
    credential = "bearer"
    if which == "bearer":
        if node.value["bearer"] is not True:
            node.child("bearer").error("expected true")
        if "bearer" not in auth.value:
            node.child("bearer").error("this upstream has no bearer credential")
    else:
        name = node.child(which).string(f"a {which} name")
        declared = auth.value.get(f"{which}s")
        names = set(declared) if isinstance(declared, dict) else set()
        if name is not None and name not in names:
            node.child(which).error(f"no {which} named {name!r} under auth.{which}s")
        credential = f"{which}:{name}"
    kw: dict[str, Any] = {"credential": credential}
    if (n := node.get("segment")) is not None and (seg := n.integer(0, 10)) is not None:
        kw["segment"] = seg
    if (f := node.child("field").string("a field name")) is not None:
        kw["field"] = f
    if (n := node.get("unit")) is not None:
        if n.value not in ("s", "ms"):
            n.error("expected s (seconds since the epoch) or ms (milliseconds)")
        else:
            kw["unit"] = n.value
    return ExpirySpec(**kw)


def _session_check(node: _Node, auth: AuthSpec) -> SessionCheck | None:
    """``check: {request: GET /user, expect: login, memo: 5s}`` (see gateway.session)."""
    if not node.keys({"request", "expect", "memo"}, {"request", "expect"}):
        return None
    request = node.child("request").string("a request such as 'GET /user'")
    expect = node.child("expect").string("a dotted field of the answer such as 'login'")
    method, _, path = (request or "").strip().partition(" ")
    path = path.strip()
    ok = request is not None and expect is not None
    if request is not None and (method != "GET" or not path.startswith("/") or " " in path or "?" in path):
        node.child("request").error(f"expected 'GET /path' (a safe GET on this upstream, no query), got {request!r}")
        ok = False
    if expect is not None and not all(expect.split(".")):
        node.child("expect").error(f"expected a dotted field name such as 'login' or 'user.id', got {expect!r}")
        ok = False
    memo = 5.0
    if (n := node.get("memo")) is not None and (d := n.convert(parse_duration)) is not None:
        if not 0 < d <= 300:
            n.error("the memo must be longer than 0s and at most 5m")
        memo = d
    names = ["bearer"] if auth.bearer else []
    names += [f"cookie:{name}" for name, _ in auth.cookies] + [f"header:{name}" for name, _ in auth.headers]
    credential = auth.expiry.credential if auth.expiry is not None else (names[0] if names else None)
    if credential is None:
        node.error("a session check needs a credential to check: this upstream's auth declares none")
        return None
    if not ok or expect is None:
        return None
    return SessionCheck(path, tuple(expect.split(".")), credential, memo)
