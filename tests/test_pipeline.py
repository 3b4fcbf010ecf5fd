"""Each route's pipeline is composed once at load, from only the stages the route configures."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from gateway.errors import UpstreamError
from gateway.proxy import Proxy
from gateway.server import GATEWAY
from sandbox.runner import Sandboxes
from tests.fake_upstream import CUT, Reply, start_fake
from tests.helpers.cache import KEYS, LIST, POSTHOG

NO_CACHE = """
upstreams:
  posthog:
    base_url: ${POSTHOG_URL}
    auth: {bearer: {env: POSTHOG_API_KEY}}
routes:
  plain:
    stable: GET /v1/plain/projects/{project_id}/notebooks/{short_id}
    upstream: posthog
    targets: ["GET /api/projects/{project_id}/notebooks/{short_id}/"]
  create:
    stable: POST /v1/plain/projects/{project_id}/notebooks
    upstream: posthog
    targets: ["POST /api/projects/{project_id}/notebooks/"]
"""


def _proxy(gw: Any) -> Proxy:
    proxy: Proxy = gw.server.app[GATEWAY].runtime.proxy
    return proxy


async def test_each_route_lists_only_the_stages_it_configures(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    gw = await make_gateway(POSTHOG, env={**sandbox_env, **KEYS})
    stages = {name: p.stages for name, p in _proxy(gw).pipelines.items()}
    assert stages["ph_list"] == ("validator", "compress", "cache", "account", "params", "collection")
    assert stages["ph_nb"] == ("validator", "cache", "account", "params", "call")
    assert stages["ph_raw"] == ("validator", "account", "params", "call")  # no cache, no pagination
    # a write, where a cache exists (``preconditions``: an If-Match it cannot honour is refused)
    assert stages["ph_create"] == ("preconditions", "account", "params", "body", "invalidate", "call")
    assert stages["ph_delete"] == ("preconditions", "account", "params", "invalidate", "call")  # DELETE sends no body
    # the call-level stack each core runs: one target, no shape, so no fallback or shape code
    calls = {name: p.calls for name, p in _proxy(gw).pipelines.items()}
    assert calls["ph_list"] == ("answered", "status", "upstream")  # its items are mapped by ``collection``
    assert calls["ph_nb"] == calls["ph_create"] == ("mapping", "answered", "status", "upstream")
    assert calls["ph_raw"] == calls["ph_delete"] == ("passthrough", "answered", "status", "upstream")


async def test_a_route_without_cache_runs_no_cache_code(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw = await make_gateway(NO_CACHE, env={**sandbox_env, **KEYS})
    proxy = _proxy(gw)
    assert proxy.cache is None
    assert proxy.pipelines["plain"].stages == ("validator", "account", "params", "call")
    # nothing to invalidate
    assert proxy.pipelines["create"].stages == ("preconditions", "account", "params", "body", "call")
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    resp = await gw.get(f"/v1/plain/projects/1/notebooks/{short_id}")
    assert resp.status == 200 and "X-Cache" not in resp.headers
    created = await gw.post("/v1/plain/projects/1/notebooks", json={"title": "made by a test"})
    assert created.status in (200, 201)


async def test_pipelines_are_built_once_not_per_request(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    gw = await make_gateway(POSTHOG, env={**sandbox_env, **KEYS})
    first = _proxy(gw).pipelines["ph_list"]
    assert (await gw.get(f"{LIST}?limit=1")).status == 200
    assert _proxy(gw).pipelines["ph_list"] is first  # built once, not per request


FAKE = """
upstreams:
  fake:
    base_url: {url}
    retries: {{attempts: 1}}
    circuit_breaker: {{failures: 0}}
    auth: {{bearer: {{env: FAKE_KEY}}}}
routes:
  thing:
    stable: GET /v1/things/{{name}}
    upstream: fake
    targets: ["GET /things/{{name}}"]
  cached:
    stable: GET /v1/cached/{{name}}
    upstream: fake
    targets: ["GET /cached/{{name}}"]
    cache: {{ttl: 60s}}
  raw:
    stable: GET /v1/raw/{{name}}
    upstream: fake
    targets: ["GET /raw/{{name}}"]
    response: {{raw: true}}
"""
KEYED = """
clients:
  keys:
    alice: {key: {env: ALICE_KEY}, rate_limit: 100/s}
