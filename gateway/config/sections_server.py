"""Section parsers for ``server:``, ``cache:`` and ``upstreams:`` (secrets, auth, resilience)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from yarl import URL

from gateway.config.hosts import host_name, ip_of
from gateway.config.model import CacheSettings, RouteCache, ServerSettings
from gateway.config.model_upstream import (
    AuthSpec,
    BreakerPolicy,
    ExpirySpec,
    RequestBudget,
    RetryPolicy,
    Secret,
    SecretSource,
    SessionCheck,
    Timeouts,
    Upstream,
)
from gateway.config.node import _closest, _Node
from gateway.config.schema import fields_of, validate
from gateway.config.spec_route import RouteReadCacheSpec, RouteWriteCacheSpec
from gateway.config.spec_server import CacheSpec, RedisSpec, ServerSpec
from gateway.config.spec_types import SecretSourceSpec
from gateway.config.spec_upstream import AuthSpec as AuthSectionSpec
from gateway.config.spec_upstream import ExpirySpec as ExpirySectionSpec
from gateway.config.spec_upstream import SessionCheckSpec, UpstreamSpec
from gateway.config.values import _HEADER_NAME, _NAME


def _cache_settings(node: _Node | None) -> CacheSettings:
    """The root ``cache:`` section; the memory backend when it is absent."""
    if node is None:
        return CacheSettings()
    # redis: read on its own, as its use spans keys; the other keys' good ones still say which backend
    spec = validate(node, CacheSpec, hand={"redis"}, partial=True)
    if spec is None or not isinstance(node.value, dict):
        return CacheSettings()
    kw: dict[str, Any] = {"enabled": spec.enabled, "backend": spec.backend, "max_bytes": spec.max_bytes}
    # one entry can never exceed the whole cache
    kw["max_entry_bytes"] = min(spec.max_entry_bytes, spec.max_bytes)
    # a wrong backend is told at its key: then no backend is assumed for redis
    backend = spec.backend if "backend" in spec.model_fields_set or "backend" not in node.value else None
    rn = node.get("redis")
    if backend in ("redis", "auto") and rn is None:
        node.error(f"backend '{backend}' needs redis: {{url: {{env: VAR}}}}")
    if rn is not None:
        if backend == "memory":
            rn.error("'redis' settings are only read with backend: redis")
        elif (redis := validate(rn, RedisSpec)) is not None:
            kw["redis_url"] = secret_of(redis.url)
            for key, attr in (
                ("prefix", "redis_prefix"),
                ("timeout", "redis_timeout"),
                ("retry_after", "redis_retry_after"),
            ):
                if (value := getattr(redis, key)) is not None:
                    kw[attr] = value
    return CacheSettings(**kw)


def _route_cache(node: _Node | None, method: str | None, root: _Node) -> RouteCache | None:
    """A route's ``cache:``: freshness for reads, what else to drop for writes; ``false`` is off.

    Keys and types by its pydantic model, the read or the write one as the method is; here what spans
    keys: a freshness longer than 0s, header names, and ``invalidates`` naming declared routes."""
    if node is None or node.value is False or method is None:  # no method: reported at `stable`, not here too
        return None
    reads = method in ("GET", "HEAD")
    spec: RouteReadCacheSpec | RouteWriteCacheSpec | None
    spec = (
        validate(node, RouteReadCacheSpec, partial=True) if reads else validate(node, RouteWriteCacheSpec, partial=True)
    )
    if not reads and isinstance(node.value, dict) and set(node.value) & {"ttl", "stale_if_error"}:
        node.error(f"{method} responses are never cached; a write route only lists what it 'invalidates'")
    if spec is None:
        return None
    kw: dict[str, Any] = {}
    if isinstance(spec, RouteWriteCacheSpec):
        if spec.invalidates is not None:
            _invalidates(node.child("invalidates"), spec.invalidates, root)
            kw["invalidates"] = tuple(spec.invalidates)
        return RouteCache(**kw)
    for key in ("ttl", "stale_if_error"):
        if (value := getattr(spec, key)) is not None:
            kw[key] = value
    # a freshness the model refused, or an unknown key (a misspelt one?), is reported already
    unknown = set(node.value) - fields_of(RouteReadCacheSpec)
    wrong = {k for k in ("ttl", "stale_if_error") if k in node.value and k not in kw} | unknown
    if not wrong and not kw.get("ttl") and not kw.get("stale_if_error"):
        node.error("give a ttl (and/or stale_if_error) longer than 0s, or write cache: false")
    if spec.vary is not None:
        if not all(_HEADER_NAME.match(h) for h in spec.vary):
            node.child("vary").error("expected a list of request header names")
        else:
            kw["vary"] = tuple(sorted({h.lower() for h in spec.vary}))
    if spec.private is not None:
        kw["private"] = spec.private
    return RouteCache(**kw)


def _invalidates(node: _Node, names: list[str], root: _Node) -> None:
    """The routes a write makes stale must be routes of this file."""
    routes_node = root.get("routes")
    declared = set(routes_node.value) if routes_node is not None and isinstance(routes_node.value, dict) else set()
    for name in names:
        if name not in declared:
            hint = _closest(name, declared)
            node.error(f"no route named {name!r}" + (f" (did you mean {hint!r}?)" if hint else ""))


def _check_buffer_cap(root: _Node, server: ServerSettings, upstreams: Mapping[str, Upstream]) -> None:
    """An answer larger than the cap on all buffered answers could never be served."""
    for name, up in upstreams.items():
        if up.max_response_bytes > server.max_buffered_bytes:
            ups = root.get("upstreams")
            un = ups.get(name) if ups is not None else None
            at = un.get("max_response_bytes") if un is not None else None
            if at is None:
                at = root.get("server")
            if at is None:
                at = root
            at.error(
                f"upstream {name!r} allows answers of {up.max_response_bytes} bytes, more than "
                f"server.max_buffered_bytes ({server.max_buffered_bytes}): lower one or raise the other"
            )


def _server(node: _Node | None) -> ServerSettings:
    if node is None:
        return ServerSettings()
    kw: dict[str, Any] = {}
    spec = validate(node, ServerSpec)  # cursor_key too: a secret's mistakes never echo what was written
    if spec is None:
        return ServerSettings()
    if spec.cursor_key is not None:
        kw["cursor_key"] = secret_of(spec.cursor_key)
    for key in ("max_body_bytes", "max_concurrency", "max_connections", "max_connections_per_ip", "max_buffered_bytes"):
        if (value := getattr(spec, key)) is not None:
            kw[key] = value
    if spec.allowed_hosts is not None:
        kw["allowed_hosts"] = tuple(_host_entry(h) for h in spec.allowed_hosts)
    if (ct := spec.client_timeouts) is not None:
        kw["header_timeout"], kw["body_timeout"] = ct.headers, ct.body
    return ServerSettings(**kw)


def secret_of(spec: SecretSourceSpec | list[SecretSourceSpec]) -> Secret:
    """A validated secret: one source or a list of alternatives, tried in order at request time."""
    sources: list[SecretSource] = []
    for src in spec if isinstance(spec, list) else [spec]:
        if src.env is not None:
            sources.append(SecretSource("env", src.env, hint=src.env))
        elif src.file is not None:
            sources.append(SecretSource("file", src.file, src.json_key, hint=f"the file {src.file}"))
        elif src.file_env is not None:
            sources.append(SecretSource("file_env", src.file_env, src.json_key, hint=src.file_env))
    return Secret(tuple(sources))


def _upstream(name: str, node: _Node) -> Upstream | None:
    """An upstream: its keys and types by its pydantic model (the base URL, limits, timeouts, retries,
    breaker, budget); ``auth:`` on its own (see :func:`_auth`); header names, as keys, by hand."""
    if not _NAME.match(name):
        node.error("upstream names use letters, digits, '_', '-' and '.'")
    spec = validate(node, UpstreamSpec, hand={"auth"}, partial=True)
    headers = node.get("headers")
    for hk, hn in headers.items() if headers is not None else ():
        if not _HEADER_NAME.match(hk):
            hn.error(f"{hk!r} is not a valid header name")
    auth = _auth(node.get("auth"))
    if spec is None:  # a wrong base_url included: the others are reported already
        return None
    ts, retries, breaker, budget = spec.timeouts, spec.retries, spec.circuit_breaker, spec.request_budget
    return Upstream(
        name=name,
        base_url=URL(spec.base_url),
        timeouts=Timeouts(**ts.model_dump()) if ts is not None else Timeouts(),
        headers=tuple((spec.headers or {}).items()),
        auth=auth,
        max_connections=_or(spec.max_connections, 100),
        concurrency=_or(spec.concurrency, 4),
        # the largest answer of the shipped routes is far smaller; see docs/security-memory.md
        max_response_bytes=_or(spec.max_response_bytes, 16 << 20),
        max_redirects=_or(spec.max_redirects, 5),
        retries=RetryPolicy(**retries.model_dump()) if retries is not None else RetryPolicy(),
        breaker=BreakerPolicy(**breaker.model_dump()) if breaker is not None else BreakerPolicy(),
        budget=RequestBudget(tuple(budget.limits), budget.max_wait) if budget is not None else RequestBudget(),
    )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _auth(node: _Node | None) -> AuthSpec | None:
    """``auth:``: keys, types and secrets by its pydantic model (no message echoes what was written);
    here what spans keys: header names, the credential an expiry or a session check names."""
    if node is None or node.value is None:
        return None
    # expiry and check are read on their own, so that the credential each names is checked even
    # where another of its keys is wrong: every problem is listed at once
    spec = validate(node, AuthSectionSpec, hand={"expiry", "check"}, partial=True)
    expiry = validate(e, ExpirySectionSpec, partial=True) if (e := node.get("expiry")) is not None else None
    check = validate(c, SessionCheckSpec, partial=True) if (c := node.get("check")) is not None else None
    if isinstance(node.value, dict):
        if "bearer" in node.value and node.value["bearer"] is None:  # a credential left out by mistake
            node.child("bearer").error(_NO_SECRET)
        for name, hn in node.child("headers").items() if isinstance(node.value.get("headers"), dict) else ():
            if not _HEADER_NAME.match(name):
                hn.error(f"{name!r} is not a valid header name")
    if spec is None:
        return None
    auth = AuthSpec(
        secret_of(spec.bearer) if spec.bearer is not None else None,
        tuple((k, secret_of(v)) for k, v in (spec.cookies or {}).items()),
        tuple((k, secret_of(v)) for k, v in (spec.headers or {}).items()),
        _expiry(expiry, node.child("expiry"), node) if expiry is not None else None,
    )
    return replace(auth, check=_session_check(check, node.child("check"), auth)) if check is not None else auth


#: what a credential written as null is told (the same as a secret of the wrong kind)
_NO_SECRET = "expected {env: VAR}, {file: PATH} or {file_env: VAR}; secrets are never written in routes.yaml"


def _expiry(spec: ExpirySectionSpec, node: _Node, auth: _Node) -> ExpirySpec | None:
    """``expiry: {cookie: I, segment: 0, field: expiration, unit: ms}`` (or ``bearer: true``, ``header: X``):
    the credential it names must be one the upstream sends."""
    credential = "bearer"
    if spec.bearer:
        if "bearer" not in auth.value:
            node.child("bearer").error("this upstream has no bearer credential")
    else:
        which, name = ("cookie", spec.cookie) if spec.cookie is not None else ("header", spec.header)
        declared = auth.value.get(f"{which}s")
        if name not in (declared if isinstance(declared, dict) else {}):
            node.child(which).error(f"no {which} named {name!r} under auth.{which}s")
        credential = f"{which}:{name}"
    kw: dict[str, Any] = {"credential": credential, "field": spec.field}
    if spec.segment is not None:
        kw["segment"] = spec.segment
    if spec.unit is not None:
        kw["unit"] = spec.unit
    return ExpirySpec(**kw)


def _session_check(spec: SessionCheckSpec, node: _Node, auth: AuthSpec) -> SessionCheck | None:
    """``check: {request: GET /user, expect: login, memo: 5s}`` (see gateway.session): it checks the
    expiry's credential, else the first the upstream sends."""
    names = ["bearer"] if auth.bearer else []
    names += [f"cookie:{name}" for name, _ in auth.cookies] + [f"header:{name}" for name, _ in auth.headers]
    credential = auth.expiry.credential if auth.expiry is not None else (names[0] if names else None)
    if credential is None:
        node.error("a session check needs a credential to check: this upstream's auth declares none")
        return None
    memo = spec.memo if spec.memo is not None else 5.0
    return SessionCheck(spec.request.split()[1], tuple(spec.expect.split(".")), credential, memo)


def _host_entry(entry: str) -> str:
    """As gateway.edge reads a Host (``host_name``), an address in its one written form."""
    name = host_name(entry)
    ip = ip_of(name)
    return name if ip is None else str(ip)
