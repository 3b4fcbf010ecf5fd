"""The routes.yaml models of ``routes:``, ``clients:``/``admin:`` and the whole document (pydantic v2).

A route's sections (params, targets, pagination, response, cache, probe, shape) and the client keys are
read by these models through ``gateway.config.schema.validate``; ``sections_route`` and friends keep only
what spans keys and routes. The route entry and the document are read by ``spec_entry``'s models, these
with each section left to its own; the models also give editors their JSON Schema and the reference its text.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

from gateway.config.names import VALIDATOR_NAMES
from gateway.config.node import _kind
from gateway.config.spec_access import AdminSpec, ClientsSpec
from gateway.config.spec_calls import STABLE, TargetRef
from gateway.config.spec_calls import PaginationSpec as PaginationSpec
from gateway.config.spec_calls import ResponseSpec as ResponseSpec
from gateway.config.spec_server import CacheSpec, ProbesSpec, ServerSpec
from gateway.config.spec_types import (
    BY_KIND,
    LIST,
    MAPPING,
    SCALAR,
    Duration,
    Free,
    Section,
    Wording,
)
from gateway.config.spec_upstream import UpstreamSpec
from gateway.config.values import parse_request_line


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


class ProbeFromSpec(Section):
    """A sample value taken from another probed route's answer."""

    from_: Annotated[str, Wording("a route name")] = Field(alias="from")
    """The other route."""
    field: Annotated[str, Wording("a field name of that route's answer")]
    """The dotted field of its answer."""

    model_config = ConfigDict(populate_by_name=False)


#: a fixed sample, or where to take one
ProbeValue = Annotated[
    Annotated[str | int | float | bool, SCALAR] | Annotated[ProbeFromSpec, MAPPING],
    BY_KIND,
    Wording("a sample value or {from: ROUTE, field: FIELD}"),
]


class ProbeSpec(Section):
    """Sample values for the route's parameters, so the prober can call it (GET routes only)."""

    params: Annotated[dict[str, ProbeValue], Wording("a mapping of param name → sample value")] | None = None
    """Param name → a fixed sample, or ``{from: ROUTE, field: FIELD}``."""
    description: str | None = None
    """For people."""


JsonType = Literal["any", "array", "boolean", "integer", "null", "number", "object", "string"]
_ONE_TYPE = "(" + "|".join(get_args(JsonType)) + ")"
#: ``string``, ``integer|null`` or ``[integer, "null"]``
JsonTypes = Annotated[
    Annotated[str, StringConstraints(pattern=f"^{_ONE_TYPE}(\\|{_ONE_TYPE})*$"), SCALAR]
    | Annotated[list[JsonType], Field(min_length=1), LIST],
    BY_KIND,
    Wording(f"one of {', '.join(get_args(JsonType))} (or several joined with '|')"),
]


def _media_type(value: str) -> str:
    if "/" not in value or ";" in value:
        raise ValueError(f"expected a media type such as application/json (no parameters), got {value!r}")
    return value


class ShapeSpec(Section):
    """What a working upstream answer looks like; checked live and by probes (else 502 ``shape_drift``)."""

    status: int | None = Field(None, ge=100, le=599)
    """The upstream's success status (default: any 2xx)."""
    content_type: (
        Annotated[str, AfterValidator(_media_type), Wording("a media type such as application/json (no parameters)")]
        | None
    ) = None
    """A media type such as ``application/json``."""
    fields: Annotated[dict[str, JsonTypes], Wording("a mapping of field → JSON type")] | None = None
    """Dotted field → JSON type (string, integer, number, boolean, array, object, null, any); ``a|b`` for several."""


class RouteReadCacheSpec(Section):
    """A read's cache: how long an answer stays fresh (cache.md)."""

    ttl: Duration | None = None
    """How long an answer is served from the cache."""
    stale_if_error: Duration | None = None
    """How long an expired answer may still be served while the upstream fails."""
    vary: list[str] | None = None
    """Request headers that make answers differ."""
    private: bool | None = None
    """Cached per client key."""


