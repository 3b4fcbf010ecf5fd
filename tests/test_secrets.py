"""Secrets never leak: not into logs, metrics, error bodies, response headers or upstream URLs.

Recognisable test secrets (the PostHog bearer, both Observable cookies, two client keys
and an admin key) are configured the way an operator would (env vars), then a mix of
successes and failures is driven through real HTTP against the sandboxes: credential
rejections, upstream 5xx, shape drift, throttling, bad requests, wrong and missing keys,
admin calls.  Every log record (at DEBUG, before any redaction), ``/metrics``, every
response (status line, headers, body) and every query string the sandboxes received is
then searched for each secret.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.server import build_app
from sandbox.observable import ObservableState
from sandbox.posthog import PostHogState
from sandbox.runner import Sandboxes, start_sandboxes

pytestmark = pytest.mark.hostile

ROUTES = Path(__file__).resolve().parent.parent / "routes.yaml"

BEARER = "phx_TESTSECRET_bearer_5c1e9a7b3d"
T_TOKEN = "TESTSECRET_observable_T_8f2d4b6a"
READER = "TESTSECRET-client-reader-4a8c2e"
WRITER = "TESTSECRET-client-writer-7b1d3f"
ADMIN = "TESTSECRET-admin-ops-9e5a1c"


@pytest.fixture
async def secret_sandboxes() -> AsyncIterator[Sandboxes]:
    obs = ObservableState()
    obs.token = T_TOKEN
    async with await start_sandboxes(observable_state=obs, posthog_state=PostHogState(api_keys={BEARER})) as sb:
        yield sb


def _routes_with_keys(tmp_path: Path) -> Path:
    doc = yaml.safe_load(ROUTES.read_text())
    doc["clients"] = {
        "keys": {
            "reader": {"key": {"env": "READER_KEY"}, "methods": ["GET"]},
            "writer": {"key": {"env": "WRITER_KEY"}},
        }
    }
    doc["admin"] = {"keys": {"ops": {"key": {"env": "ADMIN_KEY"}}}}
    path = tmp_path / "routes-with-keys.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


async def test_no_secret_appears_anywhere(
    aiohttp_client: Any, secret_sandboxes: Sandboxes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sb = secret_sandboxes
    session = sb.observable_state.session_cookie  # the signed I cookie, itself a secret
    secrets = {"bearer": BEARER, "cookie I": session, "cookie T": T_TOKEN, "reader": READER, "writer": WRITER}
    secrets["admin"] = ADMIN
    env = {
        "OBSERVABLE_API_URL": sb.observable_url,
        "POSTHOG_URL": sb.posthog_url,
        "OBSERVABLE_SESSION": session,
        "OBSERVABLE_TOKEN": T_TOKEN,
        "POSTHOG_API_KEY": BEARER,
        "READER_KEY": READER,
        "WRITER_KEY": WRITER,
        "ADMIN_KEY": ADMIN,
        "ROUTEGATE_CACHE": "off",  # the flow below needs each request to reach the upstream
    }
    registry = CollectorRegistry()
    gw: TestClient[Any, Any] = await aiohttp_client(build_app(_routes_with_keys(tmp_path), registry=registry, env=env))
    seen: list[str] = []

    async def call(method: str, path: str, key: str | None, expect: int, **kw: Any) -> ClientResponse:
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        resp = await gw.request(method, path, headers=headers, **kw)
        text = await resp.text()
        seen.append(f"{resp.status} {resp.reason}\n{dict(resp.headers)}\n{text}")
        assert resp.status == expect, (method, path, text)
        return resp

    ph = "/v1/posthog/projects/1/notebooks"
    # successes, with both key styles
    await call("GET", "/v1/observable/notebooks?limit=3", READER, 200)
    await call("GET", "/v1/observable/notebooks?type=public,shared&limit=5", None, 200, headers={"X-API-Key": READER})
    listing = await (await call("GET", f"{ph}?limit=2", READER, 200)).json()
    short_id = listing["items"][0]["id"]
    await call("GET", f"{ph}/{short_id}", READER, 200)
    created = await (await call("POST", ph, WRITER, 201, json={"title": "secret test"})).json()
    await call("GET", f"/v1/observable/notebooks/{listing['items'][0]['id']}/version", READER, 404)
    # client mistakes: missing, wrong and near-miss keys, a read-only key writing, bad input
    await call("GET", ph, None, 401)
    await call("GET", ph, "not-a-key", 401)
    await call("GET", ph, READER[:-1] + "x", 401)
    await call("GET", ph, None, 401, headers={"X-API-Key": WRITER + "0"})
    await call("POST", ph, READER, 403, json={"title": "x"})
    await call("POST", ph, WRITER, 400, data=b'{"title": ', headers={"Content-Type": "application/json"})
    await call("GET", f"{ph}?limit=2&api_key=whatever", READER, 400)
    await call("GET", "/v1/observable/notebooks/..%2f..%2fuser", READER, 400)
    # admin endpoints: only the admin key works
    await call("POST", "/admin/reload", READER, 401)
    await call("POST", "/admin/reload", None, 401)
    await call("POST", "/admin/reload", ADMIN, 200)
    # upstream trouble: 5xx, shape drift, throttling, then rejected credentials
    sb.observable_state.apply_switches({"faults": {"/user/documents": {"status": 500}}})
    await call("GET", "/v1/observable/notebooks?limit=1", READER, 502)
    sb.observable_state.reset_switches()
    sb.posthog_state.apply_switches({"faults": {"/api/projects/1/notebooks": {"drop_field": "title"}}})
    await call("GET", f"{ph}?limit=2", READER, 502)
    sb.posthog_state.reset_switches()
    sb.posthog_state.api_keys = {"phx_some_other_key"}  # the gateway's key is now rejected upstream
    await call("GET", "/v1/posthog/projects/2/notebooks?limit=1", READER, 502)
    sb.posthog_state.api_keys = {BEARER}
    sb.posthog_state.rate_limit_per_minute = 1
    await call("GET", f"{ph}/{short_id}", READER, 200)
    await call("PATCH", f"{ph}/{created['id']}", WRITER, 503, json={"title": "renamed"})
    await call("GET", f"{ph}/{short_id}", READER, 503)  # answered from the upstream's block
    sb.observable_state.token = "rotated"
    await call("GET", "/v1/observable/notebooks?limit=1", READER, 502)
    # the gateway's own endpoints
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        resp = await gw.get(path)
        seen.append(await resp.text())
    await call("GET", "/v1/nothing", READER, 404)

    metrics = (await (await gw.get("/metrics")).read()).decode()
    logs = [caplog.text] + [repr(r.__dict__) + r.getMessage() for r in caplog.records]
    upstream_urls = [f"{e['path']}?{e['query_string']}" for e in sb.observable_state.log + sb.posthog_state.log]
    places = {
        "logs": "\n".join(logs),
        "metrics": metrics,
        "responses": "\n".join(seen),
        "upstream URLs": "\n".join(upstream_urls),
    }
    # the test is alive: credentials were used, errors were answered, things were logged
    assert any(e["has_auth"] for e in sb.posthog_state.log) and any(e["has_auth"] for e in sb.observable_state.log)
    assert "upstream_auth_rejected" in places["responses"] and "invalid_api_key" in places["responses"]
    assert "reader" in places["logs"] or "reader" in places["responses"]
    assert len(caplog.records) > 10 and "gateway_requests_total" in metrics
    for where, text in places.items():
        for what, value in secrets.items():
            assert value not in text, f"the {what} secret leaked into {where}"
