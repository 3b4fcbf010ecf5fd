"""A dead session is an auth failure, never empty data (auth.check, gateway.session).

The real Observable answers a signed-out visitor with 200: ``GET /user`` is ``null`` and
the signed-in lists are ``[]``.  These tests drive the shipped routes.yaml against the
sandbox (switched to that behaviour, or to its older 401) through real HTTP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry
from pytest_aiohttp import AiohttpClient

from gateway.config import ConfigError, SessionCheck, load_config, parse_config
from gateway.server import GATEWAY, Gateway, build_app
from sandbox.observable import ORIGIN, SANDBOX_LOGIN, ObservableState, create_app
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES, GatewayFactory
from tests.processes import run_cli

LIST = "/v1/observable/notebooks"
VALID = "gateway_upstream_credential_valid"
COOKIE_I = {"upstream": "observable", "credential": "cookie:I"}


def valid(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value(VALID, COOKIE_I)


def expire(obs: ObservableState, signed_out: str = "empty") -> None:
    obs.apply_switches({"session_expired": True, "signed_out": signed_out})


def empty_trash(obs: ObservableState) -> dict[str, Any]:
    """The signed-in user's trash becomes genuinely empty (the session stays alive); what was in it."""
    removed = {k: nb for k, nb in obs.notebooks.items() if nb.type == "trash"}
    for key in removed:
        del obs.notebooks[key]
    return removed


def with_memo(memo: str) -> str:
    """The shipped routes.yaml with the session check's memo set."""
    text = ROUTES.read_text()
    anchor = "\n        expect: login "
    assert anchor in text
    return text.replace(anchor, f"\n        memo: {memo}{anchor}", 1)


async def assert_auth_rejected(resp: Any) -> str:
    body = await resp.json()
    assert resp.status == 502, body
    assert body["error"]["code"] == "upstream_auth_rejected" and body["error"]["route"] == "observable_notebooks"
    message: str = body["error"]["message"]
    return message


# --------------------------------------------------------------------------- config and `gateway check`


def test_the_shipped_observable_upstream_declares_its_session_check() -> None:
    cfg = load_config(ROUTES, env={})
    auth = cfg.upstreams["observable"].auth
    assert auth is not None
    assert auth.check == SessionCheck("/user", ("login",), "cookie:I", 5.0)
    assert cfg.upstreams["posthog"].auth is not None and cfg.upstreams["posthog"].auth.check is None


BAD = """
upstreams:
  api:
    base_url: http://127.0.0.1:1
    auth:
      bearer: {env: API_KEY}
      check: {request: POST /user, expect: "a..b", memo: 10m}
  bare:
    base_url: http://127.0.0.1:1
    auth:
      check: {request: GET /user, expect: login}
  typo:
    base_url: http://127.0.0.1:1
    auth:
      bearer: {env: API_KEY}
      check: {request: GET /user, expects: login}
  query:
    base_url: http://127.0.0.1:1
    auth:
      bearer: {env: API_KEY}
      check: {request: "GET /user?x=1", expect: login}
routes:
  things:
    stable: GET /v1/things
    upstream: api
    targets: [GET /things]
"""


async def test_gateway_check_reports_each_session_check_mistake_with_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        parse_config(BAD, "routes.yaml", {})
    path = tmp_path / "routes.yaml"
    path.write_text(BAD)
    code, out, err = await run_cli("check", str(path), env={})
    text = out + err
    assert code != 0, text
    assert "routes.yaml:7: upstreams.api.auth.check.request: expected 'GET /path'" in text
    assert "upstreams.api.auth.check.expect: expected a dotted field name" in text
    assert "upstreams.api.auth.check.memo: the memo must be longer than 0s and at most 5m" in text
    assert "upstreams.bare.auth.check: a session check needs a credential to check" in text
    assert "upstreams.typo.auth.check.expects: unknown key 'expects' (did you mean 'expect'?)" in text
    assert "upstreams.typo.auth.check: missing required key" not in text  # the misspelt key, reported once
    assert "upstreams.query.auth.check.request: expected 'GET /path'" in text  # no query on the check


# --------------------------------------------------------------------------- the sandbox models both


@pytest.fixture
async def sandbox(aiohttp_client: AiohttpClient) -> tuple[TestClient[Any, Any], ObservableState]:
    state = ObservableState()
    return await aiohttp_client(create_app(state)), state


