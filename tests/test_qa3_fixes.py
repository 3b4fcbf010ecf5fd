"""Fixes from the third hands-on QA pass that are not another module's: a PostHog create refusing a
field PostHog would ignore, a conditional write refused, and a late failure of a removed route."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.server import GATEWAY, build_app
from sandbox.runner import Sandboxes
from tests.fake_upstream import Reply, start_fake

PH_BASE = "/v1/posthog/projects/1/notebooks"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"titel": "typo"}, "titel: unknown field (writable: title, content, text_content, version, deleted)"),
        ({"title": "x", "short_id": "abc"}, "short_id: read-only (PostHog ignores it;"),
        ({"title": 3}, "title: must be a string or null, got a number"),
        ({"version": "2"}, "version: must be an integer"),
    ],
)
async def test_a_create_with_a_field_posthog_would_ignore_is_refused_and_never_sent(
    sandboxes: Sandboxes, gw: TestClient[Any, Any], body: dict[str, Any], problem: str
) -> None:
    """``{"titel": "typo"}`` made an untitled, empty notebook and answered 201 (PATCH already refused it)."""
    state = sandboxes.posthog_state
    before = len(state.visible(1))
    resp = await gw.post(PH_BASE, json=body)
    assert resp.status == 422, await resp.text()
    err = (await resp.json())["error"]
    assert err["code"] == "invalid_document" and err["route"] == "posthog_notebook_create"
    assert any(d.startswith(problem) for d in err["details"]), err["details"]
    assert state.count("POST", "/api/projects/1/notebooks/") == 0
    assert len(state.visible(1)) == before


async def test_a_create_of_writable_fields_or_of_nothing_is_forwarded(
    sandboxes: Sandboxes, gw: TestClient[Any, Any]
) -> None:
    content = {"type": "doc", "content": []}
    made = await gw.post(PH_BASE, json={"title": "New", "content": content, "text_content": ""})
    assert made.status == 201, await made.text()
    assert (await made.json())["title"] == "New"
    untitled = await gw.post(PH_BASE, json={})  # an untitled notebook, as PostHog makes one
    assert untitled.status == 201, await untitled.text()
    assert sandboxes.posthog_state.count("POST", "/api/projects/1/notebooks/") == 2


@pytest.mark.parametrize(
    ("method", "header"),
    [
        ("PATCH", ("If-Match", 'W/"000000000000000000000000"')),
        ("PATCH", ("If-None-Match", "*")),
        ("DELETE", ("If-Match", '"nope"')),
        ("PATCH", ("If-Unmodified-Since", "Sat, 05 Dec 2026 00:00:00 GMT")),
    ],
)
async def test_a_conditional_write_is_refused_never_forwarded_without_its_condition(
    sandboxes: Sandboxes, gw: TestClient[Any, Any], method: str, header: tuple[str, str]
) -> None:
    """The write was applied with its condition ignored: a read-modify-write expecting a 412 overwrote
    whatever changed in between."""
    state = sandboxes.posthog_state
    nb = state.visible(1)[0]
    title = nb.title
    body = {"title": "x"} if method == "PATCH" else None
    resp = await gw.request(method, f"{PH_BASE}/{nb.short_id}", json=body, headers=dict([header]))
    assert resp.status == 400, await resp.text()
    err = (await resp.json())["error"]
    assert err["code"] == "precondition_unsupported" and header[0] in err["message"]
    assert state.count("PATCH", f"/api/projects/1/notebooks/{nb.short_id}/") == 0
    assert nb.title == title and not nb.deleted
    # the same write without the condition goes through
    resp = await gw.request(method, f"{PH_BASE}/{nb.short_id}", json=body)
    assert resp.status in (200, 204), await resp.text()


RACE_YAML = """
upstreams:
  origin:
    base_url: ${ORIGIN_URL}
    retries: {attempts: 1}
routes:
  kept:
    stable: GET /v1/kept/{id}
    upstream: origin
    auth: none
    targets: ["GET /kept/{id}"]
  dropped:
    stable: GET /v1/dropped/{id}
    upstream: origin
    auth: none
    targets: ["GET /dropped/{id}"]
