"""The PostHog sandbox must behave like PostHog's notebooks API as described in
upstream-facts.md, since the gateway's tests trust it; these tests pin that over real HTTP."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from sandbox.control import Fault
from sandbox.posthog import (
    POSTHOG_STATE,
    SANDBOX_POSTHOG_KEY,
    PostHogState,
    create_app,
)

Client = TestClient[Any, Any]
AUTH = {"Authorization": f"Bearer {SANDBOX_POSTHOG_KEY}"}
LIST = "/api/projects/1/notebooks/"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
NOT_FOUND = {"type": "invalid_request", "code": "not_found", "detail": "Not found.", "attr": None}
CONTENT = {
    "type": "doc",
    "content": [
        {"type": "heading", "attrs": {"level": 1}, "content": [{"type": "text", "text": "T"}]},
        {"type": "paragraph", "content": [{"type": "text", "text": "Hello"}]},
    ],
}


class FakeClock:
    """A settable clock so throttling and timestamps are deterministic."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def state() -> PostHogState:
    return PostHogState()


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, state: PostHogState) -> Client:
    return await aiohttp_client(create_app(state))


async def get_json(client: Client, path: str, status: int = 200) -> Any:
    resp = await client.get(path, headers=AUTH)
    assert resp.status == status, await resp.text()
    return await resp.json()


def first_short_id(state: PostHogState, project: int = 1) -> str:
    return state.visible(project)[0].short_id


# -- listing -------------------------------------------------------------------


async def test_paging_follows_absolute_next_to_the_end(client: Client, state: PostHogState) -> None:
    page = await get_json(client, LIST)
    assert page["count"] == 250 and page["previous"] is None and len(page["results"]) == 100
    assert page["next"] == str(client.make_url(LIST)) + "?limit=100&offset=100"
    items = list(page["results"])
    sizes = [len(page["results"])]
    while page["next"] is not None:
        async with client.session.get(page["next"], headers=AUTH) as resp:
            assert resp.status == 200
            page = await resp.json()
        sizes.append(len(page["results"]))
        items.extend(page["results"])
    assert sizes == [100, 100, 50]
    assert page["previous"] == str(client.make_url(LIST)) + "?limit=100&offset=100"
    assert [i["short_id"] for i in items] == [nb.short_id for nb in state.visible(1)]
    stamps = [i["last_modified_at"] for i in items]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == 250


async def test_previous_drops_offset_on_the_second_page(client: Client) -> None:
    page = await get_json(client, LIST + "?limit=100&offset=100")
    assert page["previous"] == str(client.make_url(LIST)) + "?limit=100"
    page = await get_json(client, LIST + "?limit=100&offset=150")
    assert page["previous"] == str(client.make_url(LIST)) + "?limit=100&offset=50"
    assert page["next"] is None


async def test_list_item_shape(client: Client) -> None:
    item = (await get_json(client, LIST + "?limit=1"))["results"][0]
    assert set(item) == {
        "id",
        "short_id",
        "title",
        "deleted",
        "created_at",
        "created_by",
        "last_modified_at",
        "last_modified_by",
        "user_access_level",
    }
    assert uuid.UUID(item["id"]).version == 4
    assert re.fullmatch(r"[A-Za-z0-9]{8}", item["short_id"])
    assert TIME_RE.match(item["last_modified_at"]) and TIME_RE.match(item["created_at"])
    assert set(item["created_by"]) == {"id", "uuid", "distinct_id", "first_name", "email"}
    assert item["deleted"] is False and item["user_access_level"] == "editor"


async def test_trailing_slash_is_optional(client: Client, state: PostHogState) -> None:
    short_id = first_short_id(state)
    for path in (
        "/api/projects/1/notebooks",
        f"/api/projects/1/notebooks/{short_id}",
        f"/api/projects/1/notebooks/{short_id}/activity",
    ):
        bare, slashed = await get_json(client, path), await get_json(client, path + "/")
        assert bare.get("results") == slashed.get("results")
        assert bare.get("content") == slashed.get("content")
    # like DRF, links are built from the URL as requested
    bare = await get_json(client, "/api/projects/1/notebooks")
    assert bare["next"] == str(client.make_url("/api/projects/1/notebooks?limit=100&offset=100"))


