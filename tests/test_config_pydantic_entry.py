"""The last hand-read parts of routes.yaml read by their pydantic models: an upstream's own keys (base_url,
headers, timeouts, limits, retries, breaker, budget), a route entry (stable, upstream, auth, validate,
fallback_on, description, no_store, the targets list), a route's cache by the read or the write model, and
the document's own keys (version, upstreams, routes). What ``gateway check`` says of their mistakes, what a
good file builds, and what an editor's schema says of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from yarl import URL

from gateway.config import (
    DEFAULT_FALLBACK_ON,
    BreakerPolicy,
    ConfigError,
    RequestBudget,
    RetryPolicy,
    RouteCache,
    Timeouts,
    parse_config,
)
from gateway.config.names import VALIDATOR_NAMES
from tests.conftest import ROOT
from tests.helpers.cli import run

SCHEMA = ROOT / "routes.schema.json"
SECRET = "sk_live_do_not_echo_me"

DOC = """\
upstreams:
  api:
    base_url: http://127.0.0.1:9
{upstream}
routes:
  r:
{route}
  w:
    stable: POST /v1/w
    upstream: api
    targets: ["POST /w"]
{top}"""
ROUTE = '    stable: GET /v1/r/{id}\n    upstream: api\n    targets: ["GET /x/{id}"]\n'
COLLECTION = '    stable: GET /v1/r\n    upstream: api\n    targets: ["GET /x"]\n'


def doc(upstream: str = "", route: str = ROUTE, top: str = "") -> str:
    return DOC.format(upstream=upstream.rstrip("\n"), route=route.rstrip("\n"), top=top)


def check(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """What ``gateway check`` prints of each problem, without the file's path."""
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    out = run("check", str(path), env=env)
    assert out.returncode != 0, out.stdout + out.stderr
    prefix = f"{path}:"
    lines = [line.strip() for line in out.stderr.splitlines()]
    return [line[len(prefix) :] for line in lines if line.startswith(prefix) and "problem(s)" not in line]


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml", env or {})
    return [str(p) for p in info.value.problems]


def test_gateway_check_tells_an_upstreams_mistakes_at_their_keys(tmp_path: Path) -> None:
    upstream = (
        "    headers: {Origin: x, 'bad name': y, X-Version: 2, X-Split: \"a\\nb\", X-Map: {a: 1}}\n"
        "    max_connections: 0\n"
        "    concurrency: '5'\n"
        "    max_redirects: 21\n"
        "    max_response_bytes: 5x\n"
        "    timeouts: {connect: 5}\n"
        "    retries: {attempts: 11}\n"
        "    circuit_breaker: {failures: 3, cooldown: 0s}\n"
        "    request_budget: {limits: 480/1m}\n"
        "    timeoutz: {}\n"
    )
    got = check(
        tmp_path,
        doc(upstream=upstream.replace("http://127.0.0.1:9", "ftp://x")).replace(
            "base_url: http://127.0.0.1:9", "base_url: ftp://x"
        ),
    )
    assert sorted(got) == sorted(
        [
            "3: upstreams.api.base_url: 'ftp://x' is not an absolute http(s) URL",
            "4: upstreams.api.headers.X-Split: header values cannot contain line breaks",
            "4: upstreams.api.headers.X-Map: expected a header value, got a mapping",
            "4: upstreams.api.headers.bad name: 'bad name' is not a valid header name",
            "5: upstreams.api.max_connections: must be at least 1, got 0",
            "6: upstreams.api.concurrency: expected an integer, got a string",
            "7: upstreams.api.max_redirects: must be at most 20, got 21",
            "8: upstreams.api.max_response_bytes: '5x' is not a size such as 1MiB or 64kb",
            "9: upstreams.api.timeouts.connect: 5 has no unit: write 5s for seconds (or ms, m, h, d)",
            "10: upstreams.api.retries.attempts: must be at most 10, got 11",
            "11: upstreams.api.circuit_breaker.cooldown: the cool-down must be longer than 0s",
            "12: upstreams.api.request_budget.limits: expected a list of budgets such as [480/1m, 4800/1h]",
            "13: upstreams.api.timeoutz: unknown key 'timeoutz' (did you mean 'timeouts'?); allowed: auth, base_url,"
            " circuit_breaker, concurrency, description, headers, max_connections, max_redirects,"
            " max_response_bytes, request_budget, retries, timeouts",
        ]
    )


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("'http://h/?api_key=1'", "base_url cannot carry a query or fragment (credentials never go in URLs)"),
        ("'http://h/#top'", "base_url cannot carry a query or fragment (credentials never go in URLs)"),
        ("5", "expected an absolute http(s) URL, got a number (5)"),
        ("{a: 1}", "expected an absolute http(s) URL, got a mapping"),
        ("/relative", "'/relative' is not an absolute http(s) URL"),
    ],
)
def test_a_base_url_is_checked_by_its_model(base_url: str, expected: str) -> None:
    got = problems(doc().replace("base_url: http://127.0.0.1:9", f"base_url: {base_url}"))
    assert got == [f"routes.yaml:3: upstreams.api.base_url: {expected}"]