"""


async def test_a_request_finishing_after_a_reload_removed_its_route_brings_no_series_back(
    aiohttp_client: Any, aiohttp_server: Any, tmp_path: Path
) -> None:
    """A request in flight on the old config, failing after the reload that removed its route, marked the
    route down again: ``gateway_route_up`` 0 came back for a route that no longer exists and paged for ever
    (found with ``--workers``, where the reload's NaN was then older than the late 0)."""
    fake, _server, url = await start_fake(aiohttp_server)
    fake.script("/dropped/1", Reply(500, delay=0.5))
    path = tmp_path / "routes.yaml"
    path.write_text(RACE_YAML)
    registry = CollectorRegistry()
    gw = await aiohttp_client(build_app(path, registry=registry, env={"ORIGIN_URL": url}))
    slow = asyncio.ensure_future(gw.get("/v1/dropped/1"))
    while not fake.hits:  # the request is with the upstream
        await asyncio.sleep(0.01)
    path.write_text(RACE_YAML.split("  dropped:")[0])
    gw.app[GATEWAY].reload(path)
    resp = await slow
    assert resp.status == 502  # answered on the config it began with
    assert registry.get_sample_value("gateway_route_up", {"route": "dropped"}) is None
    assert registry.get_sample_value("gateway_route_failure_info", {"route": "dropped", "code": "upstream_failed"}) in (
        None,
        0.0,
    )
    assert "dropped" not in await (await gw.get("/status")).text()


HOSTS_YAML = """
server:
  allowed_hosts: [routegate, "*.svc", "${ROUTEGATE_PUBLIC_HOST:-localhost}"]
upstreams:
  origin: {base_url: "${ORIGIN_URL}"}
routes:
  thing:
    stable: GET /v1/things/{id}
    upstream: origin
    auth: none
    targets: ["GET /things/{id}"]
"""


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("https://routegate.example.com", "is a URL, not a host name (no scheme); write the name alone, e.g. "),
        ("routegate.example.com/", "has a path"),
        ("a.example.com,b.example.com", "holds several names: give each its own list item"),
        ("routegate.example.com:443", "has a port; the Host's port is ignored"),
        ("bad host!", "is not a host name"),
        ("*.example.com:443", "has a port; the Host's port is ignored; write the name alone, e.g. '*.example.com'"),
        ("[::1]:8080", "has a port; the Host's port is ignored; write the name alone, e.g. '[::1]'"),
    ],
)
def test_an_allowed_host_that_could_never_match_is_a_config_problem(tmp_path: Path, value: str, why: str) -> None:
    """``ROUTEGATE_PUBLIC_HOST=https://routegate.example.com`` passed ``check``; then every request through the
    ingress was a 421 telling the operator to add the name they had added."""
    path = tmp_path / "routes.yaml"
    path.write_text(HOSTS_YAML)
    env = {**os.environ, "ROUTEGATE_PUBLIC_HOST": value, "ORIGIN_URL": "http://127.0.0.1:9"}
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode != 0
    assert f"{path}:3: server.allowed_hosts: {value!r} {why}" in out.stdout + out.stderr


async def test_a_host_name_from_the_environment_is_served(aiohttp_client: Any, tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(HOSTS_YAML)
    env = {"ROUTEGATE_PUBLIC_HOST": "routegate.example.com", "ORIGIN_URL": "http://127.0.0.1:9"}
    gw = await aiohttp_client(build_app(path, registry=CollectorRegistry(), env=env))
    assert (await gw.get("/healthz", headers={"Host": "routegate.example.com:443"})).status == 200
    refused = await gw.get("/healthz", headers={"Host": "other.example.com"})
    assert refused.status == 421


async def test_collection_gets_declare_the_409_a_walk_can_end_in(gw: TestClient[Any, Any]) -> None:
    """collection_changed, route_changed and cursor_outdated are 409s on GET; /openapi.json declared 409 only
    for writes, so a generated client met them as ``default``."""
    doc = await (await gw.get("/openapi.json")).json()
    listing = doc["paths"]["/v1/posthog/projects/{project_id}/notebooks"]["get"]["responses"]
    described = listing["409"]["description"]
    assert all(code in described for code in ("collection_changed", "route_changed", "cursor_outdated"))
    item = doc["paths"]["/v1/posthog/projects/{project_id}/notebooks/{short_id}"]["get"]["responses"]
    assert "409" not in item  # one entity: no walk


def test_a_url_with_a_password_in_allowed_hosts_is_named_without_it(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(HOSTS_YAML)
    env = {**os.environ, "ROUTEGATE_PUBLIC_HOST": "https://admin:s3cret@routegate.example.com", "ORIGIN_URL": "x"}
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    text = out.stdout + out.stderr
    assert out.returncode != 0 and "s3cret" not in text and "admin" not in text
    assert (
        "'https://…@routegate.example.com' is a URL, not a host name (no scheme); write the name alone, e.g. "
        "'routegate.example.com'" in text
    )


@pytest.mark.parametrize(
    ("listed", "host"), [("198.51.100.20", "198.51.100.20"), ("[2001:DB8::1]", "[2001:db8:0::1]:8443")]
)
async def test_an_address_listed_in_allowed_hosts_is_served(
    aiohttp_client: Any, tmp_path: Path, listed: str, host: str
) -> None:
    """An IP entry passed check but was never consulted (an IP Host was judged only as loopback or the bound
    address): every request was a 421 saying to add what was already there."""
    path = tmp_path / "routes.yaml"
    path.write_text(HOSTS_YAML)
    env = {"ROUTEGATE_PUBLIC_HOST": listed, "ORIGIN_URL": "http://127.0.0.1:9"}
    gw = await aiohttp_client(build_app(path, registry=CollectorRegistry(), env=env))
    assert (await gw.get("/healthz", headers={"Host": host})).status == 200
    assert (await gw.get("/healthz", headers={"Host": "198.51.100.21"})).status == 421
