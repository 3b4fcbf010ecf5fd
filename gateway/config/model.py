"""The frozen config model: the only part of config that runtime code imports."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.config.model_upstream import Secret, Upstream


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
    #: how this target pages when it differs from the route's (a migration to a new list shape)
    pagination: Pagination | None = None

    @property
    def text(self) -> str:
        """The request as routes.yaml writes it: ``GET /user/documents?types={type}``."""
        query = "&".join(f"{k}={tpl.raw}" for k, tpl in self.query)
        return f"{self.method} {self.path.raw}" + (f"?{query}" if query else "")

    @property
    def label(self) -> str:
        """``text``, saying how the target pages where that is its own: two targets may ask one path."""
        return self.text if self.pagination is None else f"{self.text} (paged by {self.pagination.style})"


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


class KeepOtherFields(tuple[tuple[str, FieldExpr], ...]):
    """An ``item`` mapping with ``keep_other_fields: true``: the mapped fields get their stable
    names and every other upstream field is passed through, so a whole document (a backup's
    input) loses nothing while its common fields are named like the lists'.  A tuple, so code
    that only reads the mapped fields (OpenAPI, shape checks) sees them as before."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ResponseSpec:
    item: tuple[tuple[str, FieldExpr], ...] | None = None
    items: tuple[tuple[str, FieldExpr], ...] | None = None
    raw: bool = False
    status: int | None = None
    headers: tuple[tuple[str, FieldExpr], ...] = ()
    #: ``item`` renames its fields and passes every other upstream field through (gateway.mapping)
    keep_other_fields: bool = False


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
    #: answers say ``Cache-Control: no-store`` rather than ``private`` (gateway.downstream)
    no_store: bool = False

    @property
    def stable(self) -> str:
        return f"{self.method} {self.path.raw}"

    def paging(self, index: int) -> Pagination | None:
        """How target ``index`` pages: its own ``pagination:``, else the route's."""
        own = self.targets[index].pagination
        return own if own is not None else self.pagination

    @property
    def mixed_paging(self) -> bool:
        """Some target pages its own way: the collection walk follows one target at a time."""
        return any(t.pagination is not None for t in self.targets)

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
