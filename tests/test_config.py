"""routes.yaml validation: every problem reported with file, line and key; the shipped file loads."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config
from tests.conftest import ROUTES

GOOD = """\
upstreams:
  api:
    base_url: ${API_URL:-http://127.0.0.1:9}
    auth:
      bearer: {env: API_KEY}
routes:
  things:
    stable: GET /v1/things/{id}
    upstream: api
    targets: ["GET /things/{id}"]
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml", env or {})
    return [str(p) for p in info.value.problems]


def test_good_file_builds_frozen_objects() -> None:
    cfg = parse_config(GOOD, "routes.yaml", {})
    assert str(cfg.upstreams["api"].base_url) == "http://127.0.0.1:9"
    route = cfg.routes[0]
    assert route.stable == "GET /v1/things/{id}"
    with pytest.raises(AttributeError):
        route.name = "other"  # type: ignore[misc]
    cfg2 = parse_config(GOOD, "routes.yaml", {"API_URL": "https://api.example.test"})
    assert cfg2.upstreams["api"].base_url.host == "api.example.test"


def test_shipped_routes_yaml_loads() -> None:
    from gateway.config import load_config

    cfg = load_config(ROUTES, env={})
    assert str(cfg.upstreams["observable"].base_url) == "https://api.observablehq.com"
    assert str(cfg.upstreams["posthog"].base_url) == "https://us.posthog.com"
    assert len(cfg.routes) == 12


def test_every_problem_is_listed_with_line_and_key() -> None:
    text = """\
upstreams:
  api:
    base_url: http://127.0.0.1:9
    timeout: 5s
routes:
  things:
    stable: GTE /v1/things
    upstream: apii
    targets: ["GET /things/{id}"]
    paginate: {style: before}
  other:
    stable: GET /v1/other
    upstream: api
    targets: ["GET /other"]
    response:
      item:
        id: {field: id, param: id}
"""
    got = problems(text)
    assert "routes.yaml:4: upstreams.api.timeout: unknown key 'timeout' (did you mean 'timeouts'?)" in got[0]
    joined = "\n".join(got)
    assert "routes.yaml:7: routes.things.stable: unknown HTTP method 'GTE'" in joined
    assert "routes.yaml:8: routes.things.upstream: no upstream named 'apii' (did you mean 'api'?)" in joined
    assert (
        "routes.yaml:9: routes.things.targets[0]: path uses {id}, which is neither a path nor a declared param"
        in joined
    )
    assert "routes.yaml:10: routes.things.paginate: unknown key 'paginate' (did you mean 'pagination'?)" in joined
    assert (
        "routes.yaml:17: routes.other.response.item.id: give exactly one of field, param, const or location" in joined
    )
    assert len(got) >= 6


def test_syntax_error_names_the_line() -> None:
    got = problems("upstreams:\n  api: {base_url: x\nroutes: []\n")
    assert got[0].startswith("routes.yaml:3: (syntax):")


def test_duplicate_keys_are_errors() -> None:
    got = problems(GOOD + "  things:\n    stable: GET /v1/x\n    upstream: api\n    targets: ['GET /x']\n")
    assert any("routes.yaml:11: routes.things: duplicate key 'things'" in p for p in got), got
    # named by its whole key path, like every other problem, also inside lists
    got = problems(GOOD.replace("    upstream: api\n", "    upstream: api\n    upstream: api\n"))
    assert any("routes.yaml:10: routes.things.upstream: duplicate key 'upstream'" in p for p in got), got
    listed = GOOD.replace(
        'targets: ["GET /things/{id}"]', "targets:\n      - request: GET /things/{id}\n        request: GET /x"
    )
    got = problems(listed)
    assert any("routes.things.targets[0].request: duplicate key 'request'" in p for p in got), got


def test_missing_env_var_without_default() -> None:
    text = GOOD.replace("${API_URL:-http://127.0.0.1:9}", "${API_URL}")
    got = problems(text)
    assert got == [
        "routes.yaml:3: upstreams.api.base_url: environment variable API_URL is not set "
        "(write ${API_URL:-default} to give a default)"
    ]


def test_a_secret_written_inline_is_refused_without_echoing_it() -> None:
    got = problems(GOOD.replace("bearer: {env: API_KEY}", "bearer: phx_literal_secret_value"))
    assert len(got) == 1
    assert "routes.yaml:5: upstreams.api.auth.bearer:" in got[0]
    assert "never written" in got[0]
    assert "phx_literal_secret_value" not in got[0]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("    pagination: {style: pages}\n", "pagination.style: expected 'before'"),
        ("    params: {q: {type: float}}\n", "params.q.type: expected 'string', 'integer' or 'boolean'"),
        ("    params: {q: {enum: [a], default: b}}\n", "params.q.default: default 'b' is not one of the enum values"),
        ("    validate: no_such_check\n", "validate: unknown validator 'no_such_check'"),
        ("    response: {raw: true, item: {a: b}}\n", "response.raw: a raw response passes the body through"),
        ("    response: {headers: {X-V: {location: 'no-group'}}}\n", "the pattern needs one capture group"),
        ("    params: {t: {fan_out: true}}\n", "routes.things.params.t.fan_out: fan_out merges streams"),
        ("    auth: sometimes\n", "auth: expected 'required' or 'none'"),
    ],
)
def test_route_mistakes(snippet: str, expected: str) -> None:
    got = problems(GOOD + snippet)
    assert any(expected in p and p.startswith("routes.yaml:") for p in got), got


