"""Defects a hands-on QA pass found: config checks, the CLI, the docs (each as its user meets it)."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, parse_config

HEAD = """\
upstreams:
  api:
    base_url: {base_url}
    auth:
      bearer: {{env: API_KEY}}
routes:
  things:
    stable: {stable}
    upstream: api
    targets: [{target}]
"""


def _doc(
    *, base_url: str = "http://127.0.0.1:9", stable: str = "GET /v1/things/{id}", target: str = '"GET /things/{id}"'
) -> str:
    return HEAD.format(base_url=base_url, stable=stable, target=target)


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml", env or {"API_KEY": "k"})
    return [str(p) for p in info.value.problems]


SECRET = "phx_very_secret_value"


def test_an_environment_value_in_a_target_query_string_is_refused_without_echoing_it() -> None:
    text = _doc(target='"GET /things/{id}?api_key=${POSTHOG_API_KEY}"')
    got = problems(text, {"API_KEY": "k", "POSTHOG_API_KEY": SECRET})
    assert len(got) == 1, got
    assert got[0].startswith("routes.yaml:10: routes.things.targets[0]: a target's query string cannot take")
    assert "auth:" in got[0] and "POSTHOG_API_KEY" in got[0]
    assert SECRET not in got[0]


def test_an_environment_value_in_a_target_query_mapping_is_refused() -> None:
    text = _doc(target="{request: 'GET /things/{id}', query: {token: '${TOKEN}', kind: notebook}}")
    got = problems(text, {"API_KEY": "k", "TOKEN": SECRET})
    assert len(got) == 1, got
    assert "routes.things.targets[0].query.token: a target's query string cannot take" in got[0]
    assert SECRET not in got[0]


def test_an_environment_value_in_a_target_path_and_a_literal_query_stay_allowed() -> None:
    text = _doc(target='"GET /api/projects/${PROJECT_ID}/things/{id}?kind=notebook"')
    cfg = parse_config(text, "routes.yaml", {"API_KEY": "k", "PROJECT_ID": "42"})
    assert cfg.routes[0].targets[0].path.raw == "/api/projects/42/things/{id}"


def test_base_url_with_userinfo_is_refused_without_echoing_it() -> None:
    got = problems(_doc(base_url=f"http://user:{SECRET}@127.0.0.1:9"))
    assert len(got) == 1, got
    assert got[0].startswith("routes.yaml:3: upstreams.api.base_url: base_url cannot carry a user or password")
    assert SECRET not in got[0] and "user:" not in got[0]


@pytest.mark.parametrize(
    "stable",
    ["GET /metrics", "POST /metrics", "GET /status", "POST /admin/reload", "GET /openapi.json", "GET /healthz/"],
)
def test_a_stable_path_on_the_gateways_own_endpoint_is_refused(stable: str) -> None:
    got = problems(_doc(stable=stable, target='"GET /things"'))
    assert len(got) == 1, got
    assert got[0].startswith("routes.yaml:8: routes.things.stable: ")
    assert "the gateway's own endpoint" in got[0]


def test_a_query_in_a_stable_path_is_refused() -> None:
    got = problems(_doc(stable="GET /v1/q?y=1", target='"GET /things"'))
    assert got == [
        "routes.yaml:8: routes.things.stable: a stable path cannot carry a query or fragment (it would never "
        "match): declare query params under 'params:'"
    ]


def test_a_placeholder_twice_in_a_stable_path_is_refused() -> None:
    got = problems(_doc(stable="GET /v1/dup/{a}/{a}", target='"GET /things/{a}"'))
    assert got == [
        "routes.yaml:8: routes.things.stable: placeholder {a} appears twice in the stable path: give each its own name"
    ]


async def test_own_paths_are_exactly_what_the_app_registers() -> None:
    from gateway.config.names import OWN_PATHS
    from gateway.server import build_app
    from gateway.server.stable import StableResource

    app = build_app(parse_config(_doc(), "routes.yaml", {"API_KEY": "k"}), probes=False)
    resources = [r.resource for r in app.router.routes() if r.resource is not None]
    own = {res.canonical for res in resources if not isinstance(res, StableResource)}
    assert own == set(OWN_PATHS)
