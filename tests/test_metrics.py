"""/metrics as an operator reads it: route health with reason and since-when, credential expiry,
bounded labels, and an exposition `promtool check metrics` accepts."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gateway.server import GATEWAY
from sandbox.observable import make_session_cookie
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES, need_binary

#: stable calls in these tests must reach the upstream, never the response cache
FRESH = {"Cache-Control": "no-store"}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


async def scrape(gw: Any) -> str:
    resp = await gw.get("/metrics")
    assert resp.status == 200
    text: str = await resp.text()
    return text


async def test_route_health_says_which_route_broke_why_and_since_when(make_gateway: Any, sandboxes: Sandboxes) -> None:
    gw = await make_gateway()
    text = await scrape(gw)
    # every route is listed from the start, but unknown (NaN), so no alert fires without evidence
    up = value(text, "gateway_route_up", route="observable_notebooks")
    assert up is not None and math.isnan(up)

    resp = await gw.get("/v1/observable/notebooks?limit=2", headers=FRESH)
    assert resp.status == 200
    text = await scrape(gw)
    assert value(text, "gateway_route_up", route="observable_notebooks") == 1
    went_up = value(text, "gateway_route_last_change_timestamp_seconds", route="observable_notebooks")
    assert went_up is not None and abs(went_up - time.time()) < 60

    sandboxes.observable_state.apply_switches({"faults": {"/user/documents": {"status": 404}}})
    before = time.time()
    resp = await gw.get("/v1/observable/notebooks?limit=2", headers=FRESH)
    assert resp.status == 502
    text = await scrape(gw)
    assert value(text, "gateway_route_up", route="observable_notebooks") == 0
    assert value(text, "gateway_route_failure_info", route="observable_notebooks", code="upstream_route_gone") == 1
    since = value(text, "gateway_route_last_change_timestamp_seconds", route="observable_notebooks")
    assert since is not None and since >= before - 1
    # a second failure keeps "since" where the breakage started
    await asyncio.sleep(0.05)
    assert (await gw.get("/v1/observable/notebooks?limit=2", headers=FRESH)).status == 502
    text = await scrape(gw)
    assert value(text, "gateway_route_last_change_timestamp_seconds", route="observable_notebooks") == since

    # the reason changes with the failure: now the items lost a field the route maps
    sandboxes.observable_state.reset_switches()
    sandboxes.observable_state.apply_switches({"faults": {"/user/documents": {"drop_field": "likes"}}})
    assert (await gw.get("/v1/observable/notebooks?limit=2", headers=FRESH)).status == 502
    text = await scrape(gw)
    assert value(text, "gateway_route_failure_info", route="observable_notebooks", code="shape_drift") == 1
    assert value(text, "gateway_route_failure_info", route="observable_notebooks", code="upstream_route_gone") is None

    sandboxes.observable_state.reset_switches()
    assert (await gw.get("/v1/observable/notebooks?limit=2", headers=FRESH)).status == 200
    text = await scrape(gw)
    assert value(text, "gateway_route_up", route="observable_notebooks") == 1
    assert 'gateway_route_failure_info{code="shape_drift"' not in text
    # other routes were never touched: still unknown
    other = value(text, "gateway_route_up", route="posthog_notebooks")
    assert other is not None and math.isnan(other)


async def test_a_client_mistake_does_not_mark_the_route_down(make_gateway: Any, sandboxes: Sandboxes) -> None:
    gw = await make_gateway()
    assert (await gw.get("/v1/observable/notebooks/0000000000000000", headers=FRESH)).status == 404  # no such notebook
    assert (await gw.get("/v1/observable/notebooks?type=nope", headers=FRESH)).status == 400
    text = await scrape(gw)
    up = value(text, "gateway_route_up", route="observable_notebook")
    assert up is not None and math.isnan(up)
    # the 404's probe-sample check probed the list its sample comes from (gateway.verdict): up, never down
    assert value(text, "gateway_route_up", route="observable_notebooks") == 1


async def test_upstream_401_counts_as_credential_rejected(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    env = {**sandbox_env, "POSTHOG_API_KEY": "phx_revoked_key_000000000000000000000000"}
    gw = await make_gateway(env=env)
    resp = await gw.get("/v1/posthog/projects/1/notebooks", headers=FRESH)
    body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "upstream_auth_rejected"
    assert "renew" in body["error"]["message"]
    text = await scrape(gw)
    labels = {"upstream": "posthog", "route": "posthog_notebooks", "kind": "credentials_rejected"}
    assert value(text, "gateway_upstream_errors_total", **labels) == 1
    assert value(text, "gateway_route_failure_info", route="posthog_notebooks", code="upstream_auth_rejected") == 1
    assert "phx_revoked" not in text


async def test_credential_expiry_is_exported_and_follows_the_cookie_file(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes, tmp_path: Path
) -> None:
    """The I cookie's own expiry is exported; renewing the cookie file changes it without a restart."""
    cookies = tmp_path / "observable-cookies.json"
    first = int((time.time() + 3 * 86400) * 1000)
    cookies.write_text(json.dumps({"I": make_session_cookie(first), "T": "t"}))
    env = {k: v for k, v in sandbox_env.items() if k not in ("OBSERVABLE_SESSION", "OBSERVABLE_TOKEN")}
    env["OBSERVABLE_COOKIES_FILE"] = str(cookies)
    gw = await make_gateway(env=env)
    name = "gateway_upstream_credential_expiry_timestamp_seconds"
    text = await scrape(gw)
    assert value(text, name, upstream="observable", credential="cookie:I") == pytest.approx(first / 1000)

    # the operator renews the session: the sandbox accepts the new cookie, the file is rewritten
    renewed = int((time.time() + 7 * 86400) * 1000)
    state = sandboxes.observable_state
    state.session_cookie = make_session_cookie(renewed)
    cookies.write_text(json.dumps({"I": state.session_cookie, "T": state.token}))
    os.utime(cookies, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a new mtime even on coarse clocks
    text = await scrape(gw)
    assert value(text, name, upstream="observable", credential="cookie:I") == pytest.approx(renewed / 1000)
    assert (
        await gw.get("/v1/observable/notebooks?limit=1", headers=FRESH)
    ).status == 200  # and it is the cookie in use
    assert state.session_cookie not in text

    # a cookie without a readable expiry is simply not exported (never an error, never the value)
    cookies.write_text(json.dumps({"I": "not-a-session-cookie", "T": "t"}))
    os.utime(cookies, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    text = await scrape(gw)
    assert value(text, name, upstream="observable", credential="cookie:I") is None
    assert "not-a-session-cookie" not in text


async def test_labels_stay_bounded_whatever_clients_send(make_gateway: Any, sandboxes: Sandboxes) -> None:
    gw = await make_gateway()
    ids = [nb.id for nb in sandboxes.observable_state.by_kind("public")[:5]]
    for nb_id in ids:
        assert (await gw.get(f"/v1/observable/notebooks/{nb_id}", headers=FRESH)).status == 200
    for junk in ("a" * 40, "x%2Fy", "does-not-exist"):
        await gw.get(f"/v1/observable/nothing/{junk}", headers=FRESH)
        await gw.get(f"/v1/observable/notebooks/{junk}", headers=FRESH)
    text = await scrape(gw)
    routes = {r.split(":")[0].strip() for r in re.findall(r"^  ([a-z_]+):$", ROUTES.read_text(), re.M)}
    for (_name, labels), _v in samples(text).items():
        label = dict(labels)
        if "route" in label:
            assert label["route"] in routes | {"(none)"}, label
        for v in label.values():
            assert not any(nb_id in v for nb_id in ids), label
            assert "does-not-exist" not in v and "aaaa" not in v and "x%2F" not in v, label


async def test_reload_removes_the_series_of_a_removed_route(make_gateway: Any, sandboxes: Sandboxes) -> None:
    text = ROUTES.read_text()
    registry = CollectorRegistry()
    gw = await make_gateway(text, registry=registry)
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks": {"status": 500}}})
    assert (await gw.get("/v1/posthog/projects/1/notebooks/abc/activity", headers=FRESH)).status == 502
    assert registry.get_sample_value("gateway_route_up", {"route": "posthog_notebook_activity"}) == 0
    gateway = gw.app[GATEWAY]
    # the route's whole block, up to the next route (or the end of the file)
    trimmed = re.sub(r"(?ms)^  posthog_notebook_activity:\n.*?(?=^  \S|\Z)", "", text)
    assert "  posthog_notebook_activity:" not in trimmed
    path = Path(gateway.runtime.config.path)
    path.write_text(trimmed)
    gateway.reload()
    assert registry.get_sample_value("gateway_route_up", {"route": "posthog_notebook_activity"}) is None
    assert (
        registry.get_sample_value(
            "gateway_route_failure_info", {"route": "posthog_notebook_activity", "code": "upstream_failed"}
        )
        is None
    )
    # an invalid file is refused and its failure time exported for RoutegateConfigReloadFailed
    path.write_text(trimmed + "\n  broken_route: {stable: GET /x}\n")
    with pytest.raises(Exception, match="missing required key"):
        gateway.reload()
    failed = registry.get_sample_value("gateway_config_last_reload_failure_timestamp_seconds")
    succeeded = registry.get_sample_value("gateway_config_last_reload_success_timestamp_seconds")
    assert failed is not None and succeeded is not None and failed >= succeeded


async def test_promtool_accepts_the_exposition(make_gateway: Any, sandboxes: Sandboxes) -> None:
    promtool = need_binary("promtool")
    gw = await make_gateway()
    # exercise every family: success, fallback-free failure, shape drift, a 404, a cached route if any
    await gw.get("/v1/observable/notebooks?limit=3", headers=FRESH)
    await gw.get("/v1/posthog/projects/1/notebooks?limit=3", headers=FRESH)
    sandboxes.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks": {"drop_field": "title"}}})
    await gw.get("/v1/posthog/projects/1/notebooks?limit=3", headers=FRESH)
    await gw.get("/v1/observable/notebooks/0000000000000000", headers=FRESH)
    text = await scrape(gw)
    assert "_created" not in text, "no _created series: nobody asked for them"
    proc = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(text.encode())
    assert proc.returncode == 0, out.decode()
    assert out.decode().strip() == "", out.decode()  # not even a lint warning
