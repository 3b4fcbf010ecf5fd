"""The routes.yaml models of ``upstreams:`` (pydantic v2); ``server:``, ``cache:``, ``probes:`` are spec_server's.

The field docstrings are the configuration reference (docs/configuration.md) and the editor hints
(routes.schema.json). Each section is read by its model through ``gateway.config.schema.validate``,
secrets included (their wording never echoes a value); ``sections_server`` keeps what spans keys.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from yarl import URL

from gateway.config.model_upstream import BreakerPolicy, RequestBudget, RetryPolicy, Timeouts
from gateway.config.node import _kind
from gateway.config.spec_types import Duration, Rate, Ratio, SecretRef, Section, Size, Wording


class TimeoutsSpec(Section):
    """How long one upstream exchange may take."""

    connect: Duration = Timeouts().connect
    """Opening the connection (TCP and TLS)."""
    read: Duration = Timeouts().read
    """Between two reads of the answer."""
    total: Duration = Timeouts().total
    """The whole exchange, the body included."""


class RetriesSpec(Section):
    """Retries of one upstream call: idempotent methods, or any method before it was sent (resilience.md)."""

    attempts: int = Field(RetryPolicy().attempts, ge=1, le=10)
    """Tries per call, the first included (1 = never retry)."""
    backoff: Duration = RetryPolicy().backoff
    """The first backoff; it doubles per retry, capped at ``max_backoff``, with full jitter."""
    max_backoff: Duration = RetryPolicy().max_backoff
    """The longest backoff between two tries."""
    max_wait: Duration = RetryPolicy().max_wait
    """The longest Retry-After (or PostHog's "available in N seconds") the gateway waits out."""
    budget: Ratio = RetryPolicy().budget
    """Retries may add at most this share of calls over a 10 s window (10 are always allowed)."""


class BreakerSpec(Section):
    """A circuit breaker: open after ``failures`` consecutive failed exchanges, try again after ``cooldown``."""

    failures: int = Field(ge=0, le=1000)
    """Consecutive failures that open the breaker; 0 = no breaker (the default)."""
    cooldown: Duration = BreakerPolicy().cooldown
    """How long the breaker stays open before one call may test the upstream."""

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the cool-down must be longer than 0s")
        return value


class RequestBudgetSpec(Section):
    """Outbound requests allowed per credential, every window enforced (PostHog's published limits)."""

    limits: list[Rate]
    """Budgets such as ``[480/1m, 4800/1h]``."""
    max_wait: Duration = RequestBudget().max_wait
    """The longest a call queues for a slot; a longer wait is a 503 with Retry-After."""

    @field_validator("limits", mode="before")
    @classmethod
    def _a_list(cls, value: object) -> object:
        if not isinstance(value, list) or not value:
            raise ValueError("expected a list of budgets such as [480/1m, 4800/1h]")
        return value


class ExpirySpec(Section):
    """Where the credential's expiry is read, so that an expired session is a clear 503, never a silent 401."""

    cookie: Annotated[str, Wording("a cookie name")] | None = None
    """The cookie (declared under ``auth.cookies``) that carries the expiry."""
    header: Annotated[str, Wording("a header name")] | None = None
    """The header (declared under ``auth.headers``) that carries the expiry."""
    bearer: Annotated[Literal[True], Wording("true")] | None = None
    """``true``: the bearer token carries the expiry."""
    segment: int | None = Field(None, ge=0, le=10)
    """Which ``.``-separated segment of the credential is the (base64 JSON) payload; default 0."""
    field: Annotated[str, Wording("a field name")]
    """The payload's field holding the expiry time."""
    unit: Annotated[Literal["s", "ms"], Wording("s (seconds since the epoch) or ms (milliseconds)")] | None = None
    """``s`` (seconds since the epoch, the default) or ``ms``."""

    @model_validator(mode="after")
    def _one_credential(self) -> Self:
        if len(self.model_fields_set & {"cookie", "header", "bearer"}) != 1:
            raise ValueError("name exactly one credential: 'cookie: NAME', 'header: NAME' or 'bearer: true'")
        return self


_SAFE_GET = r"^\s*GET\s+/[^\s?]*\s*$"


def _check_request(value: object) -> object:
    method, _, path = value.strip().partition(" ") if isinstance(value, str) else ("", "", "")
    path = path.strip()
    if method != "GET" or not path.startswith("/") or " " in path or "?" in path:
        got = repr(value) if isinstance(value, str) else _kind(value)
        raise ValueError(f"expected 'GET /path' (a safe GET on this upstream, no query), got {got}")
    return value


class SessionCheckSpec(Section):
    """Is the session alive? A safe GET whose answer names the user (session-check.md)."""

    request: Annotated[str, BeforeValidator(_check_request)] = Field(json_schema_extra={"pattern": _SAFE_GET})
    """``GET /path`` on this upstream, no query."""
    expect: Annotated[str, Wording("a dotted field of the answer such as 'login'")]
    """A dotted field of the answer that a live session fills, such as ``login``."""
    memo: Duration | None = None
    """How long one answer stands (default 5s, at most 5m)."""

    @field_validator("expect")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not all(value.split(".")):
            raise ValueError(f"expected a dotted field name such as 'login' or 'user.id', got {value!r}")
        return value

    @field_validator("memo")
    @classmethod
    def _memo(cls, value: float | None) -> float | None:
        if value is not None and not 0 < value <= 300:
            raise ValueError("the memo must be longer than 0s and at most 5m")
        return value


class AuthSpec(Section):
    """The credentials the gateway adds to every call of this upstream; never written inline."""

    bearer: SecretRef | None = None
    """Sent as ``Authorization: Bearer …``."""
    cookies: dict[str, SecretRef] | None = None
    """Cookie name → secret."""
    headers: dict[str, SecretRef] | None = None
    """Header name → secret."""
    expiry: ExpirySpec | None = None
    """Where the credential's expiry is read."""
    check: SessionCheckSpec | None = None
    """How ``/status`` and the prober tell a live session from an expired one."""


def _base_url(text: str) -> str:
    """An absolute http(s) URL with no userinfo nor query: credentials never go in URLs (aiohttp also refuses
    userinfo beside an Authorization header, so every call would fail)."""
    try:
        url = URL(text)
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if url.user is not None or url.password is not None:  # never echoed: it is a credential
        raise ValueError(
            "base_url cannot carry a user or password (credentials never go in URLs): use the upstream's auth:"
        )
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{text!r} is not an absolute http(s) URL")
    if url.query_string or url.fragment:
        raise ValueError("base_url cannot carry a query or fragment (credentials never go in URLs)")
    return text


def _header_value(value: object) -> object:
    """A number is its text (``X-Version: 2``); a line break would start a header of its own."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and ("\r" in value or "\n" in value):
        raise ValueError("header values cannot contain line breaks")
    return value


#: a static header's value: text, or a number written bare
HeaderValue = Annotated[
    str,
    BeforeValidator(_header_value),
    Wording("a header value"),
    WithJsonSchema({"type": ["string", "number"]}),
]


class UpstreamSpec(Section):
    """One upstream API: where it is, how it is called, and the credentials it takes."""

    base_url: Annotated[str, AfterValidator(_base_url), Wording("an absolute http(s) URL")] = Field(
        json_schema_extra={"format": "uri"}
    )
    """The absolute http(s) URL every target path is appended to; no query, user or password (credentials
    never go in URLs)."""
    description: str | None = None
    """For people: shown in ``gateway routes``."""
    timeouts: TimeoutsSpec | None = None
    """How long one exchange may take."""
    headers: Annotated[dict[str, HeaderValue], Wording("a mapping of header name → value")] | None = None
    """Static, non-secret headers sent with every call (such as ``Origin``)."""
    auth: AuthSpec | None = None
    """Credentials: secrets from the environment or files, never inline."""
    max_connections: int | None = Field(None, ge=1)
    """Pooled keep-alive connections (default 100)."""
    concurrency: int | None = Field(None, ge=1, le=64)
    """Pages an ``all=true`` aggregation fetches at once (offset style; default 4)."""
    max_response_bytes: Size | None = None
    """A larger upstream answer is a 502 (default 16MiB; at most ``server.max_buffered_bytes``)."""
    max_redirects: int | None = Field(None, ge=0, le=20)
    """Redirects followed per call (default 5)."""
    retries: RetriesSpec | None = None
    """Retries of failed calls."""
    circuit_breaker: BreakerSpec | None = None
    """Stop calling an upstream that keeps failing (default: no breaker)."""
    request_budget: RequestBudgetSpec | None = None
    """Outbound rate limits per credential (default: none)."""