async def test_other_project_and_unknown_project(client: Client) -> None:
    assert (await get_json(client, "/api/projects/2/notebooks"))["count"] == 12
    for pid in ("3", "abc"):
        body = await get_json(client, f"/api/projects/{pid}/notebooks/", 404)
        assert body == {
            "type": "invalid_request",
            "code": "not_found",
            "detail": "Project not found.",
            "attr": None,
        }


async def test_limit_has_no_maximum(aiohttp_client: AiohttpClient) -> None:
    """DRF's LimitOffsetPagination without max_limit: any limit is served whole."""
    client = await aiohttp_client(create_app(PostHogState(notebook_count=1005)))
    page = await get_json(client, LIST + "?limit=1001")
    assert page["count"] == 1005 and len(page["results"]) == 1001
    assert page["next"] == str(client.make_url(LIST)) + "?limit=1001&offset=1001"
    page = await get_json(client, LIST + "?limit=5000")
    assert len(page["results"]) == 1005 and page["next"] is None


@pytest.mark.parametrize(
    ("query", "attr"),
    [
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("limit=0", "limit"),
        ("limit=1.5", "limit"),
        ("offset=x", "offset"),
        ("offset=-5", "offset"),
    ],
)
async def test_bad_paging_params_are_400(client: Client, query: str, attr: str) -> None:
    body = await get_json(client, f"{LIST}?{query}", 400)
    assert body["type"] == "validation_error" and body["code"] == "invalid_input"
    assert body["attr"] == attr and body["detail"]


async def test_offset_past_the_end_is_empty(client: Client) -> None:
    page = await get_json(client, LIST + "?offset=400")
    assert page["results"] == [] and page["next"] is None and page["count"] == 250


# -- auth and throttling -------------------------------------------------------


async def test_missing_and_wrong_keys_are_401(client: Client) -> None:
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        resp = await client.get(LIST, headers=headers)
        assert resp.status == 401
        assert await resp.json() == {
            "type": "authentication_error",
            "code": "not_authenticated",
            "detail": "Authentication credentials were not provided.",
            "attr": None,
        }
    resp = await client.get(LIST, headers={"Authorization": "Bearer phx_wrong"})
    assert resp.status == 401
    assert await resp.json() == {
        "type": "authentication_error",
        "code": "authentication_failed",
        "detail": "Invalid personal API key.",
        "attr": None,
    }


