"""The gateway's state: the current ``Runtime`` (swapped whole on reload) and the process-wide ``Gateway``.

A request takes the runtime once, at its start, and keeps it to the end: a reload never
changes the config under an in-flight request.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway import httpedge
from gateway.access import Access
from gateway.auth import Credentials
from gateway.cache import CacheBackends
from gateway.config import Config, ConfigError, Problem, load_config, parse_config
from gateway.edge import HostGuard
from gateway.expiry import ExpiryCollector
from gateway.health import RouteHealth
from gateway.limits import Limits
from gateway.metrics import Metrics
from gateway.openapi import DocumentCache
from gateway.peers import Peers
from gateway.probe_lease import Leases, instance_id
from gateway.probes import Prober
from gateway.proxy import Proxy
from gateway.redact import Redactor, secret_values
from gateway.routing import Router
from gateway.session import SessionChecks
from gateway.shared import SharedState
from gateway.upstream import UpstreamClient
from gateway.verdict import GoneCheck

log = logging.getLogger("gateway")
#: a reload's outcome, on the file watcher's logger: the demo shows it above its quieter level
reload_log = logging.getLogger("gateway.reload")


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything built from one config; swapped whole on reload."""

    config: Config
    router: Router
    proxy: Proxy
    access: Access
    #: the Host allow-list and the cross-origin write check (gateway.edge)
    edge: HostGuard


class Gateway:
    """Process-wide state: the current runtime, the client pool, credentials, metrics."""

    def __init__(
        self,
        config: Config,
        *,
        registry: CollectorRegistry | None = None,
        env: Mapping[str, str] | None = None,
        host: str | None = None,
    ) -> None:
        #: the address served (``gateway serve --host``); None: a loopback test server
        self.host = host
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.client = UpstreamClient(self.metrics)
        #: where ${VAR}s and secrets are read (os.environ unless a test gives its own)
        self.env = env
        self.credentials = Credentials(env)
        #: the one redactor for upstream-derived error text (``gateway serve`` gives its logs the same secrets)
        self.redactor = Redactor(lambda: secret_values(self.runtime.config, self.credentials))
        #: requests the HTTP parser refuses: logged briefly and rate-limited (stands in for aiohttp.server)
        self.rejects = httpedge.RejectLog()
        #: route health and probe results outlive reloads; credential expiry is read at each scrape
        self.health = RouteHealth(self.metrics)
        #: the upstreams' session checks (auth.check): memo and credential metric outlive reloads
        self.sessions = SessionChecks(self.client, self.credentials, self.metrics)
        self.prober = Prober(
            lambda: (self.runtime.config, self.runtime.proxy),
            self.health,
            self.metrics,
            sessions=self.sessions,
            leases=Leases(self.credentials, instance_id()),  # probes once per deployment (cache's Redis)
        )
        #: a 404 for an id is checked against the route's probe sample (gone entity or gone route?)
        self.gone_check = GoneCheck(self.prober.sample_for)
        #: whether the background prober runs (``build_app(probes=True)``, ``gateway serve``)
        self.probing = False
        self.registry.register(ExpiryCollector(lambda: self.runtime.config, self.credentials))
        #: rate-limit buckets and the in-flight count outlive reloads
        self.limits = Limits(self.metrics)
        #: budgets, client limits, hold-offs and breakers shared through the cache's Redis
        self.shared = SharedState(self._shared_changed, self._shared_failed)
        self.client.resilience.shared = self.limits.shared = self.shared
        #: set when serving a non-loopback address: a reload may not drop every client key
        self.requires_client_keys: str | None = None
        self.openapi = DocumentCache()
        #: the response cache's backend (memory or Redis) outlives reloads that keep its settings
        self.caches = CacheBackends(self.credentials, self.metrics)
        #: the other workers of ``gateway serve --workers N``, which admin calls are relayed to
        self.peers: Peers | None = None
        #: when the last reload was refused, and why: the routes file on disk is not what is served
        #: (shown on /status until a reload succeeds)
        self.refused: tuple[float, ConfigError] | None = None
        self.runtime = self._build(config)
        self.metrics.reloads.labels("success").inc()

    def _build(self, config: Config) -> Runtime:
        self.metrics.config_info.info({"digest": config.digest, "path": config.path})
        self.metrics.config_loaded.set_to_current_time()
        self.health.track(r.name for r in config.routes)  # NaN until known; a removed route's series go
        self.metrics.probes_configured.set(sum(1 for r in config.routes if r.probe is not None))
        self.client.resilience.register(config.upstreams.values())  # and every circuit breaker
        self.client.buffers.limit = config.server.max_buffered_bytes
        self.limits.configure(config)
        self.shared.configure(config, self.credentials.resolve)
        access = Access(config.access, self.credentials)
        for problem in access.without_value():  # a lockout must not be a mystery (a 401 says nothing more)
            log.error("%s: %s", config.path, problem)
        return Runtime(
            config,
            Router(config.routes),
            Proxy(
                config,
                self.client,
                self.credentials,
                self.metrics,
                health=self.health,
                cache=self.caches.for_config(config),
                sessions=self.sessions,
                gone_check=self.gone_check,
                redactor=self.redactor,
                access=access,
                limits=self.limits,
            ),
            access,
            HostGuard(config.server.allowed_hosts, self.host),
        )

    def reload(self, path: str | Path | None = None, *, text: str | None = None) -> Config:
        """Load and validate the file (or its already-read ``text``) completely; only then swap.

        Raises ConfigError, counted and logged; the old config keeps serving.
        """
        target = path or self.runtime.config.path
        try:
            config = load_config(target, env=self.env) if text is None else parse_config(text, str(target), self.env)
            if self.requires_client_keys and not config.access.clients:
                raise ConfigError(
                    [Problem(str(target), 0, "clients.keys", f"no client keys, but {self.requires_client_keys}")]
                )
        except ConfigError as exc:
            self.refused = (time.time(), exc)
            self.metrics.reloads.labels("failure").inc()
            self.metrics.config_failed.set_to_current_time()
            reload_log.error("config reload failed, still serving %s: %s", self.runtime.config.digest, exc)
            raise
        self.runtime = self._build(config)
        self.refused = None
        self.metrics.reloads.labels("success").inc()
        if self.peers is not None:
            self.peers.remember(config)  # what a replacement worker serves if the file breaks later
        self.prober.wake()  # confirm at once what the new config fixed (or broke)
        reload_log.info("config reloaded from %s (%s, %d routes)", target, config.digest, len(config.routes))
        return config

    def _shared_changed(self, up: bool, instances: int) -> None:
        self.metrics.shared_up.set((1.0 if up else 0.0) if self.shared.configured else math.nan)
        self.metrics.shared_instances.set(instances)
        self.client.resilience.follow_shared()  # a breaker another process opened (or closed) shows in the gauge

    def _shared_failed(self, reason: str) -> None:
        self.metrics.shared_failures.labels(reason).inc()

    async def close(self) -> None:
        await self.shared.close()
        await self.client.close()
        await self.caches.close()


GATEWAY = web.AppKey("gateway", Gateway)