def test_an_upstream_without_base_url_or_as_a_scalar_is_told_so() -> None:
    got = problems(doc().replace("    base_url: http://127.0.0.1:9\n", "    basee_url: http://127.0.0.1:9\n"))
    assert got == [
        "routes.yaml:3: upstreams.api.basee_url: unknown key 'basee_url' (did you mean 'base_url'?); allowed: auth,"
        " base_url, circuit_breaker, concurrency, description, headers, max_connections, max_redirects,"
        " max_response_bytes, request_budget, retries, timeouts"
    ]  # a misspelt key is not also told missing
    got = problems(doc().replace("  api:\n    base_url: http://127.0.0.1:9\n", "  api: ${API}\n"), {"API": SECRET})
    assert got == ["routes.yaml:2: upstreams.api: expected a mapping, got a string"]


def test_a_good_upstream_builds_the_same_frozen_upstream() -> None:
    upstream = (
        "    description: the API\n"
        "    headers: {Origin: 'https://app.example', X-Version: 2}\n"
        "    timeouts: {connect: 2s, read: 10s, total: 30s}\n"
        "    max_connections: 7\n"
        "    concurrency: 3\n"
        "    max_response_bytes: 1MiB\n"
        "    max_redirects: 0\n"
        "    retries: {attempts: 2, backoff: 100ms}\n"
        "    circuit_breaker: {failures: 5, cooldown: 10s}\n"
        "    request_budget: {limits: [480/1m, 4800/1h], max_wait: 2s}\n"
    )
    up = parse_config(doc(upstream=upstream), "routes.yaml", {}).upstreams["api"]
    assert up.base_url == URL("http://127.0.0.1:9")
    assert up.headers == (("Origin", "https://app.example"), ("X-Version", "2"))
    assert up.timeouts == Timeouts(connect=2.0, read=10.0, total=30.0)
    assert (up.max_connections, up.concurrency, up.max_response_bytes, up.max_redirects) == (7, 3, 1 << 20, 0)
    assert up.retries == RetryPolicy(attempts=2, backoff=0.1)
    assert up.breaker == BreakerPolicy(failures=5, cooldown=10.0)
    assert up.budget == RequestBudget(((480, 60.0), (4800, 3600.0)), 2.0)
    assert up.auth is None
    bare = parse_config(doc(), "routes.yaml", {}).upstreams["api"]
    assert (bare.timeouts, bare.headers, bare.retries, bare.breaker, bare.budget) == (
        Timeouts(),
        (),
        RetryPolicy(),
        BreakerPolicy(),
        RequestBudget(),
    )
    assert (bare.max_connections, bare.concurrency, bare.max_response_bytes, bare.max_redirects) == (
        100,
        4,
        16 << 20,
        5,
    )