"""
FAKE_ENV = {"FAKE_KEY": "fake-upstream-key", "ALICE_KEY": KEYS["ALICE_KEY"]}
ALICE = {"X-API-Key": KEYS["ALICE_KEY"]}


def _access(caplog: pytest.LogCaptureFixture, rid: str) -> dict[str, Any]:
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == rid]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    fields: dict[str, Any] = lines[0].fields  # type: ignore[attr-defined]
    return fields


def _errors(registry: CollectorRegistry, route: str, kind: str) -> float | None:
    labels = {"upstream": "fake", "route": route, "kind": kind}
    return registry.get_sample_value("gateway_upstream_errors_total", labels)


async def test_client_auth_and_limits_are_outermost_and_only_where_configured(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    _, _, url = await start_fake(aiohttp_server)
    keyed = _proxy(await make_gateway(FAKE.format(url=url) + KEYED, env=FAKE_ENV))
    for pipeline in keyed.pipelines.values():
        assert pipeline.stages[:2] == ("auth", "limits")
    assert keyed.pipelines["thing"].stages == ("auth", "limits", "validator", "account", "params", "call")
    # a probe runs the same stages, less the HTTP exchange's: no auth, limits, conventions or cache
    assert keyed.probes["thing"].stages == keyed.probes["cached"].stages == ("account", "params", "call")
    passed = ("passthrough", "answered", "status", "upstream")
    assert keyed.probes["thing"].calls == keyed.pipelines["thing"].calls == passed
    assert keyed.pipelines["raw"].calls == ("raw", "answered", "status", "upstream")
    capped = FAKE.format(url=url) + "server:\n  max_concurrency: 5\n"
    assert _proxy(await make_gateway(capped, env=FAKE_ENV)).pipelines["thing"].stages[0] == "limits"  # no keys
    open_ = _proxy(await make_gateway(FAKE.format(url=url), env=FAKE_ENV))
    assert open_.pipelines["thing"].stages == ("validator", "account", "params", "call")  # neither
    assert open_.pipelines["cached"].stages == ("validator", "cache", "account", "params", "call")


async def test_a_failed_upstream_call_is_counted_once_logged_and_refused_requests_never_reach_it(
    make_gateway: Any, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    fake, _, url = await start_fake(aiohttp_server)
    fake.script("/things/x", Reply(500, body=b'{"detail": "boom"}'))
    registry = CollectorRegistry()
    gw = await make_gateway(FAKE.format(url=url) + KEYED, env=FAKE_ENV, registry=registry)

    resp = await gw.get("/v1/things/x", headers={**ALICE, "X-Request-ID": "t-fail"})
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "upstream_failed" and body["error"]["route"] == "thing"
    await asyncio.sleep(0)  # the access line is written once the answer is on the wire
    line = _access(caplog, "t-fail")
    assert line["client"] == "alice" and line["route"] == "thing" and line["status"] == 502
    assert line["upstream_status"] == 500 and line["upstream_calls"] == 1 and line["error"] == "upstream_failed"
    assert _errors(registry, "thing", "5xx") == 1
    labels = {"upstream": "fake", "route": "thing", "outcome": "5xx"}
    assert registry.get_sample_value("gateway_upstream_requests_total", labels) == 1
    labels = {"route": "thing", "method": "GET", "status_class": "5xx"}
    assert registry.get_sample_value("gateway_requests_total", labels) == 1
    assert registry.get_sample_value("gateway_route_up", {"route": "thing"}) == 0

    refused = await gw.get("/v1/things/x", headers={"X-Request-ID": "t-nokey"})
    assert refused.status == 401 and fake.count("/things/x") == 1  # the auth stage answered: nothing sent
    await asyncio.sleep(0)
    assert _access(caplog, "t-nokey")["client"] is None and _errors(registry, "thing", "5xx") == 1


async def test_one_failed_fill_shared_by_waiting_requests_is_counted_once(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    fake.script("/cached/x", Reply(503, delay=0.3))
    registry = CollectorRegistry()
    gw = await make_gateway(FAKE.format(url=url) + KEYED, env=FAKE_ENV, registry=registry)
    answers = await asyncio.gather(*(gw.get("/v1/cached/x", headers=ALICE) for _ in range(4)))
    assert [a.status for a in answers] == [502] * 4
    assert fake.count("/cached/x") == 1  # one coalesced fill...
    assert _errors(registry, "cached", "5xx") == 1  # ...one failure, however many waited on it


async def test_a_relayed_body_cut_midway_is_counted_once_and_logged(
    make_gateway: Any, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    fake, _, url = await start_fake(aiohttp_server)
    fake.script("/raw/x", CUT)
    registry = CollectorRegistry()
    gw = await make_gateway(FAKE.format(url=url), env=FAKE_ENV, registry=registry)
    resp = await gw.get("/v1/raw/x", headers={"X-Request-ID": "t-cut"})
    assert resp.status == 200  # the head went out before the upstream broke off
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    for _ in range(50):
        if any(getattr(r, "fields", {}).get("request_id") == "t-cut" for r in caplog.records):
            break
        await asyncio.sleep(0.01)
    line = _access(caplog, "t-cut")
    assert line["client"] == "-" and line["error"] == "upstream_reset" and line["upstream_calls"] == 1
    assert _errors(registry, "raw", "reset") == 1  # counted by ``account`` though no exception left the stage
    assert registry.get_sample_value("gateway_route_up", {"route": "raw"}) == 0


async def test_an_ndjson_stream_cut_midway_is_counted_once_and_logged(
    make_gateway: Any, sandboxes: Sandboxes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    registry = CollectorRegistry()
    gw = await make_gateway(registry=registry)
    state = sandboxes.posthog_state
    state.apply_switches({"latency_ms": 300})  # pages 2 and 3 are still upstream when page 1 arrives
    nd = {"Accept": "application/x-ndjson", "X-Request-ID": "t-nd"}
    resp = await gw.get("/v1/posthog/projects/1/notebooks", params={"all": "true"}, headers=nd)
    assert resp.status == 200
    await resp.content.readline()
    state.apply_switches({"faults": {"/api/projects/1/notebooks": {"status": 500}}})
    with pytest.raises(aiohttp.ClientPayloadError):
        while await resp.content.readline():
            pass
    for _ in range(50):
        if any(getattr(r, "fields", {}).get("request_id") == "t-nd" for r in caplog.records):
            break
        await asyncio.sleep(0.01)
    line = _access(caplog, "t-nd")
    assert line["status"] == 200 and line["error"] == "upstream_failed"
    labels = {"upstream": "posthog", "route": "posthog_notebooks", "kind": "5xx"}
    assert registry.get_sample_value("gateway_upstream_errors_total", labels) == 1  # no exception left the stream
    assert registry.get_sample_value("gateway_route_up", {"route": "posthog_notebooks"}) == 0


async def test_a_probe_runs_the_routes_pipeline_counting_a_failure_once_and_marking_the_route_down(
    make_gateway: Any, aiohttp_server: Any
) -> None:
    fake, _, url = await start_fake(aiohttp_server)
    fake.script("/things/x", Reply(500), Reply(200, body=b'{"ok": true}'))
    registry = CollectorRegistry()
    proxy = _proxy(await make_gateway(FAKE.format(url=url), env=FAKE_ENV, registry=registry))
    route = next(r for r in proxy.config.routes if r.name == "thing")
    with pytest.raises(UpstreamError) as failed:
        await proxy.probe(route, {}, {"name": "x"}, "probe-1")
    assert failed.value.code == "upstream_failed" and _errors(registry, "thing", "5xx") == 1
    assert registry.get_sample_value("gateway_route_up", {"route": "thing"}) == 0
    answer = await proxy.probe(route, {}, {"name": "x"}, "probe-2")
    assert answer.status == 200 and answer.body == b'{"ok": true}'
    assert registry.get_sample_value("gateway_route_up", {"route": "thing"}) == 1
    assert _errors(registry, "thing", "5xx") == 1


async def test_the_access_line_counts_the_gone_checks_sample_call(
    gw: Any, sandboxes: Sandboxes, caplog: pytest.LogCaptureFixture
) -> None:
    """A 404 for an id asks the upstream about the probe's known-existing sample before answering
    (gateway.verdict): that exchange is this request's too, and its access line counts it."""
    caplog.set_level(logging.INFO, logger="gateway.access")
    now = [1000.0]
    gw.app[GATEWAY].gone_check._clock = lambda: now[0]
    assert (await gw.get("/v1/observable/notebooks/doesnotexist1")).status == 404  # takes the sample first
    now[0] += 60  # the verdict (kept a few seconds) is old: the next 404 asks the sample again
    state = sandboxes.observable_state
    state.reset_counters()
    resp = await gw.get("/v1/observable/notebooks/doesnotexist2", headers={"X-Request-ID": "gone-404"})
    assert resp.status == 404
    await asyncio.sleep(0)
    sent = [e["path"] for e in state.log]
    assert sent == ["/document/doesnotexist2", "/document/ec3aa314da9bb017"], sent
    assert _access(caplog, "gone-404")["upstream_calls"] == 2