def test_overlapping_routes_are_refused() -> None:
    got = problems(GOOD + "  again:\n    stable: GET /v1/things/{other}\n    upstream: api\n    targets: ['GET /x']\n")
    assert any("shadows route 'things'" in p for p in got)


def test_base_url_must_be_absolute_http_without_query() -> None:
    got = problems(GOOD.replace("${API_URL:-http://127.0.0.1:9}", "ftp://x"))
    assert any("is not an absolute http(s) URL" in p for p in got)
    got = problems(GOOD.replace("${API_URL:-http://127.0.0.1:9}", "http://h/?api_key=1"))
    assert any("credentials never go in URLs" in p for p in got)


def test_one_typo_is_one_problem_not_a_cascade() -> None:
    """A mistake in one route's pagination used to also flag its `items` mapping, every later
    route (dropped once any problem was seen) and each client-key grant naming them."""
    env = {"POSTHOG_URL": "http://127.0.0.1:9", "OBSERVABLE_API_URL": "http://127.0.0.1:9"}
    grants = (
        "\nclients:\n  keys:\n"
        '    editor: {key: {env: K}, routes: ["posthog_*"]}\n'
        "    one: {key: {env: K}, routes: [posthog_notebooks]}\n"
    )
    text = ROUTES.read_text() + grants
    assert "      page_size: 100\n" in text
    found = problems(text.replace("      page_size: 100\n", "      page_sise: 100\n", 1), env)
    assert len(found) == 1 and "routes.posthog_notebooks.pagination.page_sise: unknown key" in found[0], found
    # mistakes in two routes: each reported, once
    two = text.replace("    upstream: posthog\n", "    upstream: posthgo\n", 2)
    found = problems(two, env)
    assert len(found) == 2 and all("upstream: no upstream named 'posthgo'" in p for p in found), found


def test_a_mistake_in_one_route_does_not_hide_the_problems_between_later_ones() -> None:
    env = {"POSTHOG_URL": "http://127.0.0.1:9", "OBSERVABLE_API_URL": "http://127.0.0.1:9"}
    text = ROUTES.read_text().replace(
        "    description: The signed-in user's notebooks, newest-updated first.\n", "    descripton: typo\n", 1
    )
    activity = "    stable: GET /v1/posthog/projects/{project_id}/notebooks/{short_id}/activity\n"
    assert "descripton" in text and activity in text
    found = problems(text.replace(activity, activity.replace("/activity", "")), env)
    assert len(found) == 2, found  # both at once, not the second only after the first is fixed
    assert "descripton: unknown key" in found[0] and "shadows route 'posthog_notebook'" in found[1]


