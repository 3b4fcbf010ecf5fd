"""The response cache in the request flow: lookup, one coalesced fill, stale-if-error, invalidation.

The cache sits between request mapping and the upstream client and stores the
finished *stable* response, so an ``all=true`` aggregation is stored as the single
response one fetch run built, never assembled from pages cached at different times,
and every query of a collection (pages, cursors, ``all=true``) shares one path for
invalidation.  N concurrent misses of one key share one upstream fetch (a task the
waiters shield, so a disconnecting caller does not cancel it for the others); a
failing fetch falls back to the last good copy within the route's stale window.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from multidict import CIMultiDict, MultiMapping

from gateway.auth import Credentials
from gateway.cache.policy import (
    NO_CREDENTIAL,
    CacheKey,
    canonical_path,
    client_directives,
    credential_id,
    fingerprint,
    make_key,
    normalize_prefix,
    purge_markers,
    read_markers,
    upstream_verdict,
    write_markers,
)
from gateway.cache.store import Backend, CacheUnavailable, Entry, Found, MemoryBackend
from gateway.config import Config, Route, RouteCache
from gateway.errors import GatewayError, NotFound, UpstreamError
from gateway.metrics import Metrics
from gateway.pipeline.conventions import etag_of
from gateway.routing import Match
from gateway.trace import RequestTrace

#: the upstream response headers a fill saw (read for Cache-Control/Expires), handed to it explicitly
Notes = list[MultiMapping[str]]
#: produces the answer a fill stores; the proxy adds each upstream answer's headers to the notes.  The flag
#: says whether other requests may wait on the answer (a coalesced fill): only then does it outlive its
#: caller leaving; a fill for one caller alone (no-store, no-cache, nothing to key on) stops with it
Produce = Callable[[Notes, bool], Awaitable[web.StreamResponse]]

#: failures where the last good copy stands in; a rejected or missing credential is not one of them, nor a
#: credential refused this call (403, gateway.proxy.status: what it may no longer read is not served), nor a
#: list that moved under a walk (an old page read from another list cannot continue the client's)
_NO_STALE_KINDS = frozenset({"credentials", "credentials_rejected", "forbidden", "shifted"})
#: response headers that belong to one exchange, not to the stored representation
_NOT_STORED = frozenset(
    {"content-length", "transfer-encoding", "connection", "date", "server", "x-request-id", "x-cache", "age", "warning"}
)
#: raw requests whose cache key is remembered (per loaded config; the memo starts over when full)
_REMEMBERED_KEYS = 4096
#: ... and only short ones: URLs and vary headers are the caller's, and memory must stay bounded
_REMEMBERED_KEY_BYTES = 512
#: markers outlive the longest entry they can invalidate by this margin (Redis)
_MARKER_MARGIN = 60.0


#: noted by ``forbid_store``: the answer is served but not stored (compared by identity)
_NO_STORE: MultiMapping[str] = CIMultiDict()


def forbid_store(notes: Notes | None) -> None:
    """The answer being produced must not be stored (an empty list while the session is unknown:
    gateway.session); a no-op outside a cache fill (``notes`` None)."""
    if notes is not None:
        notes.append(_NO_STORE)


def _consume(task: asyncio.Task[Entry]) -> None:
    """A fill whose every waiter went away still must not log 'exception never retrieved'."""
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True, slots=True)
class _Policy:
    spec: RouteCache
    fingerprint: str
    #: the canonical path of a route without path parameters (the same for every request)
    static_path: str | None = None


class Hub(Protocol):
    """What a config's cache reads of the process-wide one (gateway.cache.backends.CacheBackends)."""

    metrics: Metrics
    credentials: Credentials
    clock: Callable[[], float]


