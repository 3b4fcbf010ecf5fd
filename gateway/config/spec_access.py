"""The routes.yaml models of ``clients:`` and ``admin:``: the keys callers present, and what each may do.

Read by ``sections_access._keys`` through ``gateway.config.schema.validate``; key names and the routes
a grant names are checked there, against the whole file.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator

from gateway.config.spec_types import BY_KIND, MAPPING, SCALAR, Duration, HttpMethod, SecretRef, Section, Wording
from gateway.config.values import parse_rate
from gateway.methods import METHODS


def _client_rate(value: Any) -> tuple[int, float]:
    try:
        return parse_rate(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a rate such as 10/s or 600/1m (or write {{requests: 600, per: 1m, burst: 20}})"
        ) from None


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class RateLimitSpec(Section):
    """A client key's pace: ``requests`` per ``per``, in bursts of ``burst``."""

    requests: int = Field(ge=1)
    """Requests per window."""
    per: Duration
    """The window."""
    burst: int | None = Field(None, ge=1)
    """The largest burst (default: ``requests``)."""

    @field_validator("per")
    @classmethod
    def _longer_than_0(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("the window must be longer than 0s")
        return value


#: ``10/s``, ``600/1m``, or ``{requests: 600, per: 1m, burst: 20}``
ClientRate = Annotated[
    Annotated[
        tuple[int, float],
        BeforeValidator(_client_rate),
        WithJsonSchema({"type": "string", "pattern": r"^\s*\d+\s*/", "examples": ["10/s", "600/1m"]}),
        SCALAR,
    ]
    | Annotated[RateLimitSpec, MAPPING],
    BY_KIND,
    Wording("a rate such as 10/s or 600/1m, or {requests: 600, per: 1m, burst: 20}"),
]


class ClientKeySpec(Section):
    """One client key: sent as ``Authorization: Bearer <key>``, ``X-API-Key`` or Basic with the key as password; never
    forwarded."""

    key: SecretRef
    """The key itself, from the environment or a file."""
    routes: Annotated[list[str], Wording("a list of route names (globs such as posthog_* allowed)")] | None = None
    """Route names (globs such as ``posthog_*``) this key may call (default: all)."""
    methods: (
        Annotated[
            list[Annotated[HttpMethod, BeforeValidator(_upper)]],
            Wording(f"a list of HTTP methods ({', '.join(sorted(METHODS))})"),
        ]
        | None
    ) = None
    """HTTP methods this key may use (GET includes HEAD; default: all)."""
    rate_limit: ClientRate | None = None
    """``10/s``, ``600/1m``, or ``{requests: 600, per: 1m, burst: 20}``."""
    description: str | None = None
    """For people."""


class ClientsSpec(Section):
    """Client keys; without any, the gateway is open (keep it on loopback)."""

    keys: Annotated[dict[str, ClientKeySpec], Wording("a mapping of key name → {key: {env: VAR}, ...}")]
    """Key name → key."""


class AdminKeySpec(Section):
    """One admin key (for ``POST /admin/reload``)."""

    key: SecretRef
    """The key itself, from the environment or a file."""
    description: str | None = None
    """For people."""


class AdminSpec(Section):
    """Admin keys."""

    keys: Annotated[dict[str, AdminKeySpec], Wording("a mapping of key name → {key: {env: VAR}}")]
    """Key name → key."""