def test_more_mistakes_that_are_one_problem_each_and_silent_ones_that_are_not() -> None:
    env = {"POSTHOG_URL": "http://127.0.0.1:9", "OBSERVABLE_API_URL": "http://127.0.0.1:9"}
    text = ROUTES.read_text()

    def one(old: str, new: str, expected: str) -> None:
        assert old in text, old
        found = problems(text.replace(old, new, 1), env)
        assert len(found) == 1 and expected in found[0], found

    # a misspelt param key: its name is still declared, so its targets and mappings are not flagged
    one(
        "        enum: [public, shared, private, trash]\n",
        "        enm: [public, shared, private, trash]\n",
        "routes.observable_notebooks.params.type.enm: unknown key 'enm'",
    )
    # an unknown method: its cache section is not judged by it
    one(
        "    stable: GET /v1/observable/notebooks\n",
        "    stable: FETCH /v1/observable/notebooks\n",
        "routes.observable_notebooks.stable",
    )
    # a path without its leading slash: the {names} in it are still known to the targets
    one(
        "    stable: GET /v1/posthog/projects/{project_id}/notebooks\n",
        "    stable: GET v1/posthog/projects/{project_id}/notebooks\n",
        "routes.posthog_notebooks.stable",
    )
    # a misspelt required key: one did-you-mean, not also "missing required key"
    one(
        "circuit_breaker: {failures: 5, cooldown: 30s}",
        "circuit_breaker: {failure: 5, cooldown: 30s}",
        "(did you mean 'failures'?)",
    )
    # silent before: `item` on a collection was ignored and the items served unmapped
    one(
        "    response:\n      items:\n        id: short_id\n",
        "    response:\n      item:\n        id: short_id\n",
        "'item' maps one entity; this route is a collection",
    )
    # silent before: a default that is not of the param's type
    found = problems(GOOD.replace("    targets:", "    params: {n: {type: integer, default: false}}\n    targets:"))
    assert found == [
        "routes.yaml:10: routes.things.params.n.default: default False is not an integer, the param's type"
    ]
    # two routes with one shape: named by the stable key, with the other route's line
    found = problems(GOOD + "  other:\n    stable: GET /v1/things/{key}\n    upstream: api\n    targets: ['GET /x']\n")
    assert found == [
        "routes.yaml:11: routes.other.stable: GET /v1/things/{key} shadows route 'things' "
        "(GET /v1/things/{id}, line 7); one of them must change"
    ], found


def test_durations_take_compound_units_and_a_bare_number_is_refused() -> None:
    text = GOOD.replace("    targets:", "    cache: {ttl: 1h30m, stale_if_error: 1d12h}\n    targets:")
    route = parse_config(text, "routes.yaml", {}).routes[0]
    assert route.cache is not None and route.cache.ttl == 5400 and route.cache.stale_if_error == 129600
    bare = GOOD.replace("    targets:", "    cache: {ttl: 60}\n    targets:")
    assert problems(bare) == [
        "routes.yaml:10: routes.things.cache.ttl: 60 has no unit: write 60s for seconds (or ms, m, h, d)"
    ]