async def test_the_sandbox_answers_an_expired_session_like_observable_or_with_the_old_401(
    sandbox: tuple[TestClient[Any, Any], ObservableState],
) -> None:
    client, state = sandbox
    signed_in = {"Cookie": f"I={state.session_cookie}; T={state.token}", "Origin": ORIGIN}
    resp = await client.get("/user", headers=signed_in)
    assert resp.status == 200 and (await resp.json())["login"] == SANDBOX_LOGIN
    assert await (await client.get("/user", headers={"Cookie": signed_in["Cookie"]})).json() is None  # no Origin

    expire(state)  # the real API: 200 null and 200 []
    resp = await client.get("/user", headers=signed_in)
    assert resp.status == 200 and await resp.json() is None
    resp = await client.get("/user/documents?types=public", headers=signed_in)
    assert resp.status == 200 and await resp.json() == []

    expire(state, "401")  # the sandbox's older behaviour, kept by a switch
    resp = await client.get("/user", headers=signed_in)
    assert resp.status == 401 and (await resp.json())["errors"][0]["code"] == "SESSION_EXPIRED"
    resp = await client.get("/user/documents?types=public", headers=signed_in)
    assert resp.status == 401

    await client.post("/_sandbox/reset")
    assert len(await (await client.get("/user/documents?types=public", headers=signed_in)).json()) > 0
    bad = await client.post("/_sandbox/faults", json={"signed_out": "maybe"})
    assert bad.status == 400 and state.signed_out == "empty"


# --------------------------------------------------------------------------- live traffic


