"""The routes.yaml models of ``server:``, ``cache:`` and ``probes:`` (pydantic v2).

The field docstrings are the configuration reference (docs/configuration.md) and the editor hints
(routes.schema.json). Each section is read by its model through ``gateway.config.schema.validate``
(the cursor key and the Redis URL are secrets: their wording never echoes a value); ``sections_server``
and ``sections_access`` keep what spans keys.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import BeforeValidator, Field, ValidationInfo, WithJsonSchema, field_validator, model_validator

from gateway.config.hosts import ip_of
from gateway.config.model import CacheSettings, ProbeSettings
from gateway.config.node import _kind
from gateway.config.spec_types import Duration, SecretRef, Section, Size
from gateway.config.values import _NAME


class ClientTimeoutsSpec(Section):
    """How long a client may take to send its request."""

    headers: Duration = 15.0
    """The request line and headers; a slower client is cut off."""
    body: Duration = 30.0
    """The body; a late body is a 408."""

    @field_validator("headers", "body")
    @classmethod
    def _longer_than_0(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be longer than 0s")
        return value


class ServerSpec(Section):
    """The gateway's own HTTP server: limits on what clients send and how many at once (security-*.md)."""

    max_body_bytes: Size | None = None
    """A larger request body is a 413 (default 1MiB)."""
    max_concurrency: int | None = Field(None, ge=1, le=1_000_000)
    """Stable requests served at once; more get 429 + Retry-After (default: no cap)."""
    client_timeouts: ClientTimeoutsSpec | None = None
    """Slow clients."""
    cursor_key: SecretRef | None = None
    """Signs ``next_cursor`` (default: derived from the upstream credentials only, so cursors survive reloads; set
    it to keep them valid across a credential rotation)."""
    allowed_hosts: list[str] | None = None
    """Host names answered besides IPs and loopback; a leading ``*.`` matches subdomains, ``*`` any host."""
    max_connections: int | None = Field(None, ge=1, le=10_000_000)
    """Open client connections (default: half the open-file limit); idle ones are closed first."""
    max_connections_per_ip: int | None = Field(None, ge=1, le=10_000_000)
    """Open client connections from one address (default: no cap)."""
    max_buffered_bytes: Size | None = None
    """Upstream answer bytes held by all requests at once; past it a 503 (default 64MiB)."""

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _host_names(cls, value: object) -> object:
        if not isinstance(value, list) or not all(isinstance(h, str) and h.strip() for h in value):
            raise ValueError("expected a list of host names (a leading '*.' matches subdomains; '*' any host)")
        problems = [why for h in value if (why := _host_problem(h.strip())) is not None]
        if problems:
            raise ValueError("; ".join(problems))
        return value


_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?\Z")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def _host_problem(entry: str) -> str | None:
    """Why ``entry`` could never match a ``Host`` (compared as a bare name or IP, no scheme, path or
    port), or None.

    A URL pasted where a name belongs (``ROUTEGATE_PUBLIC_HOST=https://...``) passed the check and
    then answered every request through the ingress with a 421 telling the operator to add the name
    they had added.  The entry is echoed with any user-info hidden (a URL may carry a password)."""
    if entry == "*":
        return None
    shown = repr(re.sub(r"(?<=://)[^/@]*@", "…@", entry))
    wild, name = ("*.", entry[2:]) if entry.startswith("*.") else ("", entry)
    scheme = _SCHEME.match(name)
    bare = name[scheme.end() :] if scheme else name
    wild, bare = ("*.", bare[2:]) if bare.startswith("*.") else (wild, bare)
    bare = bare.split("/")[0].split("?")[0].rpartition("@")[2]  # no path, query or user-info
    if bare.startswith("["):  # [IPv6] or [IPv6]:port
        bare = bare[: bare.find("]") + 1] if "]" in bare else bare
    elif bare.count(":") == 1:
        bare = bare.partition(":")[0]
    hint = f"; write the name alone, e.g. {wild + bare!r}" if bare and (_HOST_NAME.match(bare) or ip_of(bare)) else ""
    if scheme:
        return f"{shown} is a URL, not a host name (no scheme){hint}"
    if "," in name:
        return f"{shown} holds several names: give each its own list item"
    if "/" in name or "?" in name or "@" in name:
        return f"{shown} has a path or user-info; a Host is a name only{hint}"
    if ip_of(name) is not None or _HOST_NAME.match(name):
        return None  # a name, an IPv4 address, or a bare IPv6 address
    if ":" in name and name != bare:
        return f"{shown} has a port; the Host's port is ignored{hint}"
    return f"{shown} is not a host name (letters, digits, '-', '_' and dots; a leading '*.' for subdomains; or an IP)"