def test_merge_keys_and_x_anchor_blocks_are_accepted() -> None:
    text = """\
x-defaults: &defaults
  timeouts: {connect: 2s}
  retries: {attempts: 1}
x-route: &route
  upstream: api
upstreams:
  api:
    <<: *defaults
    base_url: http://127.0.0.1:9
  other:
    <<: *defaults
    base_url: http://127.0.0.1:8
    retries: {attempts: 3}
routes:
  things:
    <<: *route
    stable: GET /v1/things
    targets: ["GET /things"]
"""
    cfg = parse_config(text, "routes.yaml", {})
    assert cfg.upstreams["api"].timeouts.connect == 2.0
    assert cfg.upstreams["api"].retries.attempts == 1
    assert cfg.upstreams["other"].retries.attempts == 3  # the mapping's own key overrides the merged one
    assert cfg.routes[0].upstream == "api"
    # a merged key is checked like a written one, on the line where it was written
    got = problems(text.replace("  retries: {attempts: 1}", "  retires: {attempts: 1}"))
    assert any(
        p.startswith("routes.yaml:3: upstreams.api.retires: unknown key 'retires' (did you mean 'retries'?)")
        for p in got
    ), got
    # a key written twice by hand beside a merge still is a duplicate
    got = problems(text.replace("    retries: {attempts: 3}", "    retries: {attempts: 3}\n    retries: {attempts: 4}"))
    assert any("upstreams.other.retries: duplicate key 'retries'" in p for p in got), got
    # only x- blocks are free-form: another unknown top-level key is still a mistake
    assert any("unknown key 'defaults'" in p for p in problems(text.replace("x-route:", "defaults:")))


def test_an_anchor_used_twice_unescapes_dollars_once() -> None:
    headers = "    headers: &h {X-Tag: '$${literal}'}\n"
    text = GOOD.replace("    auth:\n", headers + "    auth:\n")
    text = text.replace("routes:\n", "  again:\n    base_url: http://127.0.0.1:8\n    headers: *h\nroutes:\n")
    cfg = parse_config(text, "routes.yaml", {})
    assert dict(cfg.upstreams["api"].headers)["X-Tag"] == "${literal}"
    assert dict(cfg.upstreams["again"].headers)["X-Tag"] == "${literal}"


def test_a_syntax_error_names_line_column_and_a_hint() -> None:
    got = problems("upstreams:\n\tapi: {}\nroutes: {}\n")
    assert got == [
        "routes.yaml:2: (syntax): found character '\\t' that cannot start any token while scanning for the next token"
        " (line 2, column 1); hint: indent with spaces, not tabs"
    ]
    got = problems("upstreams:\n  api:\n    base_url: http://x\nroutes:\n  a:\n    stable: GET /a: b\n")
    assert got[0].startswith("routes.yaml:6: (syntax): mapping values are not allowed here")
    assert "(line 6, column" in got[0] and "must be quoted" in got[0]


def test_params_and_route_cache_by_their_models_report_every_problem_at_once() -> None:
    """params and a route's cache are read by their pydantic models: each mistake at its own key and
    line, worded for people, and a wrong key does not hide the checks that span the others."""
    text = """\
upstreams:
  up: {base_url: "http://127.0.0.1:9"}
routes:
  r:
    stable: GET /v1/r
    upstream: up
    auth: none
    params:
      a: {type: 3}
      b: {enum: []}
      d: {defualt: 1}
      e: {type: integer, default: "x", fan_out: "yes"}
    cache: {ttl: 0s, vary: ["bad header"], private: maybe}
    targets: [GET /a]
  w:
    stable: POST /v1/w
    upstream: up
    auth: none
    cache: {invalidates: [rr, 3]}
    targets: [POST /a]
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text, "routes.yaml", env={})
    assert sorted(str(p) for p in err.value.problems) == sorted(
        [
            "routes.yaml:9: routes.r.params.a.type: expected 'string', 'integer' or 'boolean', got a number (3)",
            "routes.yaml:10: routes.r.params.b.enum: expected a non-empty list, got an empty one",
            "routes.yaml:11: routes.r.params.d.defualt: unknown key 'defualt' (did you mean 'default'?); "
            "allowed: default, description, enum, fan_out, required, type",
            "routes.yaml:12: routes.r.params.e.fan_out: expected true or false, got a string",
            "routes.yaml:12: routes.r.params.e.default: default 'x' is not an integer, the param's type",
            "routes.yaml:13: routes.r.cache.private: expected true or false, got a string",
            "routes.yaml:13: routes.r.cache: give a ttl (and/or stale_if_error) longer than 0s, or write cache: false",
            "routes.yaml:13: routes.r.cache.vary: expected a list of request header names",
            "routes.yaml:19: routes.w.cache.invalidates[1]: expected a string, got a number (3)",
        ]
    ), err.value.problems