def test_gateway_check_tells_a_route_entrys_mistakes_at_their_keys(tmp_path: Path) -> None:
    route = (
        "    stable: 5\n"
        "    upstream: apix\n"
        "    targets: []\n"
        "    auth: sometimes\n"
        "    validate: nope\n"
        "    no_store: 'yes'\n"
        "    descriptio: x\n"
        "    fallback_on: [200, 429, shapes]\n"
    )
    got = check(tmp_path, doc(route=route))
    assert got == [  # in the file's order, whichever check found each
        "7: routes.r.stable: expected 'METHOD /path', got a number (5)",
        # a wrong key does not hide the checks that span the route: its upstream is still looked up
        "8: routes.r.upstream: no upstream named 'apix' (did you mean 'api'?)",
        "9: routes.r.targets: expected a non-empty list of upstream targets, got an empty list",
        "10: routes.r.auth: expected 'required' or 'none'",
        f"11: routes.r.validate: unknown validator 'nope'; known: {', '.join(sorted(VALIDATOR_NAMES))}",
        "12: routes.r.no_store: expected true or false, got a string",
        "13: routes.r.descriptio: unknown key 'descriptio' (did you mean 'description'?); allowed: auth, cache,"
        " description, fallback_on, no_store, pagination, params, probe, response, shape, stable, targets,"
        " upstream, validate",
        "14: routes.r.fallback_on[0]: expected an upstream status from 400 to 599 or 'shape', got 200",
        "14: routes.r.fallback_on[1]: 429 is about the gateway's credential or pace, which another target shares",
        "14: routes.r.fallback_on[2]: expected an upstream status from 400 to 599 or 'shape', got 'shapes'",
    ]


def test_a_route_entrys_kinds_and_required_keys() -> None:
    route = (
        "    stable: GETX /x\n"
        "    upstream: 5\n"
        "    targets: {a: 1}\n"
        "    fallback_on: 404\n"
        "    description: 3\n"
        "    params: [q]\n"
        "    validate: 3\n"
    )
    assert problems(doc(route=route)) == [
        "routes.yaml:7: routes.r.stable: unknown HTTP method 'GETX'; use one of DELETE, GET, HEAD, OPTIONS, PATCH,"
        " POST, PUT",
        "routes.yaml:8: routes.r.upstream: expected a string, got a number (5)",
        "routes.yaml:9: routes.r.targets: expected a non-empty list of upstream targets, got a mapping",
        "routes.yaml:10: routes.r.fallback_on: expected a non-empty list of upstream statuses (400-599) and/or"
        " 'shape', got a number (404)",
        "routes.yaml:11: routes.r.description: expected a string, got a number (3)",
        "routes.yaml:12: routes.r.params: expected a mapping of param name → param, got a list",
        "routes.yaml:13: routes.r.validate: expected the name of a body check, got a number (3)",
    ]
    # a misspelt required key is told once, as unknown; another one missing is told missing
    assert problems(doc(route="    stabel: GET /v1/r\n    upstream: api\n")) == [
        "routes.yaml:6: routes.r: missing required key 'targets'",
        "routes.yaml:7: routes.r.stabel: unknown key 'stabel' (did you mean 'stable'?); allowed: auth, cache,"
        " description, fallback_on, no_store, pagination, params, probe, response, shape, stable, targets,"
        " upstream, validate",
    ]


def test_a_route_that_is_not_a_mapping_and_an_interpolated_auth_are_told_by_kind() -> None:
    text = doc().replace("  r:\n" + ROUTE.rstrip("\n"), "  r: 5")
    assert problems(text) == ["routes.yaml:6: routes.r: expected a mapping, got a number (5)"]
    got = problems(doc(route=ROUTE + "    auth: ${T}\n    version: ${T}\n"), {"T": SECRET})
    assert got[0] == "routes.yaml:10: routes.r.auth: expected 'required' or 'none'"
    assert got[1].startswith("routes.yaml:11: routes.r.version: unknown key 'version'")
    assert all(SECRET not in p for p in got)


