"""Prometheus metrics.  Labels come only from bounded sets: route names from
routes.yaml, upstream names, methods, status classes and error kinds; never raw
paths, ids, client keys or secrets, so cardinality stays fixed by the config.

Each gauge names its ``multiprocess_mode``: how ``gateway serve --workers N`` combines
the workers' values (``livesum`` for per-worker amounts, ``max`` for timestamps,
``livemostrecent`` for states every worker observes); elsewhere it is ignored."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

from gateway.fastmetrics import CounterChild, FastCounter, FastHistogram, HistogramChild

# a `_created` series per counter and histogram child is noise nobody alerts on (88 series for the shipped
# routes.yaml); the client exports none once this runs, before any collector is made
disable_created_metrics()  # type: ignore[no-untyped-call]

#: a loopback proxy answers in well under a millisecond; a slow upstream in seconds
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
NO_ROUTE = "(none)"


_CLASSES = {n: f"{n}xx" for n in range(10)}


def status_class(status: int) -> str:
    return _CLASSES.get(status // 100) or f"{status // 100}xx"  # (one string per class, not one per call)


class Metrics:
    """All collectors of one gateway, registered on the registry it is given."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # the per-request series are plain numbers, exported at scrape time (gateway.fastmetrics)
        self.requests = FastCounter(
            "gateway_requests_total",
            "Stable-side requests answered.",
            ["route", "method", "status_class"],
            registry=registry,
        )
        self.request_seconds = FastHistogram(
            "gateway_request_duration_seconds",
            "Stable-side request latency.",
            ["route", "method"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.upstream_requests = FastCounter(
            "gateway_upstream_requests_total",
            "Upstream calls by outcome (status class or error kind).",
            ["upstream", "route", "outcome"],
            registry=registry,
        )
        self.upstream_seconds = FastHistogram(
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
        # resilience (gateway.resilience): retries, circuit breakers, outbound pacing
        self.upstream_retries = Counter(
            "gateway_upstream_retries_total",
            "Upstream calls tried again, by reason: connect, connect_timeout, timeout, reset, 429, 502, 503, 504.",
            ["upstream", "route", "reason"],
            registry=registry,
        )
        self.shared_up = Gauge(
            "gateway_shared_state_up",
            "1 while budgets, limits, hold-offs and breakers are shared through Redis; 0 while this process "
            "falls back to its local share (NaN: no Redis configured, nothing is shared).",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.shared_up.set(float("nan"))
        self.shared_instances = Gauge(
            "gateway_shared_instances",
            "Gateway processes (workers of every replica) with a fresh heartbeat in Redis, as last seen; "
            "the local fallback divides each budget and limit by it.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.shared_instances.set(1)
        self.shared_failures = Counter(
            "gateway_shared_state_failures_total",
            "Shared-state Redis calls that failed, by reason: timeout, connection or error (each a switch to "
            "local shares, unless already falling back), busy (no pooled connection free in time: only that "
            "request was refused, no fallback).",
            ["reason"],
            registry=registry,
        )
        for reason in ("timeout", "connection", "error", "busy"):  # at 0 from the start: a first failure is an
            self.shared_failures.labels(reason)  # increase a dashboard's increase() sees, not a new series at 1
        self.circuit_state = Gauge(
            "gateway_upstream_circuit_state",
            "The upstream's circuit breaker: 0 closed, 1 half-open (probing), 2 open (failing fast).",
            ["upstream"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.circuit_opened = Counter(
            "gateway_upstream_circuit_opened_total",
            "Times the upstream's circuit breaker opened.",
            ["upstream"],
            registry=registry,
        )
        self.paced = Counter(
            "gateway_upstream_paced_total",
            "Calls held back by the outbound request budget: waited for a slot, or rejected (wait too long).",
            ["upstream", "outcome"],
            registry=registry,
        )
        # response cache (gateway.cache)
        self.cache_requests = FastCounter(
            "gateway_cache_requests_total",
            "Requests to caching routes by result: hit, miss, stale (served for a failing upstream), bypass.",
            ["route", "result"],
            registry=registry,
        )
        self.cache_coalesced = Counter(
            "gateway_cache_coalesced_total",
            "Misses that waited for another request's upstream fetch of the same key instead of making their own.",
            ["route"],
            registry=registry,
        )
        self.collection_restarts = Counter(
            "gateway_collection_restarts_total",
            "all=true walks started again from the first page because the list moved under them"
            " (each restart reads the pages so far again).",
            ["route"],
            registry=registry,
        )
        self.cache_invalidations = Counter(
            "gateway_cache_invalidations_total",
            "Cache invalidations by cause: a write through the route, or an admin purge.",
            ["route", "cause"],
            registry=registry,
        )
        self.cache_entries = Gauge(
            "gateway_cache_entries",
            "Responses held by the in-process (memory) cache backend.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.buffered_bytes = Gauge(
            "gateway_upstream_buffered_bytes",
            "Upstream answer bytes held in memory (the fullest worker's); capped by server.max_buffered_bytes.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.cache_bytes = Gauge(
            "gateway_cache_bytes",
            "Bytes held by the in-process (memory) cache backend; bounded by cache.max_bytes.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.cache_backend_errors = Counter(
            "gateway_cache_backend_errors_total",
            "Cache backend (Redis) failures by operation; the request then goes to the upstream.",
            ["backend", "op"],
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
            "1 while the route works, 0 once it broke (live traffic and probes); NaN until known"
            " (with --workers, also once a reload removed the route: its series cannot be dropped there).",
            ["route"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        # route health, probes and credentials (gateway.health, gateway.probes, gateway.expiry)
        self.route_changed = Gauge(
            "gateway_route_last_change_timestamp_seconds",
            "When the route last went up or down (since when it is in its current state).",
            ["route"],
            multiprocess_mode="max",
            registry=registry,
        )
        self.route_failure = Gauge(
            "gateway_route_failure_info",
            "1 for the error code that broke a down route (absent while it is up); one code per route,"
            " with --workers the one set most recently (gateway.route_series).",
            ["route", "code"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.probe_runs = Counter(
            "gateway_probe_runs_total",
            "Contract probes run, by result: ok, broken, or skipped (no sample from the route it depends on).",
            ["route", "result"],
            registry=registry,
        )
        self.probe_seconds = Histogram(
            "gateway_probe_duration_seconds",
            "How long one contract probe took.",
            ["route"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.probe_last_success = Gauge(
            "gateway_probe_last_success_timestamp_seconds",
            "When the route's probe last passed.",
            ["route"],
            multiprocess_mode="max",
            registry=registry,
        )
        self.probe_round = Gauge(
            "gateway_probe_last_round_timestamp_seconds",
            "When the background prober last finished a round (0: never).",
            multiprocess_mode="max",
            registry=registry,
        )
        self.probe_interval = Gauge(
            "gateway_probe_interval_seconds",
            "The background prober's configured interval (0 while it is not running).",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.probes_configured = Gauge(
            "gateway_probes_configured",
            "Routes with a contract probe in the served config.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.credential_valid = Gauge(
            "gateway_upstream_credential_valid",
            "1 while the upstream's session check (auth.check) finds the credential signed in, 0 once it"
            " finds it signed out; absent until checked.",
            ["upstream", "credential"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.config_failed = Gauge(
            "gateway_config_last_reload_failure_timestamp_seconds",
            "When a reload last failed (0: never); newer than the last success means the file on disk is invalid.",
            multiprocess_mode="max",
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
            multiprocess_mode="max",
            registry=registry,
        )
        # the alerts on a counter's increase also fire for a child that appeared within their window (a
        # child appears at its first count, already above zero); a Prometheus without history of a
        # gateway that started long before cannot tell an old child from a new one, and this says which
        self.started = Gauge(
            "gateway_start_time_seconds",
            "When the gateway started (with --workers, the first worker): its counters count from then.",
            multiprocess_mode="min",
            registry=registry,
        )
        self.started.set(time.time())
        # admission control (gateway.limits)
        self.limited = Counter(
            "gateway_requests_limited_total",
            "Requests answered 429 before forwarding, by reason: rate_limit (per key) or concurrency (global cap).",
            ["reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "Stable requests being served now (what server.max_concurrency caps); counted where a limit is configured.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        #: (route, method, status) -> its request counter and latency histogram children (``answered``)
        self._answered: dict[tuple[str, str, int], tuple[CounterChild, HistogramChild]] = {}

    def answered(self, route: str, method: str, status: int) -> tuple[CounterChild, HistogramChild]:
        """The children an answered request counts in, found with one lookup instead of two label
        lookups and a status class per request.  Bounded: a client inventing methods fills it, and
        then it starts over."""
        key = (route, method, status)
        pair = self._answered.get(key)
        if pair is None:
            counted = self.requests.labels(route, method, status_class(status))
            pair = (counted, self.request_seconds.labels(route, method))
            if len(self._answered) >= _ANSWERED_KEPT:
                self._answered.clear()
            self._answered[key] = pair
        return pair


#: (route, method, status) triples whose children ``Metrics.answered`` keeps at hand
_ANSWERED_KEPT = 1024
