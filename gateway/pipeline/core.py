"""What the stages read of the proxy core, as a Protocol: the stages are built by ``gateway.proxy``
and must not import it back (tests/test_layout.py counts even typing-only imports as a cycle)."""

from __future__ import annotations

from typing import Any, Protocol

from gateway.cache import ResponseCache
from gateway.config import Config, Route
from gateway.errors import GatewayError, UpstreamError
from gateway.health import RouteHealth
from gateway.metrics import Metrics
from gateway.pipeline.calls import CallPipeline
from gateway.session import SessionChecks
from gateway.upstream import UpstreamResponse


class Core(Protocol):
    """The parts of ``gateway.proxy.Proxy`` the stages call."""

    config: Config
    cache: ResponseCache | None
    cursor_secret: bytes
    health: RouteHealth
    metrics: Metrics
    sessions: SessionChecks | None
    #: each route's call-level stack (gateway.pipeline.calls): what one upstream call of it passes
    calls: dict[str, CallPipeline]

    def _json(self, route: Route, resp: UpstreamResponse) -> Any: ...

    def scrub(self, exc: GatewayError) -> None:
        """Redact the error's text (before a client, /status or a log sees it)."""
        ...

    def failed(self, route: Route, exc: UpstreamError) -> None:
        """Count an upstream failure and mark the route down (the ``account`` stage's one call)."""
        ...