class ResponseCache:
    """The cache for the routes of one loaded config; the backend outlives reloads."""

    def __init__(self, config: Config, backend: Backend, hub: Hub) -> None:
        self.config = config
        self.backend = backend
        self._hub = hub
        self._metrics = hub.metrics
        self._policies = {
            r.name: _Policy(
                r.cache,
                fingerprint(r, config.upstreams[r.upstream]),
                None if any(s.is_single_param for s in r.path.segments) else canonical_path(r, {}),
            )
            for r in config.routes
            if r.cache is not None and r.method == "GET"
        }
        lifetimes = [p.spec.ttl + p.spec.stale_if_error for p in self._policies.values()]
        self._keep_markers = max(lifetimes, default=0.0) + _MARKER_MARGIN
        self._inflight: dict[str, asyncio.Task[Entry]] = {}
        self._keys: dict[tuple[object, ...], CacheKey] = {}
        #: the memory backend answers without a coroutine
        self._peek = backend.lookup_now if isinstance(backend, MemoryBackend) else None

    def now(self) -> float:
        return self._hub.clock()

    def caches(self, route: Route) -> bool:
        return route.name in self._policies

    # ------------------------------------------------------------------ reads

    async def serve(
        self,
        request: web.Request,
        match: Match,
        client: str | None,
        produce: Produce,
        trace: RequestTrace | None = None,
    ) -> web.StreamResponse:
        """Answer a GET/HEAD of a caching route: HIT, MISS, STALE or BYPASS, always with ``Age``.

        ``client``: the calling client key's name, which answers are shared under (None: not shared);
        ``trace``: the request's record, told the verdict for the access line.
        """
        route = match.route
        policy = self._policies[route.name]
        identity = self._identity(client, route)
        if identity is None:
            # no identity to key on (or no credential: the proxy reports that) - never share
            return await produce([], False)
        key = self._key(request, match, policy, *identity)
        wants = client_directives(request.headers)
        if wants.no_store:
            resp = await produce([], False)
            self._count(route, "bypass", trace)
            resp.headers["X-Cache"] = "BYPASS"
            resp.headers["Age"] = "0"
            return resp
        markers = read_markers(route.name, key.path)
        found = self._peek(key, markers) if self._peek is not None else await self._lookup(key, markers)
        now = self.now()
        entry = self._usable(found, now)
        if entry is None and found is not None and found.entry is not None:
            with contextlib.suppress(CacheUnavailable):
                await self.backend.discard(key)  # written over, or past its stale window
        if (
            entry is not None
            and not wants.no_cache
            and now < entry.fresh_until
            and (wants.max_age is None or now - entry.stored_at <= wants.max_age)
        ):
            self._count(route, "hit", trace)
            return self._response(entry, "HIT", now)
        seq = found.seq if found is not None else None
        try:
            if wants.no_cache:  # the caller wants the upstream's answer: no sharing, but it refreshes the entry
                filled = await self._run_fill(key, policy.spec, seq, produce, shared=False)
            else:
                filled = await self._coalesced_fill(key, route, policy.spec, seq, produce)
        except UpstreamError as exc:
            now = self.now()
            if (
                entry is not None
                and not wants.no_cache
                and exc.kind not in _NO_STALE_KINDS
                and (wants.max_age is None or now - entry.stored_at <= wants.max_age)  # the caller's limit holds
            ):
                self._count(route, "stale", trace)
                if trace is not None:
                    trace.error = exc.code  # the access line says why the stale copy stood in
                return self._response(entry, "STALE", now)  # X-Cache: STALE says it (no obsolete Warning)
            raise
        except NotFound:
            if found is not None and found.entry is not None:  # gone upstream: not even a stale copy stays
                with contextlib.suppress(CacheUnavailable):
                    await self.backend.discard(key)
            raise
        state = "BYPASS" if wants.no_cache else "MISS"
        self._count(route, state.lower(), trace)
        return self._response(filled, state, self.now())

    def _identity(self, client: str | None, route: Route) -> tuple[str, str] | None:
        """(client key name, credential id) a cached answer is shared under; None: do not share."""
        if client is None:
            return None
        if not route.auth:
            return client, NO_CREDENTIAL
        try:
            auth = self._hub.credentials.headers_for(self.config.upstreams[route.upstream], route.name)
        except GatewayError:
            return None
        return client, credential_id(auth) if auth else NO_CREDENTIAL

    def _key(self, request: web.Request, match: Match, policy: _Policy, client: str, credential: str) -> CacheKey:
        """``make_key``, remembered per raw request (a hit must not pay for hashing and quoting)."""
        route = match.route
        path = policy.static_path or canonical_path(route, match.path_params)
        vary = tuple(request.headers.get(name, "") for name in policy.spec.vary) if policy.spec.vary else ()
        raw_query = request.rel_url.raw_query_string
        # a long URL or header is hashed each time (little next to reading it), so the memo stays small
        short = len(path) + len(raw_query) + sum(map(len, vary)) <= _REMEMBERED_KEY_BYTES
        seen = (route.name, path, raw_query, vary, client, credential)
        key = self._keys.get(seen) if short else None
        if key is None:
            key = make_key(
                route, policy.spec, policy.fingerprint, path, request.query.items(), request.headers, client, credential
            )
            if short:
                if len(self._keys) >= _REMEMBERED_KEYS:
                    self._keys.clear()
                self._keys[seen] = key
        return key

    async def _lookup(self, key: CacheKey, markers: Sequence[str]) -> Found | None:
        try:
            return await self.backend.lookup(key, markers)
        except CacheUnavailable:
            return None

    def _usable(self, found: Found | None, now: float) -> Entry | None:
        """The entry if it is still valid and within its stale window at ``now`` (anything else is to be dropped)."""
        if found is None or found.entry is None:
            return None
        entry = found.valid_entry
        if entry is None or now >= entry.stale_until:
            return None
        return entry

    async def _coalesced_fill(
        self, key: CacheKey, route: Route, spec: RouteCache, seq: int | None, produce: Produce
    ) -> Entry:
        # No local may name the task while its failure propagates: the error's traceback holds this
        # frame, and task -> error -> traceback -> frame -> task is a cycle that keeps the failed
        # fill's frames (the upstream body among them) until a full collection.
        task = self._inflight.get(key.text)
        if task is not None:
            self._metrics.cache_coalesced.labels(route.name).inc()
        else:
            task = asyncio.ensure_future(self._run_fill(key, spec, seq, produce, shared=True))
            self._inflight[key.text] = task
            task.add_done_callback(functools.partial(self._fill_done, key.text))
        try:
            return await asyncio.shield(task)
        finally:
            del task

    def _fill_done(self, text: str, task: asyncio.Task[Entry]) -> None:
        if self._inflight.get(text) is task:
            del self._inflight[text]
        _consume(task)

    async def _run_fill(
        self, key: CacheKey, spec: RouteCache, seq: int | None, produce: Produce, *, shared: bool
    ) -> Entry:
        notes: Notes = []
        resp = await produce(notes, shared)
        now = self.now()
        verdict = upstream_verdict(notes, now)
        fresh = spec.ttl if verdict.max_fresh is None else min(spec.ttl, verdict.max_fresh)
        entry = _entry_of(resp, now, fresh, spec.stale_if_error, seq or 0)
        lifetime = fresh + spec.stale_if_error
        storable = (
            seq is not None
            and not any(n is _NO_STORE for n in notes)
            and entry.status == 200
            and lifetime > 0
            and (verdict.shareable or spec.private)
            and entry.size(key) <= self.config.cache.max_entry_bytes
        )
        if storable:
            with contextlib.suppress(CacheUnavailable):
                await self.backend.store(key, entry, lifetime)
            self._report_usage()
        return entry

    def _response(self, entry: Entry, state: str, now: float) -> web.Response:
        """The stored answer; ``Date`` is when it was stored, ``Age`` how long ago (RFC 9111 4.2.3)."""
        if not entry.head:  # the stored headers and Date, made once per entry (in the order they always had)
            head = CIMultiDict(entry.headers)
            head["X-Cache"] = head["Age"] = ""
            head["Date"] = _http_date(int(entry.stored_at))
            entry.head.append(head)
        resp = web.Response(status=entry.status, body=entry.body, headers=entry.head[0])
        headers = resp.headers
        headers["X-Cache"] = state
        headers["Age"] = str(int(max(0.0, now - entry.stored_at)))
        return resp

    def _count(self, route: Route, result: str, trace: RequestTrace | None) -> None:
        m = self._metrics
        m.cache_requests.labels(route.name, result).inc()
        if trace is not None:
            trace.cache = result  # for the request's access-log line

    def _report_usage(self) -> None:
        usage = self.backend.usage()
        if usage is not None:
            self._metrics.cache_entries.set(usage[0])
            self._metrics.cache_bytes.set(usage[1])

    # ------------------------------------------------------------------ writes and purges

    async def invalidate_write(self, route: Route, path_params: dict[str, str]) -> None:
        """After a write was sent: drop the entity (and below) and its collection, plus ``invalidates``."""
        path = canonical_path(route, path_params)
        extra = route.cache.invalidates if route.cache is not None else ()
        await self.backend.invalidate(write_markers(route.method, path, extra), self._keep_markers)
        self._metrics.cache_invalidations.labels(route.name, "write").inc()

    async def purge(self, route: str | None, prefix: str | None) -> int:
        """Drop entries by route and/or stable path prefix (whole segments); all when neither.

        Raises CacheUnavailable when the backend cannot be reached.
        """
        markers = purge_markers(route, prefix)
        await self.backend.invalidate(markers, self._keep_markers)
        deleted = await self.backend.purge(route, normalize_prefix(prefix) if prefix is not None else None)
        label = route if route is not None else ("(prefix)" if prefix is not None else "(all)")
        self._metrics.cache_invalidations.labels(label, "purge").inc()
        self._report_usage()
        return deleted


@functools.lru_cache(maxsize=256)
def _http_date(at: int) -> str:
    """An IMF-fixdate; entries are stored a second apart or more, so hits reuse the text."""
    return email.utils.formatdate(at, usegmt=True)


def _entry_of(resp: web.StreamResponse, now: float, fresh: float, stale: float, seq: int) -> Entry:
    if not isinstance(resp, web.Response) or not isinstance(resp.body, bytes | bytearray | None):
        raise TypeError("a caching route must produce a web.Response with a bytes body")
    headers = tuple((k, v) for k, v in resp.headers.items() if k.lower() not in _NOT_STORED)
    body = bytes(resp.body or b"")
    if resp.status == 200 and "ETag" not in resp.headers:
        headers = (*headers, ("ETag", etag_of(body)))  # hashed once per fill, not once per hit
    return Entry(resp.status, headers, body, now, now + fresh, now + fresh + stale, seq)