def test_a_good_route_entry_builds_the_same_frozen_route() -> None:
    route = (
        "    stable: get /v1/r/{id}\n"
        "    upstream: api\n"
        "    description: One r.\n"
        "    auth: none\n"
        "    no_store: true\n"
        '    targets: ["GET /old/{id}", {request: "GET /new/{id}"}]\n'
        "    fallback_on: [404, 400, shape]\n"
        "    shape: {status: 200}\n"
        "    cache: {ttl: 1m, vary: [Accept]}\n"
    )
    cfg = parse_config(doc(route=route), "routes.yaml", {})
    r, w = cfg.routes
    assert (r.name, r.method, r.path.raw, r.stable, r.upstream, r.auth) == (
        "r",
        "GET",
        "/v1/r/{id}",
        "GET /v1/r/{id}",
        "api",
        False,
    )
    assert (r.description, r.no_store, r.validate, r.line) == ("One r.", True, None, 6)
    assert [t.path.raw for t in r.targets] == ["/old/{id}", "/new/{id}"]
    assert r.fallback_on == frozenset({404, 400, "shape"})
    assert r.cache == RouteCache(ttl=60.0, vary=("accept",))
    # the defaults: credentials sent, answers private, 404/410 hand over
    assert (w.auth, w.no_store, w.description, w.fallback_on, w.cache) == (True, False, "", DEFAULT_FALLBACK_ON, None)
    posted = parse_config(
        doc(route=ROUTE).replace('targets: ["POST /w"]', 'targets: ["POST /w"]\n    validate: ' + min(VALIDATOR_NAMES)),
        "routes.yaml",
        {},
    )
    assert posted.routes[1].validate == min(VALIDATOR_NAMES)


def test_a_routes_cache_is_read_by_the_read_or_the_write_model() -> None:
    read = ROUTE + "    cache: {ttl: 1m, invalidates: [w]}\n"
    assert problems(doc(route=read)) == [
        "routes.yaml:10: routes.r.cache.invalidates: unknown key 'invalidates'; allowed: private, stale_if_error,"
        " ttl, vary"
    ]
    write = doc().replace('targets: ["POST /w"]', 'targets: ["POST /w"]\n    cache: {ttl: 1m, invalidates: [rr]}')
    assert problems(write) == [
        "routes.yaml:14: routes.w.cache.ttl: unknown key 'ttl'; allowed: invalidates",
        "routes.yaml:14: routes.w.cache: POST responses are never cached; a write route only lists what it"
        " 'invalidates'",
        # the ttl no longer hides the check of the routes it names
        "routes.yaml:14: routes.w.cache.invalidates: no route named 'rr' (did you mean 'r'?)",
    ]
    good = doc().replace('targets: ["POST /w"]', 'targets: ["POST /w"]\n    cache: {invalidates: [r]}')
    assert parse_config(good, "routes.yaml", {}).routes[1].cache == RouteCache(invalidates=("r",))
    assert problems(doc(route=ROUTE + "    cache: true\n")) == [
        "routes.yaml:10: routes.r.cache: expected a mapping, got a boolean (True)"
    ]


def test_pagination_style_is_read_by_its_model_with_the_styles_explained() -> None:
    got = problems(doc(route=COLLECTION + "    pagination: {page_size: 3}\n"))
    assert got == [
        "routes.yaml:10: routes.r.pagination: missing required key 'style': 'before' (the last item's field),"
        " 'offset' (limit/offset), 'page' (page number), 'next_url' (the upstream's next link) or 'cursor'"
        " (a token from the body)"
    ]
    got = problems(doc(route=COLLECTION + "    pagination: {style: pages, pag: 1}\n"))
    assert got[0].startswith("routes.yaml:10: routes.r.pagination.style: expected 'before' (the last item's field)")
    assert got[1].startswith("routes.yaml:10: routes.r.pagination.pag: unknown key 'pag'")


