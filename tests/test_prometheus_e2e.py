"""End to end: a real Prometheus scrapes a real gateway (background probes on) wired to the
sandboxes, evaluates the shipped alert rules, and the alerts name the route that broke, say why,
and resolve once routes.yaml is fixed and reloaded.

The shipped rules are loaded as they are; only their ``for:`` windows are shortened to 1s, and
Prometheus scrapes and evaluates every second, so the whole story takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from gateway.server import GATEWAY, build_app
from sandbox.runner import Sandboxes
from tests.conftest import ROOT, ROUTES, need_binary
from tests.processes import free_port

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


class Prometheus:
    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(self.url + path, params=params) as resp:
            body = await resp.json()
            assert resp.status == 200 and body["status"] == "success", body
            return body["data"]

    async def alerts(self, name: str, state: str = "firing") -> dict[str, dict[str, Any]]:
        """The ``name`` alerts in ``state``, by route."""
        data = await self.get("/api/v1/alerts")
        return {
            a["labels"].get("route", ""): a
            for a in data["alerts"]
            if a["labels"]["alertname"] == name and a["state"] == state
        }

    async def value(self, query: str) -> list[dict[str, Any]]:
        data = await self.get("/api/v1/query", query=query)
        result: list[dict[str, Any]] = data["result"]
        return result


async def until(check: Callable[[], Any], what: str, timeout: float = 25.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.25)


@pytest.fixture
async def gateway_server(sandboxes: Sandboxes, sandbox_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    """The shipped routes.yaml with probes every second, served on a real socket with the prober on."""
    text = ROUTES.read_text().replace("interval: 30s", "interval: 1s").replace("jitter: 5s", "jitter: 200ms")
    assert "interval: 1s" in text
    path = tmp_path / "routes.yaml"
    path.write_text(text)
    app = build_app(path, registry=CollectorRegistry(), env=sandbox_env, probes=True)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def prometheus(gateway_server: TestServer, tmp_path: Path) -> AsyncIterator[Prometheus]:
    binary = need_binary("prometheus")
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"  # the shipped expressions, with windows a test can wait for
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {"job_name": "routegate", "static_configs": [{"targets": [f"127.0.0.1:{gateway_server.port}"]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=log,
    )
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    prom = Prometheus(f"http://127.0.0.1:{port}", session)

    async def ready() -> bool:
        if proc.returncode is not None:
            raise AssertionError("prometheus exited:\n" + (tmp_path / "prometheus.log").read_text()[-3000:])
        try:
            async with session.get(prom.url + "/-/ready") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await until(ready, "Prometheus to start", timeout=30)
        yield prom
    finally:
        await session.close()
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def test_alerts_name_the_broken_route_and_resolve_after_routes_yaml_is_fixed(
    prometheus: Prometheus, gateway_server: TestServer, sandboxes: Sandboxes
) -> None:
    gateway = gateway_server.app[GATEWAY]
    routes_file = Path(gateway.runtime.config.path)

    async def up(route: str) -> float | None:
        result = await prometheus.value(f'gateway_route_up{{job="routegate",route="{route}"}}')
        return float(result[0]["value"][1]) if result else None

    # healthy: the probes have run and Prometheus sees every probed route up, no alert
    await until(lambda: _eq(up("observable_notebooks"), 1.0), "the first probes to be scraped")
    assert await up("posthog_notebooks") == 1.0
    assert await prometheus.alerts("RoutegateRouteDown") == {}
    expiry = await prometheus.value("gateway_upstream_credential_expiry_timestamp_seconds")
    assert [r["metric"]["upstream"] for r in expiry] == ["observable"]  # the I cookie's own expiry

    # case 1: the upstream list route answers 404; case 2: PostHog's list lost the `title` field
    sandboxes.observable_state.apply_switches({"faults": {"/user/documents": {"status": 404}}})
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks": {"drop_field": "title"}}})
    firing = await until(
        lambda: _has(prometheus.alerts("RoutegateRouteDown"), {"observable_notebooks", "posthog_notebooks"}),
        "RoutegateRouteDown to fire for both routes",
    )
    gone, drift = firing["observable_notebooks"], firing["posthog_notebooks"]
    assert gone["labels"]["code"] == "upstream_route_gone" and gone["labels"]["severity"] == "critical"
    assert drift["labels"]["code"] == "shape_drift"
    assert gone["annotations"]["summary"] == "routegate route observable_notebooks is broken (upstream_route_gone)"
    assert "Stable route posthog_notebooks on 127.0.0.1:" in drift["annotations"]["description"]
    assert " is down with shape_drift since 20" in drift["annotations"]["description"]  # a real timestamp
    assert set(firing) == {"observable_notebooks", "posthog_notebooks"}  # routes needing their samples: skipped

    # the operator fixes routes.yaml: a fallback to the old list route, and `title` becomes optional
    # (in the list and in the document route, which shares the mapping and lost the field too)
    sandboxes.observable_state.apply_switches({"legacy_routes": True})
    text = routes_file.read_text()
    fixed = (
        text.replace(
            "      - GET /user/documents?types={type}\n",
            "      - GET /user/documents?types={type}\n      - GET /user/public\n",
        )
        .replace("fields: {short_id: string, title: string|null,", "fields: {short_id: string,")
        .replace("content: object|null, title: string|null}", "content: object|null}")
        .replace(
            "        id: short_id\n        title: title\n",
            "        id: short_id\n        title: {field: title, optional: true}\n",
        )
    )
    assert fixed.count("GET /user/public") == 1 and fixed.count("title: {field: title, optional: true}") == 2
    assert "title: string|null}" not in fixed.split("posthog_notebooks:")[1]
    routes_file.write_text(fixed)
    gateway.reload()  # what SIGHUP, the file watcher and POST /admin/reload do; probes run at once

    await until(lambda: _none(prometheus.alerts("RoutegateRouteDown")), "RoutegateRouteDown to resolve")
    assert await up("observable_notebooks") == 1.0 and await up("posthog_notebooks") == 1.0
    # the fix works through the fallback target: the migration alert says so, naming route and target
    fallback = await until(lambda: prometheus.alerts("RoutegateFallbackInUse"), "RoutegateFallbackInUse")
    assert fallback["observable_notebooks"]["labels"]["target"] == "1"
    # and nothing else is alerting about this healthy gateway
    others = await prometheus.get("/api/v1/alerts")
    names = {a["labels"]["alertname"] for a in others["alerts"] if a["state"] == "firing"}
    names.discard("RoutegateProbesNotRunning")  # 3 x a 1s interval: too tight to assert under CI load
    assert names <= {"RoutegateFallbackInUse", "RoutegateUpstreamErrorRatioHigh"}, [
        (a["labels"], a["annotations"]["summary"]) for a in others["alerts"]
    ]


async def test_a_single_403_on_a_write_route_pages_though_its_series_appears_at_1(
    prometheus: Prometheus, gateway_server: TestServer, sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    """One PATCH refused 403 (a key without notebook:write; no probe calls a write route): the error's
    child appears on /metrics already at 1, which increase() does not count, and the alert still fires."""
    forbidden = 'gateway_upstream_errors_total{job="routegate",kind="forbidden"}'
    await until(lambda: prometheus.value('gateway_start_time_seconds{job="routegate"}'), "the first scrape")
    assert await prometheus.value(forbidden) == []  # no zero child before the first 403
    state = sandboxes.posthog_state
    short_id = state.visible(1)[0].short_id
    state.apply_switches({"key_scopes": {sandbox_env["POSTHOG_API_KEY"]: ["notebook:read", "activity_log:read"]}})
    url = f"http://127.0.0.1:{gateway_server.port}/v1/posthog/projects/1/notebooks/{short_id}"
    async with aiohttp.ClientSession() as client, client.patch(url, json={"title": "renamed"}) as resp:
        err = (await resp.json())["error"]
    assert resp.status == 502 and err["code"] == "upstream_forbidden", err

    firing = await until(lambda: prometheus.alerts("RoutegateCredentialForbidden"), "RoutegateCredentialForbidden")
    assert set(firing) == {"posthog_notebook_update"}
    alert = firing["posthog_notebook_update"]
    assert alert["labels"]["upstream"] == "posthog" and alert["labels"]["severity"] == "critical"
    assert [float(r["value"][1]) for r in await prometheus.value(forbidden)] == [1.0]
    # what the alert used to read alone sees nothing: the jump from no series to 1 is no increase
    assert await prometheus.value(f"increase({forbidden}[10m]) > 0") == []
    assert await prometheus.alerts("RoutegateCredentialRejected") == {}  # a 403 is no credential to renew


async def _eq(value: Any, expected: float) -> bool:
    return bool(await value == expected)


async def _has(alerts: Any, routes: set[str]) -> dict[str, Any] | None:
    got: dict[str, Any] = await alerts
    return got if routes <= set(got) else None


async def _none(alerts: Any) -> bool:
    return not await alerts
