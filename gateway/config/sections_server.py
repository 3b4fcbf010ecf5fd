"""Section parsers for ``server:``, ``cache:`` and ``upstreams:`` (secrets, auth, resilience)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from yarl import URL

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
from gateway.config.schema import fields_of, required_of, validate
from gateway.config.spec_route import RouteCacheSpec
from gateway.config.spec_types import SecretSourceSpec, SecretSpec
from gateway.config.spec_upstream import AuthSpec as AuthSectionSpec
from gateway.config.spec_upstream import (
    BreakerSpec,
    CacheSpec,
    RedisSpec,
    RequestBudgetSpec,
    RetriesSpec,
    ServerSpec,
    SessionCheckSpec,
    TimeoutsSpec,
    UpstreamSpec,
)
from gateway.config.spec_upstream import ExpirySpec as ExpirySectionSpec
from gateway.config.values import _HEADER_NAME, _NAME, parse_duration, parse_size


def _cache_settings(node: _Node | None) -> CacheSettings:
    """The root ``cache:`` section; the memory backend when it is absent."""
    if node is None:
        return CacheSettings()
    spec = validate(node, CacheSpec, hand={"redis"})  # redis: a secret, and checks that span keys
    if not isinstance(node.value, dict):
        return CacheSettings()
    kw: dict[str, Any] = {}
    if spec is not None:
        kw = {"enabled": spec.enabled, "backend": spec.backend, "max_bytes": spec.max_bytes}
        # one entry can never exceed the whole cache
        kw["max_entry_bytes"] = min(spec.max_entry_bytes, spec.max_bytes)
    backend = node.value.get("backend", "memory")
    rn = node.get("redis")
    if backend in ("redis", "auto") and rn is None:
        node.error(f"backend '{backend}' needs redis: {{url: {{env: VAR}}}}")
    if rn is not None:
        if backend == "memory":
            rn.error("'redis' settings are only read with backend: redis")
        elif rn.keys(fields_of(RedisSpec), required_of(RedisSpec)):
            kw["redis_url"] = _secret(rn.child("url"))
            if (pn := rn.get("prefix")) is not None and (prefix := pn.string()) is not None:
                if not _NAME.match(prefix):
                    pn.error("the key prefix uses letters, digits, '_', '-' and '.'")
                kw["redis_prefix"] = prefix
            for key, attr in (("timeout", "redis_timeout"), ("retry_after", "redis_retry_after")):
                if (dn := rn.get(key)) is not None and (d := dn.convert(parse_duration)) is not None:
                    if d <= 0:
                        dn.error("must be longer than 0s")
                    kw[attr] = d
    return CacheSettings(**kw)


def _route_cache(node: _Node | None, method: str | None, root: _Node) -> RouteCache | None:
    """A route's ``cache:``: freshness for reads, what else to drop for writes; ``false`` is off.

    Keys and types by its pydantic model; here what spans keys: which keys reads and writes take,
    a freshness longer than 0s, header names, and ``invalidates`` naming declared routes."""
    if node is None or node.value is False or method is None:  # no method: reported at `stable`, not here too
        return None
    reads = method in ("GET", "HEAD")
    if not node.keys(fields_of(RouteCacheSpec) - {"invalidates"} if reads else {"invalidates"}):
        if not reads and isinstance(node.value, dict) and set(node.value) & {"ttl", "stale_if_error"}:
            node.error(f"{method} responses are never cached; a write route only lists what it 'invalidates'")
        return None
    spec = validate(node, RouteCacheSpec, partial=True)
    if spec is None:
        return None
    kw: dict[str, Any] = {}
    for key in ("ttl", "stale_if_error"):
        if (value := getattr(spec, key)) is not None:
            kw[key] = value
    wrong = {k for k in ("ttl", "stale_if_error") if k in node.value and k not in kw}  # reported at the key
    if reads and not wrong and not kw.get("ttl") and not kw.get("stale_if_error"):
        node.error("give a ttl (and/or stale_if_error) longer than 0s, or write cache: false")
    if spec.vary is not None:
        if not all(_HEADER_NAME.match(h) for h in spec.vary):
            node.child("vary").error("expected a list of request header names")
        else:
            kw["vary"] = tuple(sorted({h.lower() for h in spec.vary}))
    if spec.private is not None:
        kw["private"] = spec.private
    if spec.invalidates is not None:
        inv = node.child("invalidates")
        routes_node = root.get("routes")
        declared = set(routes_node.value) if routes_node is not None and isinstance(routes_node.value, dict) else set()
        for name in spec.invalidates:
            if name not in declared:
                hint = _closest(name, declared)
                inv.error(f"no route named {name!r}" + (f" (did you mean {hint!r}?)" if hint else ""))
        kw["invalidates"] = tuple(spec.invalidates)
    return RouteCache(**kw)


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
    if isinstance(node.value, dict) and (n := node.get("cursor_key")) is not None:
        kw["cursor_key"] = _secret(n)  # by hand: a secret's mistakes never echo what was written
    spec = validate(node, ServerSpec, hand={"cursor_key"})
    if spec is None:
        return ServerSettings(**kw)
    for key in ("max_body_bytes", "max_concurrency", "max_connections", "max_connections_per_ip", "max_buffered_bytes"):
        if (value := getattr(spec, key)) is not None:
            kw[key] = value
    if spec.allowed_hosts is not None:
        kw["allowed_hosts"] = tuple(h.strip().lower().rstrip(".") for h in spec.allowed_hosts)
    if (ct := spec.client_timeouts) is not None:
        kw["header_timeout"], kw["body_timeout"] = ct.headers, ct.body
    return ServerSettings(**kw)


def _secret(node: _Node) -> Secret | None:
    """One secret on its own: read by its model, whose messages never echo what was written."""
    spec = validate(node, SecretSpec)
    return secret_of(spec.root) if spec is not None else None


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
    if not _NAME.match(name):
        node.error("upstream names use letters, digits, '_', '-' and '.'")
    node.keys(fields_of(UpstreamSpec), required_of(UpstreamSpec))
    base_url: URL | None = None
    if (b := node.get("base_url")) is not None and (s := b.string("a URL")) is not None:
        try:
            base_url = URL(s)
        except ValueError as exc:
            b.error(f"not a URL: {exc}")
        else:
            if base_url.scheme not in ("http", "https") or not base_url.host:
                b.error(f"{s!r} is not an absolute http(s) URL")
                base_url = None
            elif base_url.query_string or base_url.fragment:
                b.error("base_url cannot carry a query or fragment (credentials never go in URLs)")
                base_url = None
    timeouts = Timeouts()
    if (t := node.get("timeouts")) is not None and (ts := validate(t, TimeoutsSpec)) is not None:
        timeouts = Timeouts(**ts.model_dump())
    headers: list[tuple[str, str]] = []
    if (h := node.get("headers")) is not None and h.is_map():
        for hk, hn in h.items():
            if not _HEADER_NAME.match(hk):
                hn.error(f"{hk!r} is not a valid header name")
            hv = hn.string("a header value")
            if hv is not None:
                if "\r" in hv or "\n" in hv:
                    hn.error("header values cannot contain line breaks")
                headers.append((hk, hv))
    auth = _auth(node.get("auth"))

    def intval(key: str, default: int, lo: int, hi: int | None = None) -> int:
        n = node.get(key)
        v = n.integer(lo, hi) if n is not None else None
        return default if v is None else v

    max_resp = 16 << 20  # the largest answer of the shipped routes is far smaller; see docs/security-memory.md
    if (mr := node.get("max_response_bytes")) is not None:
        got = mr.convert(parse_size)
        max_resp = got if got is not None else max_resp
    retries = _retries(node.get("retries"))
    breaker = _breaker(node.get("circuit_breaker"))
    budget = _request_budget(node.get("request_budget"))
    if base_url is None:
        return None
    return Upstream(
        name=name,
        base_url=base_url,
        timeouts=timeouts,
        headers=tuple(headers),
        auth=auth,
        max_connections=intval("max_connections", 100, 1),
        concurrency=intval("concurrency", 4, 1, 64),
        max_response_bytes=max_resp,
        max_redirects=intval("max_redirects", 5, 0, 20),
        retries=retries,
        breaker=breaker,
        budget=budget,
    )


def _retries(node: _Node | None) -> RetryPolicy:
    spec = validate(node, RetriesSpec) if node is not None else None
    return RetryPolicy(**spec.model_dump()) if spec is not None else RetryPolicy()


def _breaker(node: _Node | None) -> BreakerPolicy:
    spec = validate(node, BreakerSpec) if node is not None else None
    return BreakerPolicy(**spec.model_dump()) if spec is not None else BreakerPolicy()


def _request_budget(node: _Node | None) -> RequestBudget:
    spec = validate(node, RequestBudgetSpec) if node is not None else None
    return RequestBudget(tuple(spec.limits), spec.max_wait) if spec is not None else RequestBudget()


def _auth(node: _Node | None) -> AuthSpec | None:
    if node is None or node.value is None:
        return None
    if not node.keys(fields_of(AuthSectionSpec)):
        return None
    bearer = _secret(b) if (b := node.get("bearer")) is not None else None
    cookies: list[tuple[str, Secret]] = []
    headers: list[tuple[str, Secret]] = []
    for key, out in (("cookies", cookies), ("headers", headers)):
        if (m := node.get(key)) is not None and m.is_map():
            for k, sn in m.items():
                if key == "headers" and not _HEADER_NAME.match(k):
                    sn.error(f"{k!r} is not a valid header name")
                sec = _secret(sn)
                if sec is not None:
                    out.append((k, sec))
    expiry = _expiry(e, node) if (e := node.get("expiry")) is not None else None
    spec = AuthSpec(bearer, tuple(cookies), tuple(headers), expiry)
    return replace(spec, check=_session_check(c, spec)) if (c := node.get("check")) is not None else spec


def _expiry(node: _Node, auth: _Node) -> ExpirySpec | None:
    """``expiry: {cookie: I, segment: 0, field: expiration, unit: ms}`` (or ``bearer: true``, ``header: X``)."""
    if not node.keys(fields_of(ExpirySectionSpec), required_of(ExpirySectionSpec)):
        return None
    given = [k for k in ("cookie", "header", "bearer") if k in node.value]
    if len(given) != 1:
        node.error("name exactly one credential: 'cookie: NAME', 'header: NAME' or 'bearer: true'")
        return None
    which = given[0]
    credential = "bearer"
    if which == "bearer":
        if node.value["bearer"] is not True:
            node.child("bearer").error("expected true")
        if "bearer" not in auth.value:
            node.child("bearer").error("this upstream has no bearer credential")
    else:
        name = node.child(which).string(f"a {which} name")
        declared = auth.value.get(f"{which}s")
        names = set(declared) if isinstance(declared, dict) else set()
        if name is not None and name not in names:
            node.child(which).error(f"no {which} named {name!r} under auth.{which}s")
        credential = f"{which}:{name}"
    kw: dict[str, Any] = {"credential": credential}
    if (n := node.get("segment")) is not None and (seg := n.integer(0, 10)) is not None:
        kw["segment"] = seg
    if (f := node.child("field").string("a field name")) is not None:
        kw["field"] = f
    if (n := node.get("unit")) is not None:
        if n.value not in ("s", "ms"):
            n.error("expected s (seconds since the epoch) or ms (milliseconds)")
        else:
            kw["unit"] = n.value
    return ExpirySpec(**kw)


def _session_check(node: _Node, auth: AuthSpec) -> SessionCheck | None:
    """``check: {request: GET /user, expect: login, memo: 5s}`` (see gateway.session)."""
    if not node.keys(fields_of(SessionCheckSpec), required_of(SessionCheckSpec)):
        return None
    request = node.child("request").string("a request such as 'GET /user'")
    expect = node.child("expect").string("a dotted field of the answer such as 'login'")
    method, _, path = (request or "").strip().partition(" ")
    path = path.strip()
    ok = request is not None and expect is not None
    if request is not None and (method != "GET" or not path.startswith("/") or " " in path or "?" in path):
        node.child("request").error(f"expected 'GET /path' (a safe GET on this upstream, no query), got {request!r}")
        ok = False
    if expect is not None and not all(expect.split(".")):
        node.child("expect").error(f"expected a dotted field name such as 'login' or 'user.id', got {expect!r}")
        ok = False
    memo = 5.0
    if (n := node.get("memo")) is not None and (d := n.convert(parse_duration)) is not None:
        if not 0 < d <= 300:
            n.error("the memo must be longer than 0s and at most 5m")
        memo = d
    names = ["bearer"] if auth.bearer else []
    names += [f"cookie:{name}" for name, _ in auth.cookies] + [f"header:{name}" for name, _ in auth.headers]
    credential = auth.expiry.credential if auth.expiry is not None else (names[0] if names else None)
    if credential is None:
        node.error("a session check needs a credential to check: this upstream's auth declares none")
        return None
    if not ok or expect is None:
        return None
    return SessionCheck(path, tuple(expect.split(".")), credential, memo)