def _on_off(value: object) -> bool:
    flag = value if isinstance(value, bool) else str(value).lower()
    if flag in (True, "true", "on", "yes", "1"):
        return True
    if flag in (False, "false", "off", "no", "0"):
        return False
    raise ValueError(f"expected on or off, got {_kind(value)}")


#: ``true``/``false``, or ``on``/``off`` (``yes``/``no``, ``1``/``0``): what ``${ROUTEGATE_CACHE}`` holds
OnOff = Annotated[
    bool,
    BeforeValidator(_on_off),
    WithJsonSchema({"anyOf": [{"type": "boolean"}, {"enum": ["on", "off", "true", "false", "yes", "no", "1", "0"]}]}),
]


class RedisSpec(Section):
    """The shared cache store of ``backend: redis``."""

    url: SecretRef
    """The Redis URL (it may hold a password, so it is a secret)."""
    prefix: str | None = None
    """Prefix of every key (default ``routegate``)."""
    timeout: Duration | None = None
    """One Redis command; a slower one is a cache miss (default 250ms)."""
    retry_after: Duration | None = None
    """After a Redis failure, how long the cache is bypassed (default 1s)."""

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("the key prefix uses letters, digits, '_', '-' and '.'")
        return value

    @field_validator("timeout", "retry_after")
    @classmethod
    def _longer_than_0(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be longer than 0s")
        return value


class CacheSpec(Section):
    """The response cache (cache.md); routes opt in with their own ``cache:``."""

    enabled: OnOff = CacheSettings().enabled
    """On by default; usually ``${ROUTEGATE_CACHE:-on}``."""
    backend: Literal["memory", "redis", "auto"] = CacheSettings().backend
    """``memory`` (this process), ``redis`` (shared by every replica) or ``auto`` (redis when its URL
    resolves, e.g. ``ROUTEGATE_REDIS_URL`` is set; else memory). Redis also shares budgets, limits,
    hold-offs, breakers and probe results (scale-out.md)."""
    max_bytes: Size = CacheSettings().max_bytes
    """The whole cache."""
    max_entry_bytes: Size = CacheSettings().max_entry_bytes
    """One answer; a larger one is served but not cached (at most ``max_bytes``)."""
    redis: RedisSpec | None = None
    """With ``backend: redis`` or ``auto``: where."""

    @field_validator("backend", mode="before")
    @classmethod
    def _backend(cls, value: object) -> object:
        if value not in ("memory", "redis", "auto"):
            raise ValueError(
                "expected 'memory' (this process), 'redis' (shared by every replica)"
                " or 'auto' (redis when its URL is set)"
            )
        return value

    @field_validator("max_bytes", "max_entry_bytes")
    @classmethod
    def _one_byte(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1 byte")
        return value


class ProbesSpec(Section):
    """The background prober: every probed route is called once per ``interval`` (± ``jitter``)."""

    enabled: bool = ProbeSettings().enabled
    """Off: routes are probed only by ``gateway probe``."""
    interval: Duration = ProbeSettings().interval
    """How often each route is probed."""
    jitter: Duration = ProbeSettings().jitter
    """A random shift of each round, shorter than ``interval``."""
    concurrency: int = Field(ProbeSettings().concurrency, ge=1, le=64)
    """Probes running at once."""
    timeout: Duration = ProbeSettings().timeout
    """A probe taking longer is broken (``probe_timeout``)."""

    @field_validator("interval", "timeout")
    @classmethod
    def _longer_than_0(cls, value: float, info: ValidationInfo) -> float:
        if value <= 0:
            raise ValueError(f"the {info.field_name} must be longer than 0s")
        return value

    @model_validator(mode="after")
    def _jitter(self) -> Self:
        if self.jitter >= self.interval:
            raise ValueError(f"jitter ({self.jitter:g}s) must be shorter than the interval ({self.interval:g}s)")
        return self