def test_gateway_check_tells_the_documents_own_mistakes(tmp_path: Path) -> None:
    assert check(tmp_path, "version: 2\n" + doc()) == [
        "1: version: unsupported version 2; this gateway reads version 1"
    ]
    assert check(tmp_path, "version: ${V}\n" + doc(), env={"V": SECRET}) == [
        "1: version: expected version 1, got a string"
    ]
    assert check(tmp_path, "upstreams: 5\nroutes: [1]\n") == [
        "1: upstreams: expected a mapping of upstream name → upstream, got a number (5)",
        "2: routes: expected a mapping of route name → route, got a list",
    ]
    assert check(tmp_path, "upstream: {}\nroutes: {}\n") == [
        "1: upstream: unknown key 'upstream' (did you mean 'upstreams'?); allowed: admin, cache, clients, probes,"
        " routes, server, upstreams, version"
    ]
    assert check(tmp_path, "upstreams: {}\n") == ["1: (document): missing required key 'routes'"]
    assert parse_config("version: 1\n" + doc(), "routes.yaml", {}).routes[0].name == "r"


def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA.read_text())
    return loaded


def test_the_editor_schema_describes_the_route_entry_upstream_and_document() -> None:
    schema = _schema()
    defs = schema["$defs"]
    route = defs["RouteSpec"]["properties"]
    assert set(defs["RouteSpec"]["required"]) == {"stable", "upstream", "targets"}
    assert all(p.get("description") for p in route.values())
    assert route["stable"]["pattern"] and route["targets"]["minItems"] == 1
    assert sorted(route["validate"]["enum"]) == sorted(VALIDATOR_NAMES)
    status, shape = route["fallback_on"]["items"]["anyOf"]
    assert status["anyOf"][0] == {"type": "integer", "minimum": 400, "maximum": 599} and shape == {"const": "shape"}
    assert route["auth"]["anyOf"][0]["enum"] == ["required", "none"]
    upstream = defs["UpstreamSpec"]["properties"]
    assert all(p.get("description") for p in upstream.values())
    assert defs["UpstreamSpec"]["required"] == ["base_url"]
    assert upstream["headers"]["additionalProperties"]["type"] == ["string", "number"]
    assert schema["properties"]["version"]["description"] and set(schema["required"]) == {"upstreams", "routes"}
    validator = jsonschema.Draft202012Validator(schema)
    good = {
        "version": 1,
        "upstreams": {"api": {"base_url": "http://x", "headers": {"X-Version": 2}, "max_connections": 3}},
        "routes": {"r": {"stable": "GET /x", "upstream": "api", "targets": ["GET /x"], "fallback_on": [404, "shape"]}},
    }
    assert list(validator.iter_errors(good)) == []
    bad = {
        "upstreams": {"api": {"base_url": "http://x", "max_connections": 0}},
        "routes": {"r": {"stable": "GET /x", "upstream": "api", "targets": [], "fallback_on": [200], "auth": "x"}},
    }
    errors = sorted(".".join(map(str, e.absolute_path)) for e in validator.iter_errors(bad))
    assert errors == [
        "routes.r.auth",
        "routes.r.fallback_on.0",
        "routes.r.targets",
        "upstreams.api.max_connections",
    ]


