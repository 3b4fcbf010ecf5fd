"""The routes.yaml models of ``routes:``, ``clients:``/``admin:`` and the whole document (pydantic v2).

Parsed by hand (``sections_route`` and friends: their checks span sections and say more than a type);
these models give those parsers their key lists, editors their JSON Schema and the reference its text.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from gateway.config.names import VALIDATOR_NAMES
from gateway.config.node import _kind
from gateway.config.spec_types import BY_KIND, MAPPING, SCALAR, Duration, Free, HttpMethod, SecretRef, Section, Wording
from gateway.config.spec_upstream import CacheSpec, ProbesSpec, ServerSpec, UpstreamSpec
from gateway.config.values import parse_request_line

_STABLE = r"^\s*[A-Za-z]+\s+/\S*\s*$"


class ParamSpec(Section):
    """A query parameter scripts may send (anything else is a 400); ``NAME:`` alone is an optional string."""

    type: Literal["string", "integer", "boolean"] | None = None
    """``string`` (the default), ``integer`` or ``boolean``; a value of another type is a 400."""
    default: Free = None
    """The value used when the parameter is absent."""
    required: bool | None = None
    """A missing required parameter is a 400 (default false)."""
    enum: list[Free] | None = Field(None, min_length=1)
    """The values allowed."""
    fan_out: bool | None = None
    """Comma-separated values, one upstream stream each, merged by the ``before`` field."""
    description: str | None = None
    """For people: shown in /openapi.json."""



class PaginationSpec(Section):
    """Makes the route a collection: ``{items, next_cursor}``, ``limit``, ``cursor``, ``all=true`` (pagination.md).

    Each style takes its own keys; a key of another style is a mistake."""

    style: Literal["before", "offset", "page", "next_url", "cursor"]
    """How the upstream pages: ``before`` (the last item's field), ``offset``, ``page``, ``next_url``, ``cursor``."""
    items: str | None = None
    """Dotted path of the item list in the body: ``""`` = the body itself (default for ``before``; else results)."""
    has_more: str | None = None
    """Dotted path of a boolean that says whether another page exists."""
    page_size: int | None = Field(None, ge=1, le=10000)
    """Items asked per upstream page by ``all=true``."""
    default_limit: int | None = Field(None, ge=1, le=10000)
    """The stable ``?limit=`` when absent (default 50)."""
    max_limit: int | None = Field(None, ge=1, le=10000)
    """The largest stable ``?limit=`` (default 200)."""
    max_items: int | None = Field(None, ge=1)
    """An ``all=true`` larger than this is a 502 ``collection_too_large``."""
    param: str | None = None
    """``before``: the query parameter of the next page."""
    field: str | None = None
    """``before``: the item field whose last value asks for the next page."""
    limit_param: str | None = None
    """``offset``: the page-size query parameter (default ``limit``)."""
    offset_param: str | None = None
    """``offset``: the offset query parameter (default ``offset``)."""
    next: str | None = None
    """``offset``: the body key of the next link; ``next_url``: dotted path of the next URL."""
    count: str | None = None
    """``offset``: the body key of the total count."""
    page_param: str | None = None
    """``page``: the page-number query parameter."""
    size_param: str | None = Field(None, json_schema_extra={"nullable": True})
    """``page``, ``next_url``, ``cursor``: the page-size query parameter (sent only when given; ``page``
    sends ``limit`` unless this is ``null``, for an upstream whose page size is its own)."""
    first_page: int | None = Field(None, ge=0, le=1)
    """``page``: the number of the first page, 0 or 1."""
    total: str | None = None
    """``page``: dotted path of the total count."""
    token: str | None = None
    """``cursor``: dotted path of the next token in the body (required)."""
    token_param: str | None = None
    """``cursor``: the query parameter the token is sent in."""


def _request_line(value: object) -> object:
    """A target's ``METHOD /path?query``, told as ``gateway check`` always told it."""
    if not isinstance(value, str):
        raise ValueError(f"expected 'METHOD /path', got {_kind(value)}")
    parse_request_line(value.partition("?")[0])
    return value


class ConstBodySpec(Section):
    """A fixed JSON body sent instead of the client's."""

    const: Free
    """The JSON value."""


class TargetSpec(Section):
    """One upstream call; a plain ``METHOD /path?query`` string is the same as ``{request: ...}``."""

    request: Annotated[str, BeforeValidator(_request_line)] = Field(pattern=_STABLE)
    """``METHOD /path?query`` with ``{param}`` templates; unset params are dropped from the query."""
    query: dict[str, Annotated[str | int | float, Wording("a string")]] | None = None
    """More query parameters, same templates as in ``request``."""
    body: (
        Annotated[
            Annotated[Literal["passthrough", "none"], SCALAR] | Annotated[ConstBodySpec, MAPPING],
            BY_KIND,
            Wording("'passthrough', 'none' or {const: <JSON value>}"),
        ]
        | None
    ) = None
    """``passthrough`` (the default for writes), ``none``, or ``{const: <JSON value>}``."""
    redirect: Annotated[
        Literal["follow", "report"] | None,
        Wording(choices={"follow": "fetch the final target", "report": "answer from Location"}),
    ] = None
    """``follow`` (the default) or ``report``: answer from the Location header without following it."""
    pagination: PaginationSpec | None = None
    """How this target pages, where it differs from the route's ``pagination`` (a list moving to a new
    shape): a collection walk follows one target, its own way; ``limit`` stays the route's."""


#: a target: ``METHOD /path?query``, or a mapping with ``request``
TargetRef = Annotated[
    Annotated[str, SCALAR] | Annotated[TargetSpec, MAPPING],
    BY_KIND,
    Wording("'METHOD /path' or a mapping with 'request'"),
]


class FieldSpec(Section):
    """A stable field's source: exactly one of ``field``, ``param``, ``const`` or ``location``."""

    field: str | None = None
    """A dotted upstream field (``owner.login``)."""
    param: str | None = None
    """A path or query parameter of the request."""
    const: Free = None
    """A constant JSON value."""
    location: str | None = None
    """A regular expression with one group, applied to the upstream's Location header."""
    type: Annotated[
        Literal["int", "str", "float", "bool"] | None,
        Wording(choices={"int": "an integer", "str": "a string", "float": "a number", "bool": "true or false"}),
    ] = None
    """Convert the value."""
    optional: bool | None = None
    """A missing field is ``null`` instead of a 502 ``shape_drift``."""

    @field_validator("location")
    @classmethod
    def _one_group(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise ValueError(f"bad regular expression: {exc}") from None
            if pattern.groups < 1:
                raise ValueError("the pattern needs one capture group for the value")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if len(self.model_fields_set & {"field", "param", "const", "location"}) != 1:
            raise ValueError("give exactly one of field, param, const or location")
        return self


#: a dotted upstream field name, or a mapping saying where the value comes from
FieldRef = Annotated[
    Annotated[str, SCALAR] | Annotated[FieldSpec, MAPPING],
    BY_KIND,
    Wording("a field name or a mapping ({field|param|const|location: ...})"),
]
#: stable field → its source
FieldMap = Annotated[dict[str, FieldRef], Wording("a mapping of stable field → upstream field")]


class ResponseSpec(Section):
    """How the stable answer is built from the upstream's."""

    item: FieldMap | None = None
    """One entity: stable field → its source."""
    items: FieldMap | None = None
    """Each item of a collection: stable field → its source."""
    raw: bool | None = None
    """Pass the upstream body and content type through."""
    status: int | None = Field(None, ge=100, le=599)
    """Answer with this status."""
    headers: dict[str, FieldRef] | None = None
    """Response headers: name → source."""
    keep_other_fields: bool | None = None
    """With `item`: rename the mapped fields, pass every other upstream field through unchanged."""


class ProbeFromSpec(Section):
    """A sample value taken from another probed route's answer."""

    from_: str = Field(alias="from")
    """The other route."""
    field: str
    """The dotted field of its answer."""

    model_config = ConfigDict(populate_by_name=False)


class ProbeSpec(Section):
    """Sample values for the route's parameters, so the prober can call it (GET routes only)."""

    params: dict[str, str | int | float | bool | ProbeFromSpec] | None = None
    """Param name → a fixed sample, or ``{from: ROUTE, field: FIELD}``."""
    description: str | None = None
    """For people."""


class ShapeSpec(Section):
    """What a working upstream answer looks like; checked live and by probes (else 502 ``shape_drift``)."""

    status: int | None = Field(None, ge=100, le=599)
    """The upstream's success status (default: any 2xx)."""
    content_type: str | None = None
    """A media type such as ``application/json``."""
    fields: dict[str, str | list[str]] | None = None
    """Dotted field → JSON type (string, integer, number, boolean, array, object, null, any); ``a|b`` for several."""


class RouteCacheSpec(Section):
    """Reads: how long an answer stays fresh; writes: which routes' answers they make stale (cache.md)."""

    ttl: Duration | None = None
    """How long an answer is served from the cache."""
    stale_if_error: Duration | None = None
    """How long an expired answer may still be served while the upstream fails."""
    vary: list[str] | None = None
    """Request headers that make answers differ."""
    private: bool | None = None
    """Cached per client key."""
    invalidates: list[str] | None = None
    """Writes only: routes whose cached answers this write drops."""


class RouteSpec(Section):
    """One stable endpoint and how it maps onto the upstream."""

    stable: str = Field(pattern=_STABLE)
    """``METHOD /path`` that scripts call; a path segment is literal or one ``{param}``."""
    upstream: str
    """The name of an upstream under ``upstreams:``."""
    targets: list[TargetRef] = Field(min_length=1)
    """Upstream calls tried in order; a 404/410 hands over to the next one (``fallback_on``)."""
    description: str | None = None
    """For people: shown in /openapi.json."""
    auth: Literal["required", "none"] | bool | None = None
    """``required`` (the default) or ``none``: send no credentials (public upstream routes)."""
    params: dict[str, ParamSpec | None] | None = None
    """Query parameters scripts may send; anything else is a 400."""
    validate_: Literal[tuple(sorted(VALIDATOR_NAMES))] | None = Field(None, alias="validate")  # type: ignore[valid-type]
    """A named body check run before forwarding (a 422 lists every problem)."""
    pagination: PaginationSpec | None = None
    """Makes the route a collection."""
    response: ResponseSpec | None = None
    """How the stable answer is built."""
    cache: RouteCacheSpec | Literal[False] | None = None
    """Response caching; ``false`` is off."""
    probe: ProbeSpec | bool | None = None
    """Called by the background prober; ``true`` when no param needs a sample."""
    shape: ShapeSpec | None = None
    """What a working upstream answer looks like."""
    fallback_on: list[int | Literal["shape"]] | None = Field(None, min_length=1)
    """Upstream statuses (400-599) and/or ``shape`` that hand over to the next target (default [404, 410])."""
    no_store: bool | None = None
    """Answers say ``Cache-Control: no-store``, not ``private``."""


class RateLimitSpec(Section):
    """A client key's pace: ``requests`` per ``per``, in bursts of ``burst``."""

    requests: int = Field(ge=1)
    """Requests per window."""
    per: Duration
    """The window."""
    burst: int | None = Field(None, ge=1)
    """The largest burst (default: ``requests``)."""


class ClientKeySpec(Section):
    """One client key: sent as ``Authorization: Bearer <key>`` or ``X-API-Key``, never forwarded."""

    key: SecretRef
    """The key itself, from the environment or a file."""
    routes: list[str] | None = None
    """Route names (globs such as ``posthog_*``) this key may call (default: all)."""
    methods: list[HttpMethod] | None = None
    """HTTP methods this key may use (GET includes HEAD; default: all)."""
    rate_limit: str | RateLimitSpec | None = None
    """``10/s``, ``600/1m``, or ``{requests: 600, per: 1m, burst: 20}``."""
    description: str | None = None
    """For people."""


class ClientsSpec(Section):
    """Client keys; without any, the gateway is open (keep it on loopback)."""

    keys: dict[str, ClientKeySpec]
    """Key name → key."""


class AdminKeySpec(Section):
    """One admin key (for ``POST /admin/reload``)."""

    key: SecretRef
    """The key itself, from the environment or a file."""
    description: str | None = None
    """For people."""


class AdminSpec(Section):
    """Admin keys."""

    keys: dict[str, AdminKeySpec]
    """Key name → key."""


class DocumentSpec(Section):
    """routes.yaml: the stable API and the upstreams it maps onto. ``x-`` keys hold YAML anchors only."""

    model_config = ConfigDict(title="routegate routes.yaml")

    version: Literal[1] | None = None
    """The file format; this gateway reads version 1."""
    server: ServerSpec | None = None
    """The gateway's own HTTP server."""
    upstreams: dict[str, UpstreamSpec]
    """Upstream name → upstream."""
    routes: dict[str, RouteSpec]
    """Route name (a metric label) → route."""
    clients: ClientsSpec | None = None
    """Client keys."""
    admin: AdminSpec | None = None
    """Admin keys."""
    cache: CacheSpec | None = None
    """The response cache."""
    probes: ProbesSpec | None = None
    """The background prober."""