async def test_api_keys_can_be_overridden(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(create_app(PostHogState(api_keys=["phx_other"])))
    assert (await client.get(LIST, headers=AUTH)).status == 401
    resp = await client.get(LIST, headers={"Authorization": "Bearer phx_other"})
    assert resp.status == 200


async def test_throttling(aiohttp_client: AiohttpClient) -> None:
    clock = FakeClock(1_800_000_000.0)
    state = PostHogState(rate_limit_per_minute=3, clock=clock)
    client = await aiohttp_client(create_app(state))
    for _ in range(3):
        assert (await client.get(LIST, headers=AUTH)).status == 200
    resp = await client.get(LIST, headers=AUTH)
    assert resp.status == 429 and "Retry-After" not in resp.headers
    assert await resp.json() == {
        "type": "throttled_error",
        "code": "throttled",
        "detail": "Request was throttled. Expected available in 60 seconds.",
        "attr": None,
    }
    clock.now += 45.5
    body = await get_json(client, LIST, 429)
    assert body["detail"] == "Request was throttled. Expected available in 15 seconds."
    assert (await client.get(LIST)).status == 401  # unauthenticated calls are not throttled
    clock.now += 15
    assert (await client.get(LIST, headers=AUTH)).status == 200


async def test_throttling_switch_over_http(client: Client, state: PostHogState) -> None:
    resp = await client.post("/_sandbox/faults", json={"rate_limit_per_minute": 1})
    assert (await resp.json())["rate_limit_per_minute"] == 1
    assert (await client.get(LIST, headers=AUTH)).status == 200
    body = await get_json(client, LIST, 429)
    assert re.fullmatch(r"Request was throttled\. Expected available in \d+ seconds?\.", body["detail"])
    await client.post("/_sandbox/reset")
    assert state.rate_limit_per_minute is None
    assert (await client.get(LIST, headers=AUTH)).status == 200


# -- detail ----------------------------------------------------------------------


async def test_detail_has_content_and_version(client: Client, state: PostHogState) -> None:
    nb = state.visible(1)[0]
    body = await get_json(client, f"{LIST}{nb.short_id}/")
    assert body["short_id"] == nb.short_id and body["version"] == nb.version
    assert body["content"]["type"] == "doc"
    assert [b["type"] for b in body["content"]["content"]][:2] == ["heading", "paragraph"]
    assert body["text_content"].startswith(body["title"])


async def test_if_none_match(client: Client, state: PostHogState) -> None:
    nb = state.visible(1)[0]
    for tag in (str(nb.version), f'"{nb.version}"', f'W/"{nb.version}"'):
        resp = await client.get(f"{LIST}{nb.short_id}/", headers={**AUTH, "If-None-Match": tag})
        assert resp.status == 304 and await resp.read() == b""
    resp = await client.get(f"{LIST}{nb.short_id}/", headers={**AUTH, "If-None-Match": str(nb.version + 1)})
    assert resp.status == 200


async def test_unknown_notebook_is_404(client: Client) -> None:
    assert await get_json(client, f"{LIST}nosuchid/", 404) == NOT_FOUND
    assert await get_json(client, "/api/projects/1/other/", 404) == NOT_FOUND


# -- writes ----------------------------------------------------------------------


async def test_create(client: Client, state: PostHogState) -> None:
    resp = await client.post(LIST, json={"title": "Fresh", "content": CONTENT}, headers=AUTH)
    assert resp.status == 201
    body = await resp.json()
    assert body["version"] == 0 and body["title"] == "Fresh" and body["content"] == CONTENT
    assert body["text_content"] is None and TIME_RE.match(body["created_at"])  # stored as sent: none
    page = await get_json(client, LIST)
    assert page["count"] == 251 and page["results"][0]["short_id"] == body["short_id"]
    assert (await get_json(client, f"{LIST}{body['short_id']}")) == body
    empty = await client.post("/api/projects/2/notebooks", json={}, headers=AUTH)
    assert empty.status == 201 and (await empty.json())["title"] is None


@pytest.mark.parametrize("payload", [b"not json", b"[]", b'{"title": 5}', b'{"content": "x"}'])
async def test_create_rejects_invalid_bodies(client: Client, payload: bytes) -> None:
    resp = await client.post(LIST, data=payload, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["type"] == "validation_error"


async def test_patch_content_needs_the_current_version(client: Client, state: PostHogState) -> None:
    nb = state.visible(1)[-1]
    url = f"{LIST}{nb.short_id}/"
    conflict = {
        "type": "server_error",
        "code": "conflict",
        "detail": "Someone else edited the Notebook",
        "attr": None,
    }
    for body in ({"content": CONTENT}, {"content": CONTENT, "version": nb.version + 1}):
        resp = await client.patch(url, json=body, headers=AUTH)
        assert resp.status == 409 and await resp.json() == conflict
    before = nb.version
    resp = await client.patch(url, json={"content": CONTENT, "version": nb.version}, headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["version"] == before + 1 and body["content"] == CONTENT
    assert (await get_json(client, LIST + "?limit=1"))["results"][0]["short_id"] == nb.short_id
    # same content again: non-empty content bumps the version whether it changed or not
    resp = await client.patch(url, json={"content": CONTENT, "version": body["version"]}, headers=AUTH)
    assert (await resp.json())["version"] == before + 2


async def test_patch_title_only_keeps_version(client: Client, state: PostHogState) -> None:
    nb = state.visible(1)[10]
    before = nb.version
    resp = await client.patch(f"{LIST}{nb.short_id}", json={"title": "Renamed"}, headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["title"] == "Renamed" and body["version"] == before
    page = await get_json(client, LIST + "?limit=2")
    assert page["results"][0]["short_id"] == nb.short_id
    assert page["results"][0]["last_modified_at"] > page["results"][1]["last_modified_at"]


async def test_soft_delete(client: Client, state: PostHogState) -> None:
    short_id = first_short_id(state)
    resp = await client.patch(f"{LIST}{short_id}/", json={"deleted": True}, headers=AUTH)
    assert resp.status == 200 and (await resp.json())["deleted"] is True
    assert await get_json(client, f"{LIST}{short_id}/", 404) == NOT_FOUND
    page = await get_json(client, LIST + "?limit=1000")
    assert page["count"] == 249
    assert short_id not in {i["short_id"] for i in page["results"]}
    resp = await client.patch(f"{LIST}{short_id}/", json={"deleted": False}, headers=AUTH)
    assert resp.status == 200  # a PATCH reaches a soft-deleted notebook: this restores it
    assert (await get_json(client, f"{LIST}{short_id}/"))["deleted"] is False


async def test_seeded_deleted_notebooks_are_hidden(state: PostHogState) -> None:
    hidden = [nb for nb in state.projects[1].values() if nb.deleted]
    assert hidden and len(state.visible(1)) == 250


async def test_delete_is_an_empty_405(client: Client, state: PostHogState) -> None:
    resp = await client.delete(f"{LIST}{first_short_id(state)}/", headers=AUTH)
    assert resp.status == 405
    assert resp.headers["Content-Length"] == "0" and await resp.read() == b""
    assert len(state.visible(1)) == 250


async def test_other_methods_are_json_405(client: Client, state: PostHogState) -> None:
    resp = await client.put(f"{LIST}{first_short_id(state)}/", json={}, headers=AUTH)
    assert resp.status == 405
    assert await resp.json() == {
        "type": "invalid_request",
        "code": "method_not_allowed",
        "detail": 'Method "PUT" not allowed.',
        "attr": None,
    }
    resp = await client.delete(LIST, headers=AUTH)
    assert resp.status == 405 and (await resp.json())["detail"] == 'Method "DELETE" not allowed.'


async def test_activity(client: Client, state: PostHogState) -> None:
    nb = state.visible(1)[5]
    url = f"{LIST}{nb.short_id}/activity"
    seeded = await get_json(client, url)
    assert seeded["total_count"] == 1 and seeded["next"] is None and seeded["previous"] is None
    created = seeded["results"][0]
    assert created["activity"] == "created" and created["scope"] == "Notebook"
    assert created["item_id"] == nb.short_id and TIME_RE.match(created["created_at"])
    await client.patch(f"{LIST}{nb.short_id}/", json={"title": "Changed"}, headers=AUTH)
    log = await get_json(client, url)
    assert log["total_count"] == 2 and log["results"][0]["activity"] == "updated"
    change = log["results"][0]["detail"]["changes"][0]
    assert change["field"] == "title" and change["after"] == "Changed"
    resp = await client.post(LIST, json={"title": "New"}, headers=AUTH)
    new_id = (await resp.json())["short_id"]
    log = await get_json(client, f"{LIST}{new_id}/activity/")
    assert [e["activity"] for e in log["results"]] == ["created"]


# -- control ---------------------------------------------------------------------


async def test_faults_and_counters_speak_posthog(client: Client, state: PostHogState) -> None:
    await client.post("/_sandbox/faults", json={"faults": {"/api/projects/1/": {"status": 404}}})
    assert await get_json(client, LIST, 404) == NOT_FOUND
    assert (await get_json(client, "/api/projects/2/notebooks/"))["count"] == 12
    state.faults["/api/projects/2/"] = Fault(status=503)
    body = await get_json(client, "/api/projects/2/notebooks/", 503)
    assert body["type"] == "server_error"
    counts = await (await client.get("/_sandbox/requests")).json()
    assert counts == {
        "total": 3,
        "by_path": {"GET /api/projects/1/notebooks/": 1, "GET /api/projects/2/notebooks/": 2},
    }
    await client.post("/_sandbox/reset")
    await client.post("/_sandbox/faults", json={"faults": {"/api/": {"drop_field": "last_modified_at"}}})
    page = await get_json(client, LIST)
    assert page["count"] == 250 and all("last_modified_at" not in i for i in page["results"])
    detail = await get_json(client, f"{LIST}{first_short_id(state)}/")
    assert "last_modified_at" not in detail and "content" in detail


async def test_latency_applies_to_posthog_too(client: Client) -> None:
    await client.post("/_sandbox/faults", json={"latency_ms": 100})
    started = time.monotonic()
    await client.get(LIST, headers=AUTH)
    assert time.monotonic() - started >= 0.09


def test_state_is_reachable_from_the_app(state: PostHogState) -> None:
    assert create_app(state)[POSTHOG_STATE] is state
