"""The routes.yaml models of a route's upstream side: its targets, their pagination, the response mapping.

Read by ``sections_route`` / ``sections_response`` through ``gateway.config.schema.validate``; the
checks that span keys or routes (params a template names, item vs a collection) stay there.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, Field, field_validator, model_validator

from gateway.config.node import _kind
from gateway.config.spec_types import BY_KIND, MAPPING, SCALAR, Free, Section, Wording
from gateway.config.values import parse_request_line

#: the pagination styles, each with what it follows
STYLES = Wording(
    choices={
        "before": "the last item's field",
        "offset": "limit/offset",
        "page": "page number",
        "next_url": "the upstream's next link",
        "cursor": "a token from the body",
    }
)
STABLE = r"^\s*[A-Za-z]+\s+/\S*\s*$"


class PaginationSpec(Section):
    """Makes the route a collection: ``{items, next_cursor}``, ``limit``, ``cursor``, ``all=true`` (pagination.md).

    Each style takes its own keys; a key of another style is a mistake."""

    style: Annotated[Literal["before", "offset", "page", "next_url", "cursor"], STYLES]
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

    # the pattern is the editor's; gateway check's own check says which part is wrong
    request: Annotated[str, BeforeValidator(_request_line)] = Field(json_schema_extra={"pattern": STABLE})
    """``METHOD /path?query`` with ``{param}`` templates; unset params are dropped from the query. No
    ``${VAR}`` in the query: credentials go in the upstream's ``auth:``, never in URLs."""
    query: dict[str, Annotated[str | int | float, Wording("a string")]] | None = None
    """More query parameters, same templates as in ``request`` (and no ``${VAR}`` either)."""
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
