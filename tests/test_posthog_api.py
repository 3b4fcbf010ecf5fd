"""The stable PostHog API, driven through the gateway against the PostHog sandbox."""

from __future__ import annotations

import io
from typing import Any

from aiohttp.test_utils import TestClient

from sandbox.runner import Sandboxes

BASE = "/v1/posthog/projects/1/notebooks"


async def _req(gw: TestClient[Any, Any], method: str, url: str, status: int, **kw: Any) -> Any:
    resp = await gw.request(method, url, **kw)
    body = await resp.json() if resp.content_length else None
    assert resp.status == status, body
    return body


async def test_list_pages_by_offset_cursor(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    state = sandboxes.posthog_state
    expected = [nb.short_id for nb in state.visible(1)]
    assert len(expected) == 250  # the seeded soft-deleted ones are not listed
    page = await _req(gw, "GET", BASE, 200)
    assert len(page["items"]) == 50
    assert set(page["items"][0]) == {"id", "title", "created_at", "updated_at"}
    walked = page["items"]
    cursor = page["next_cursor"]
    while cursor:
        page = await _req(gw, "GET", f"{BASE}?limit=200&cursor={cursor}", 200)
        walked += page["items"]
        cursor = page["next_cursor"]
    assert [i["id"] for i in walked] == expected
    updated = [i["updated_at"] for i in walked]
    assert updated == sorted(updated, reverse=True)


async def test_all_true_aggregates_every_page(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    state = sandboxes.posthog_state
    body = await _req(gw, "GET", f"{BASE}?all=true", 200)
    assert body["next_cursor"] is None
    assert [i["id"] for i in body["items"]] == [nb.short_id for nb in state.visible(1)]
    # pages of 100 (the upstream default): 250 items → 3 upstream calls, no more
    assert state.count("GET", "/api/projects/1/notebooks/") == 3


async def test_detail_update_conflict_delete_activity(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    state = sandboxes.posthog_state
    nb = state.visible(1)[5]
    detail = await _req(gw, "GET", f"{BASE}/{nb.short_id}", 200)
    assert detail["id"] == nb.short_id
    assert detail["content"]["type"] == "doc"
    version = detail["version"]

    renamed = await _req(gw, "PATCH", f"{BASE}/{nb.short_id}", 200, json={"title": "Renamed by script"})
    assert renamed["title"] == "Renamed by script"

    stale = {"content": {"type": "doc", "content": []}, "version": version - 1}
    err = await _req(gw, "PATCH", f"{BASE}/{nb.short_id}", 409, json=stale)
    assert err["error"]["message"] == "Someone else edited the Notebook"
    assert err["error"]["route"] == "posthog_notebook_update"

    fresh = {"content": {"type": "doc", "content": []}, "version": version}
    updated = await _req(gw, "PATCH", f"{BASE}/{nb.short_id}", 200, json=fresh)
    assert updated["version"] == version + 1

    activity = await _req(gw, "GET", f"{BASE}/{nb.short_id}/activity", 200)
    assert activity["next_cursor"] is None
    assert [a["activity"] for a in activity["items"]] == ["updated", "updated", "created"]
    assert set(activity["items"][0]) == {"activity", "created_at", "user", "detail"}

    resp = await gw.delete(f"{BASE}/{nb.short_id}")
    assert resp.status == 204
    assert await resp.read() == b""
    assert state.count("DELETE", f"/api/projects/1/notebooks/{nb.short_id}/") == 0
    assert state.count("PATCH", f"/api/projects/1/notebooks/{nb.short_id}/") == 4
    await _req(gw, "GET", f"{BASE}/{nb.short_id}", 404)
    listing = await _req(gw, "GET", f"{BASE}?all=true", 200)
    assert nb.short_id not in {i["id"] for i in listing["items"]}


async def test_create(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    created = await _req(gw, "POST", BASE, 201, json={"title": "New one"})
    assert created["title"] == "New one"
    first = await _req(gw, "GET", f"{BASE}?limit=1", 200)
    assert first["items"][0]["id"] == created["id"]


async def test_bad_bodies_are_refused_before_forwarding(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    nb = sandboxes.posthog_state.visible(1)[0]
    err = await _req(
        gw, "PATCH", f"{BASE}/{nb.short_id}", 400, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert err["error"]["code"] == "malformed_json"
    err = await _req(
        gw,
        "PATCH",
        f"{BASE}/{nb.short_id}",
        415,
        data=b"title=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "application/json" in err["error"]["message"]
    big = io.BytesIO(b"[" + b"1," * 600_000 + b"1]")
    err = await _req(gw, "POST", BASE, 413, data=big, headers={"Content-Type": "application/json"})
    assert err["error"]["code"] == "payload_too_large"
    assert sandboxes.posthog_state.total_requests == 0


async def test_missing_key_names_the_variable(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    env = {k: v for k, v in sandbox_env.items() if k != "POSTHOG_API_KEY"}
    gw = await make_gateway(env=env)
    err = await _req(gw, "GET", BASE, 502)
    assert err["error"]["code"] == "upstream_credentials_missing"
    assert "POSTHOG_API_KEY" in err["error"]["message"]
    assert err["error"]["route"] == "posthog_notebooks"
    assert sandboxes.posthog_state.total_requests == 0


async def test_bearer_is_injected_and_a_wrong_key_is_reported(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    gw = await make_gateway(env={**sandbox_env, "POSTHOG_API_KEY": "phx_wrong_key_value"})
    err = await _req(gw, "GET", BASE, 502)
    assert err["error"]["code"] == "upstream_auth_rejected"
    assert "Invalid personal API key" in err["error"]["message"]
    assert "phx_wrong_key_value" not in str(err)


async def test_throttling_becomes_503_with_retry_after(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    sandboxes.posthog_state.rate_limit_per_minute = 1
    await _req(gw, "GET", f"{BASE}?limit=1", 200)
    resp = await gw.get(f"{BASE}?limit=1")
    body = await resp.json()
    assert resp.status == 503
    assert body["error"]["code"] == "upstream_rate_limited"
    assert resp.headers["Retry-After"].isdigit()
