"""The frozen config objects that describe an upstream (secrets, auth, timeouts, retries)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from yarl import URL

from gateway.methods import METHODS as METHODS  # re-exported by gateway.config


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