def test_the_root_cache_keeps_its_good_keys_for_the_backend_check() -> None:
    # a wrong size does not hide that backend redis needs its URL
    assert problems(doc(top="cache: {backend: redis, max_bytes: lots}\n")) == [
        "routes.yaml:14: cache.max_bytes: 'lots' is not a size such as 1MiB or 64kb",
        "routes.yaml:14: cache: backend 'redis' needs redis: {url: {env: VAR}}",
    ]
    # a wrong backend is told at its key, and not taken for memory (redis: would be 'only read with redis')
    assert problems(doc(top="cache: {backend: redsi, redis: {url: {env: R}}}\n")) == [
        "routes.yaml:14: cache.backend: expected 'memory' (this process), 'redis' (shared by every replica)"
        " or 'auto' (redis when its URL is set)"
    ]
    settings = parse_config(doc(top="cache: {backend: redis, redis: {url: {env: R}, prefix: rg}}\n"), "x", {}).cache
    assert (settings.backend, settings.redis_prefix) == ("redis", "rg")


def test_a_document_that_is_not_a_mapping_is_named_by_its_kind() -> None:
    assert problems(SECRET + "\n") == [
        "routes.yaml:1: (document): expected a mapping with 'upstreams' and 'routes', got a string"
    ]
    assert problems("- 1\n") == [
        "routes.yaml:1: (document): expected a mapping with 'upstreams' and 'routes', got a list"
    ]


@pytest.mark.parametrize(
    ("upstream", "route", "top", "key"),
    [
        # a key with its value commented out is not the key left out: each would fail open or drop silently
        ("", '    stable: GET /v1/r/{id}\n    upstream:\n    targets: ["GET /x/{id}"]\n', "", "routes.r.upstream"),
        ("", "    stable: GET /v1/r/{id}\n    upstream: api\n    targets: null\n", "", "routes.r.targets"),
        (
            "",
            ROUTE,
            "clients:\n  keys:\n    backup: {key: {env: K}, methods: null}\n",
            "clients.keys.backup.methods",
        ),
        ("", ROUTE, "clients:\n  keys:\n    backup: {key: {env: K}, routes: null}\n", "clients.keys.backup.routes"),
        (
            "",
            ROUTE,
            "clients:\n  keys:\n    backup: {key: {env: K}, rate_limit: null}\n",
            "clients.keys.backup.rate_limit",
        ),
        ("    auth: {bearer: {env: null}}\n", ROUTE, "", "upstreams.api.auth.bearer.env"),
        (
            "    auth: {bearer: {env: T}, expiry: {header: null, unit: s}}\n",
            ROUTE,
            "",
            "upstreams.api.auth.expiry.header",
        ),
        ("    retries: null\n", ROUTE, "", "upstreams.api.retries"),
        ("", ROUTE + "    response: {item: {id: {param: null}}}\n", "", "routes.r.response.item.id.param"),
    ],
)
def test_a_key_written_as_null_is_refused_not_taken_for_left_out(upstream: str, route: str, top: str, key: str) -> None:
    """``key:`` / ``key: null`` where null means nothing: refused at the key (before, some read as "no
    restriction": a client key's ``methods: null`` granted every method, ``upstream: null`` dropped the route)."""
    found = problems(doc(upstream=upstream, route=route, top=top))
    assert any(f": {key}: " in p for p in found), found
    assert not any("Traceback" in p for p in found)


def test_a_null_that_means_something_stays_a_value() -> None:
    """``size_param: null`` (the upstream's page size is its own) is the one null that says something."""
    route = (
        COLLECTION
        + "    pagination: {style: page, items: results, page_param: page, first_page: 1, size_param: null}\n"
    )
    (r, _w) = parse_config(doc(route=route), "routes.yaml", {}).routes
    assert r.pagination is not None and r.pagination.size_param == ""  # no size is sent


def test_an_empty_list_of_secret_sources_says_a_list_is_what_is_wrong() -> None:
    found = problems(doc(upstream="    auth: {bearer: []}\n"))
    assert found == [
        "routes.yaml:4: upstreams.api.auth.bearer: expected a non-empty list, each {env: VAR}, {file: PATH}"
        " or {file_env: VAR}; secrets are never written in routes.yaml"
    ]