class RouteWriteCacheSpec(Section):
    """A write's cache: which routes' answers it makes stale (writes are never cached)."""

    invalidates: list[str] | None = None
    """Writes only: routes whose cached answers this write drops."""


# what the editor and the reference are told; a route is read by the read or the write one as its method is
class RouteCacheSpec(RouteWriteCacheSpec, RouteReadCacheSpec):
    """Reads: how long an answer stays fresh; writes: which routes' answers they make stale (cache.md)."""


def _stable(value: object) -> object:
    """A route's ``METHOD /path``, told as a target's request line is."""
    if not isinstance(value, str):
        raise ValueError(f"expected 'METHOD /path', got {_kind(value)}")
    parse_request_line(value)
    return value


def _validator_name(value: object) -> object:
    if isinstance(value, str) and value not in VALIDATOR_NAMES:
        raise ValueError(f"unknown validator {value!r}; known: {', '.join(sorted(VALIDATOR_NAMES))}")
    return value


#: statuses that are about the gateway's own credential or pace: the next target would answer the same
_SHARED = (401, 403, 429)


def _hand_over(value: object) -> object:
    """One ``fallback_on`` entry: an upstream error status, or ``shape``."""
    if value == "shape":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 599:
        if value in _SHARED:
            raise ValueError(f"{value} is about the gateway's credential or pace, which another target shares")
        return value
    raise ValueError(f"expected an upstream status from 400 to 599 or 'shape', got {value!r}")


#: an upstream status (400-599, not 401/403/429) or ``shape``
HandOver = Annotated[
    int | Literal["shape"],
    BeforeValidator(_hand_over),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 400, "maximum": 599}, {"const": "shape"}]}),
]
#: what a non-empty list of targets is told
TARGETS = Wording("a non-empty list of upstream targets")


class RouteSpec(Section):
    """One stable endpoint and how it maps onto the upstream."""

    stable: Annotated[str, BeforeValidator(_stable)] = Field(json_schema_extra={"pattern": STABLE})
    """``METHOD /path`` that scripts call; a path segment is literal or one ``{param}``."""
    upstream: str
    """The name of an upstream under ``upstreams:``."""
    targets: Annotated[list[TargetRef], Field(min_length=1), TARGETS]
    """Upstream calls tried in order; a 404/410 hands over to the next one (``fallback_on``)."""
    description: str | None = None
    """For people: shown in /openapi.json."""
    auth: Annotated[Literal["required", "none"] | bool, Wording("'required' or 'none'")] | None = None
    """``required`` (the default) or ``none``: send no credentials (public upstream routes)."""
    params: dict[str, ParamSpec | None] | None = None
    """Query parameters scripts may send; anything else is a 400."""
    validate_: (
        Annotated[
            Literal[tuple(sorted(VALIDATOR_NAMES))],  # type: ignore[valid-type]
            BeforeValidator(_validator_name),
            Wording("the name of a body check"),
        ]
        | None
    ) = Field(None, alias="validate")
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
    fallback_on: (
        Annotated[
            list[HandOver],
            Field(min_length=1),
            Wording("a non-empty list of upstream statuses (400-599) and/or 'shape'"),
        ]
        | None
    ) = None
    """Upstream statuses (400-599) and/or ``shape`` that hand over to the next target (default [404, 410])."""
    no_store: bool | None = None
    """Answers say ``Cache-Control: no-store``, not ``private``."""


def _version(value: object) -> object:
    """Version 1 is the only format; a string is named by its kind only (it may be interpolated)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value == 1:
            return value
        raise ValueError(f"unsupported version {value!r}; this gateway reads version 1")
    raise ValueError(f"expected version 1, got {'a string' if isinstance(value, str) else _kind(value)}")


class DocumentSpec(Section):
    """routes.yaml: the stable API and the upstreams it maps onto. ``x-`` keys hold YAML anchors only."""

    model_config = ConfigDict(title="routegate routes.yaml")

    version: Annotated[Literal[1], BeforeValidator(_version)] | None = None
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