async def test_an_expired_session_is_a_502_naming_upstream_and_credential_not_an_empty_list(
    make_gateway: GatewayFactory, sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(registry=registry)
    obs = sandboxes.observable_state
    assert (await gw.get(f"{LIST}?limit=2")).status == 200
    assert obs.count("GET", "/user") == 0  # a list with items needs no check

    expire(obs)
    message = await assert_auth_rejected(await gw.get(f"{LIST}?limit=2"))
    assert "'observable'" in message and "cookie:I" in message and "renew" in message
    assert "GET /user answered 200 without 'login'" in message
    assert sandbox_env["OBSERVABLE_SESSION"] not in message
    assert valid(registry) == 0
    errors = {"upstream": "observable", "route": "observable_notebooks", "kind": "credentials_rejected"}
    assert registry.get_sample_value("gateway_upstream_errors_total", errors) == 1
    assert registry.get_sample_value("gateway_route_up", {"route": "observable_notebooks"}) == 0
    info = {"route": "observable_notebooks", "code": "upstream_auth_rejected"}
    assert registry.get_sample_value("gateway_route_failure_info", info) == 1

    # all=true, fan-out and NDJSON streaming: the same error, before anything is sent
    message = await assert_auth_rejected(await gw.get(f"{LIST}?all=true&type=public,shared"))
    resp = await gw.get(f"{LIST}?all=true", headers={"Accept": "application/x-ndjson"})
    await assert_auth_rejected(resp)
    assert obs.count("GET", "/user") == 1  # memoised: a burst of empty lists costs one check

    # the old upstream behaviour (401) is still the same error, by the status mapping
    expire(obs, "401")
    message = await assert_auth_rejected(await gw.get(f"{LIST}?limit=2"))
    assert "(401)" in message


async def test_a_genuinely_empty_list_with_a_live_session_is_served_empty_after_one_check(
    make_gateway: GatewayFactory, sandboxes: Sandboxes
) -> None:
    registry = CollectorRegistry()
    gw = await make_gateway(registry=registry)
    obs = sandboxes.observable_state
    empty_trash(obs)
    answers = await asyncio.gather(*(gw.get(f"{LIST}?type=trash") for _ in range(5)))
    for resp in answers:
        assert resp.status == 200 and await resp.json() == {"items": [], "next_cursor": None}
    assert obs.count("GET", "/user") == 1
    assert valid(registry) == 1
    resp = await gw.get(f"{LIST}?type=trash", headers={"Accept": "application/x-ndjson"})
    assert resp.status == 200 and await resp.read() == b""


def cache_on(sandbox_env: dict[str, str]) -> dict[str, str]:
    return {**sandbox_env, "ROUTEGATE_CACHE": "on"}


async def test_with_the_cache_on_a_dead_session_caches_nothing(
    make_gateway: GatewayFactory, sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    gw = await make_gateway(env=cache_on(sandbox_env))
    obs = sandboxes.observable_state
    expire(obs)
    await assert_auth_rejected(await gw.get(f"{LIST}?limit=3"))
    await assert_auth_rejected(await gw.get(f"{LIST}?limit=3"))  # not cached, not served stale either
    obs.apply_switches({"session_expired": False})  # the operator signed in again
    resp = await gw.get(f"{LIST}?limit=3")
    body = await resp.json()
    assert resp.status == 200 and len(body["items"]) == 3, body
    assert resp.headers["X-Cache"] == "MISS"
    assert (await gw.get(f"{LIST}?limit=3")).headers["X-Cache"] == "HIT"


async def test_an_empty_list_while_the_session_is_unknown_is_served_but_never_cached(
    make_gateway: GatewayFactory, sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    # the check itself fails (its endpoint is gone): the session is unknown
    text = ROUTES.read_text().replace("request: GET /user ", "request: GET /whoami ")
    assert "GET /whoami" in text
    gw = await make_gateway(text, env=cache_on(sandbox_env))
    obs = sandboxes.observable_state
    trash = empty_trash(obs)
    resp = await gw.get(f"{LIST}?type=trash")
    assert resp.status == 200 and (await resp.json())["items"] == []
    assert obs.count("GET", "/whoami") == 1
    obs.notebooks.update(trash)  # the trash fills up again
    resp = await gw.get(f"{LIST}?type=trash")
    assert resp.status == 200 and len((await resp.json())["items"]) == len(trash)
    assert resp.headers["X-Cache"] == "MISS"

    # with the check answering, a live session's empty answer is cached as usual
    live = await make_gateway(env=cache_on(sandbox_env))
    empty_trash(obs)
    assert (await live.get(f"{LIST}?type=trash&limit=7")).headers["X-Cache"] == "MISS"
    obs.notebooks.update(trash)
    resp = await live.get(f"{LIST}?type=trash&limit=7")
    assert resp.headers["X-Cache"] == "HIT" and (await resp.json())["items"] == []


# --------------------------------------------------------------------------- at start and with the probes


def gateway_for(env: dict[str, str], text: str | None = None) -> Gateway:
    cfg = load_config(ROUTES, env=env) if text is None else parse_config(text, str(ROUTES), env)
    return Gateway(cfg, env=env, registry=CollectorRegistry())


async def test_each_probe_round_runs_the_check_and_marks_the_routes_and_credential(
    sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    gw = gateway_for(sandbox_env, with_memo("1s"))
    obs = sandboxes.observable_state
    try:
        results = {r.route: r for r in await gw.prober.run_round()}
        assert {r.outcome for r in results.values()} == {"ok"}, results
        assert valid(gw.registry) == 1 and obs.count("GET", "/user") == 1

        expire(obs)
        await asyncio.sleep(1.1)  # the next round comes after the memo
        results = {r.route: r for r in await gw.prober.run_round()}
        assert valid(gw.registry) == 0
        broken = results["observable_notebooks"]
        assert broken.outcome == "broken" and broken.code == "upstream_auth_rejected", broken
        assert gw.registry.get_sample_value("gateway_route_up", {"route": "observable_notebooks"}) == 0
        assert results["posthog_notebooks"].outcome == "ok"
        assert obs.count("GET", "/user") == 2  # the round's check stood for the empty probe too
    finally:
        await gw.close()


async def test_the_check_runs_at_start_even_with_probes_switched_off(
    aiohttp_client: AiohttpClient, sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path
) -> None:
    expire(sandboxes.observable_state)
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.read_text().replace("\n  interval: 30s", "\n  enabled: false\n  interval: 30s", 1))
    assert load_config(path, env=sandbox_env).probes.enabled is False
    registry = CollectorRegistry()
    client = await aiohttp_client(build_app(path, registry=registry, env=sandbox_env, probes=True))
    for _ in range(200):
        if valid(registry) is not None:
            break
        await asyncio.sleep(0.02)
    assert valid(registry) == 0
    assert client.app[GATEWAY].prober.last_round is None  # no probe round ran: the start check did it
    text = await (await client.get("/metrics")).text()
    assert 'gateway_upstream_credential_valid{credential="cookie:I",upstream="observable"} 0.0' in text


async def test_a_live_verdict_from_before_an_empty_list_does_not_vouch_for_it(
    make_gateway: GatewayFactory, sandboxes: Sandboxes
) -> None:
    """Found by hand on the demo: a check that found the session alive a moment before it died let
    the next empty list through as data (and, with the cache on, into the cache)."""
    gw = await make_gateway(with_memo("5m"))
    obs = sandboxes.observable_state
    empty_trash(obs)
    assert (await gw.get(f"{LIST}?type=trash")).status == 200  # a live session, checked: memo for 5 minutes
    assert obs.count("GET", "/user") == 1
    expire(obs)
    await assert_auth_rejected(await gw.get(f"{LIST}?type=trash"))  # a fresh check, not the memo
    assert obs.count("GET", "/user") == 2
    await assert_auth_rejected(await gw.get(f"{LIST}?type=trash"))  # a dead verdict stands for its memo
    assert obs.count("GET", "/user") == 2
