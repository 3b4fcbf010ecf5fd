"""Prometheus metrics.  Labels come only from bounded sets: route names from
routes.yaml, upstream names, methods, status classes and error kinds; never raw
paths, ids, client keys or secrets, so cardinality stays fixed by the config."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

#: a loopback proxy answers in well under a millisecond; a slow upstream in seconds
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
NO_ROUTE = "(none)"


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class Metrics:
    """All collectors of one gateway, registered on the registry it is given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "gateway_requests_total",
            "Stable-side requests answered.",
            ["route", "method", "status_class"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "Stable-side request latency.",
            ["route", "method"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests_total",
            "Upstream calls by outcome (status class or error kind).",
            ["upstream", "route", "outcome"],
            registry=registry,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_request_duration_seconds",
            "Upstream call latency.",
            ["upstream", "route"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total",
            "Upstream failures by kind: timeout, connect, reset, 4xx, 5xx, redirect, shape, credentials, ...",
            ["upstream", "route", "kind"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "gateway_fallback_total",
            "Calls answered by a fallback target (index ≥ 1 in 'targets').",
            ["route", "target"],
            registry=registry,
        )
        self.route_up = Gauge(
            "gateway_route_up",
            "1 while the route's last upstream exchange worked, 0 once it broke.",
            ["route"],
            registry=registry,
        )
        self.reloads = Counter(
            "gateway_config_reloads_total",
            "Config loads by result.",
            ["result"],
            registry=registry,
        )
        self.config_info = Info("gateway_config", "The routes file being served.", registry=registry)
        self.config_loaded = Gauge(
            "gateway_config_last_reload_success_timestamp_seconds",
            "When the served config was loaded.",
            registry=registry,
        )
