"""The sandboxes model what the real upstreams do (upstream-facts.md, "What the real services do"),
each old model behind a switch, and the gateway routes that depend on them are driven through
real HTTP against both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from sandbox.observable import PAGE_SIZE, SANDBOX_LOGIN, SANDBOX_OTHER_LOGIN, ObservableState
from sandbox.posthog import ALL_SCOPES, SANDBOX_POSTHOG_KEY, PostHogState
from sandbox.runner import Sandboxes, start_sandboxes

PH = "/api/projects/1/notebooks/"
STABLE = "/v1/posthog/projects/1/notebooks"
AUTH = {"Authorization": f"Bearer {SANDBOX_POSTHOG_KEY}"}
CONTENT = {"type": "doc", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "hi"}]}]}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _switch(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> None:
    async with http.post(f"{base}/_sandbox/faults", json=body) as resp:
        assert resp.status == 200, await resp.text()


async def _call(http: aiohttp.ClientSession, method: str, url: str, status: int, **kw: Any) -> Any:
    async with http.request(method, url, allow_redirects=False, **kw) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        assert resp.status == status, body
        return body


async def _gw(gw: TestClient[Any, Any], method: str, url: str, status: int, **kw: Any) -> Any:
    resp = await gw.request(method, url, **kw)
    body = await resp.json() if resp.content_type == "application/json" else await resp.text()
    assert resp.status == status, body
    return body


# -- PostHog: key scopes -----------------------------------------------------------


async def test_default_key_has_every_scope(sandboxes: Sandboxes, http: aiohttp.ClientSession) -> None:
    ph = sandboxes.posthog_url
    nb = sandboxes.posthog_state.visible(1)[0]
    assert sandboxes.posthog_state.scopes_of(SANDBOX_POSTHOG_KEY) == ALL_SCOPES
    await _call(http, "GET", ph + PH, 200, headers=AUTH)
    await _call(http, "PATCH", f"{ph}{PH}{nb.short_id}/", 200, headers=AUTH, json={"title": "T"})
    await _call(http, "GET", f"{ph}{PH}{nb.short_id}/activity", 200, headers=AUTH)


async def test_a_key_without_a_scope_gets_posthogs_403(sandboxes: Sandboxes, http: aiohttp.ClientSession) -> None:
    ph = sandboxes.posthog_url
    nb = sandboxes.posthog_state.visible(1)[0]
    await _switch(http, ph, {"key_scopes": {SANDBOX_POSTHOG_KEY: ["notebook:read"]}})
    body = await _call(http, "GET", f"{ph}{PH}{nb.short_id}/activity", 403, headers=AUTH)
    assert body == {
        "type": "authentication_error",
        "code": "permission_denied",
        "detail": "API key missing required scope 'activity_log:read'",
        "attr": None,
    }
    body = await _call(http, "PATCH", f"{ph}{PH}{nb.short_id}/", 403, headers=AUTH, json={"title": "T"})
    assert body["detail"] == "API key missing required scope 'notebook:write'"
    assert nb.title != "T"
    await _call(http, "GET", ph + PH, 200, headers=AUTH)  # reads still work
    await _call(http, "POST", f"{ph}/_sandbox/reset", 200)
    await _call(http, "GET", f"{ph}{PH}{nb.short_id}/activity", 200, headers=AUTH)
    with pytest.raises(AssertionError):  # the switch is checked
        await _switch(http, ph, {"key_scopes": {SANDBOX_POSTHOG_KEY: "notebook:read"}})


async def test_fewer_scopes_from_the_constructor(http: aiohttp.ClientSession) -> None:
    state = PostHogState(scopes={SANDBOX_POSTHOG_KEY: ["notebook:read", "notebook:write"]})
    async with await start_sandboxes(posthog_state=state) as sb:
        nb = state.visible(1)[0]
        await _call(http, "GET", f"{sb.posthog_url}{PH}{nb.short_id}/", 200, headers=AUTH)
        await _call(http, "GET", f"{sb.posthog_url}{PH}{nb.short_id}/activity/", 403, headers=AUTH)


async def test_gateway_names_the_missing_activity_scope(
    gw: TestClient[Any, Any], sandboxes: Sandboxes, http: aiohttp.ClientSession
) -> None:
    short_id = sandboxes.posthog_state.visible(1)[0].short_id
    page = await _gw(gw, "GET", f"{STABLE}/{short_id}/activity", 200)
    assert page["items"][0]["activity"] == "created"
    await _switch(http, sandboxes.posthog_url, {"key_scopes": {SANDBOX_POSTHOG_KEY: ["notebook:read"]}})
    body = await _gw(gw, "GET", f"{STABLE}/{short_id}/activity", 502)
    assert body["error"]["route"] == "posthog_notebook_activity"
    assert "activity_log:read" in body["error"]["message"]
    assert SANDBOX_POSTHOG_KEY not in str(body)


# -- PostHog: PATCH and version ----------------------------------------------------


async def test_patch_version_is_checked_only_with_content(sandboxes: Sandboxes, http: aiohttp.ClientSession) -> None:
    nb = sandboxes.posthog_state.visible(1)[5]
    url = f"{sandboxes.posthog_url}{PH}{nb.short_id}/"
    start = nb.version
    body = await _call(http, "PATCH", url, 409, headers=AUTH, json={"content": CONTENT, "version": start + 7})
    assert body["code"] == "conflict"
    body = await _call(http, "PATCH", url, 200, headers=AUTH, json={"content": CONTENT, "version": start})
    assert body["version"] == start + 1
    # title-only with a stale version: no conflict, and the stale version is stored (rolled back)
    body = await _call(http, "PATCH", url, 200, headers=AUTH, json={"title": "Old", "version": start - 1})
    assert body["version"] == start - 1 and body["title"] == "Old"
    # empty content is not checked either
    body = await _call(http, "PATCH", url, 200, headers=AUTH, json={"content": {}, "version": 99})
    assert body["version"] == 99


async def test_old_version_model_behind_a_switch(sandboxes: Sandboxes, http: aiohttp.ClientSession) -> None:
    await _switch(http, sandboxes.posthog_url, {"old_version_check": True})
    nb = sandboxes.posthog_state.visible(1)[6]
    url = f"{sandboxes.posthog_url}{PH}{nb.short_id}/"
    start = nb.version
    body = await _call(http, "PATCH", url, 200, headers=AUTH, json={"title": "Old", "version": start - 1})
    assert body["version"] == start  # version read-only
    await _call(http, "PATCH", url, 409, headers=AUTH, json={"content": {}, "version": 99})
    body = await _call(http, "PATCH", url, 200, headers=AUTH, json={"content": CONTENT, "version": start})
    assert body["version"] == start + 1


async def test_patch_reaches_a_soft_deleted_notebook(sandboxes: Sandboxes, http: aiohttp.ClientSession) -> None:
    state = sandboxes.posthog_state
    deleted = next(nb for nb in state.projects[1].values() if nb.deleted)
    url = f"{sandboxes.posthog_url}{PH}{deleted.short_id}/"
    await _call(http, "GET", url, 404, headers=AUTH)
    body = await _call(http, "PATCH", url, 200, headers=AUTH, json={"title": "Still here"})
    assert body["deleted"] is True and body["title"] == "Still here"
    await _switch(http, sandboxes.posthog_url, {"old_deleted_404": True})
    await _call(http, "PATCH", url, 404, headers=AUTH, json={"deleted": False})
    await _switch(http, sandboxes.posthog_url, {"old_deleted_404": False})
    await _call(http, "PATCH", url, 200, headers=AUTH, json={"deleted": False})
    assert (await _call(http, "GET", url, 200, headers=AUTH))["title"] == "Still here"


async def test_gateway_update_refuses_a_version_without_content(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    state = sandboxes.posthog_state
    nb = state.visible(1)[3]
    start = nb.version
    url = f"{STABLE}/{nb.short_id}"
    for payload, problem in (
        ({"content": CONTENT}, "version: required with non-empty content"),
        ({"content": CONTENT, "version": "3"}, "version: must be an integer"),
        ({"title": "x", "version": start - 1}, "version: only allowed with non-empty content"),
        ({"content": {}, "version": start}, "version: only allowed with non-empty content"),
        ({"content": None, "version": start}, "version: only allowed with non-empty content"),
        ([1], "body: expected an object"),
    ):
        body = await _gw(gw, "PATCH", url, 422, json=payload)
        assert body["error"]["route"] == "posthog_notebook_update"
        assert any(problem in d for d in body["error"]["details"]), (payload, body)
    assert state.count("PATCH", f"{PH}{nb.short_id}/") == 0 and nb.version == start
    body = await _gw(gw, "PATCH", url, 200, json={"title": "Renamed"})
    assert body["version"] == start and body["title"] == "Renamed"
    body = await _gw(gw, "PATCH", url, 200, json={"content": CONTENT, "version": start})
    assert body["version"] == start + 1 and body["content"] == CONTENT
    body = await _gw(gw, "PATCH", url, 409, json={"content": CONTENT, "version": start})
    assert body["error"]["route"] == "posthog_notebook_update"


async def test_gateway_delete_twice_and_restore(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    nb = sandboxes.posthog_state.visible(1)[2]
    url = f"{STABLE}/{nb.short_id}"
    assert (await gw.delete(url)).status == 204
    await _gw(gw, "GET", url, 404)
    assert (await gw.delete(url)).status == 204  # already deleted: still deleted, still 204
    assert nb.deleted
    await _gw(gw, "DELETE", f"{STABLE}/nOsUcH00", 404)  # never existed
    body = await _gw(gw, "PATCH", url, 200, json={"deleted": False})  # restore
    assert body["id"] == nb.short_id
    await _gw(gw, "GET", url, 200)


async def test_gateway_delete_twice_under_the_old_model(
    gw: TestClient[Any, Any], sandboxes: Sandboxes, http: aiohttp.ClientSession
) -> None:
    await _switch(http, sandboxes.posthog_url, {"old_deleted_404": True})
    url = f"{STABLE}/{sandboxes.posthog_state.visible(1)[4].short_id}"
    assert (await gw.delete(url)).status == 204
    body = await _gw(gw, "DELETE", url, 404)  # what the sandbox's earlier model made of it
    assert body["error"]["route"] == "posthog_notebook_delete"


# -- Observable: modules -------------------------------------------------------------


async def test_module_format_follows_v(sandboxes: Sandboxes, http: aiohttp.ClientSession) -> None:
    obs = sandboxes.observable_url
    nb = sandboxes.observable_state.by_kind("public")[0]
    await _call(http, "GET", f"{obs}/d/{nb.id}.js?v=4", 302)
    async with http.get(f"{obs}/d/{nb.id}.js?v=4", allow_redirects=False) as resp:
        assert resp.headers["Location"] == f"/d/{nb.id}@{nb.version}.js?v=4"
    async with http.get(f"{obs}/d/{nb.id}.js?v=4") as resp:
        modern = await resp.text()
    assert "export default function define(runtime, observer)" in modern
    async with http.get(f"{obs}/d/{nb.id}.js") as resp:
        assert resp.status == 200 and str(resp.url).endswith(f"@{nb.version}.js")
        legacy = await resp.text()
    assert legacy.startswith("// Runtime version: 1\n") and "const m0 = {" in legacy
    assert "function define" not in legacy
    await _switch(http, obs, {"old_modules": True})
    async with http.get(f"{obs}/d/{nb.id}.js?v=4", allow_redirects=False) as resp:
        assert resp.headers["Location"] == f"/d/{nb.id}@{nb.version}.js"  # the old model dropped it
    async with http.get(f"{obs}/d/{nb.id}.js") as resp:
        assert "export default function define" in await resp.text()


@pytest.mark.parametrize("old_modules", [False, True])
async def test_gateway_module_and_version_ask_v4(
    gw: TestClient[Any, Any], sandboxes: Sandboxes, http: aiohttp.ClientSession, old_modules: bool
) -> None:
    await _switch(http, sandboxes.observable_url, {"old_modules": old_modules})
    state = sandboxes.observable_state
    nb = state.by_kind("public")[2]
    resp = await gw.get(f"/v1/observable/notebooks/{nb.id}/module")
    text = await resp.text()
    assert resp.status == 200, text
    assert "export default function define(runtime, observer)" in text
    assert resp.headers["X-Notebook-Version"] == str(nb.version)
    body = await _gw(gw, "GET", f"/v1/observable/notebooks/{nb.id}/version", 200)
    assert body == {"id": nb.id, "version": nb.version}
    sent = [(e["path"], e["query_string"]) for e in state.log]
    final = "" if old_modules else "v=4"
    assert sent == [
        (f"/d/{nb.id}.js", "v=4"),
        (f"/d/{nb.id}@{nb.version}.js", final),
        (f"/d/{nb.id}.js", "v=4"),
    ]


# -- Observable: nodes -------------------------------------------------------------

MODERN = {
    "title": "Modern",
    "nodes": [
        {"id": 1, "value": "# Hello", "mode": "md", "name": None, "data": None, "pinned": False},
        {"id": 2, "value": "<b>x</b>", "mode": "html", "name": "cell", "data": {"k": 1}, "pinned": True},
    ],
    "version": 3,
}


async def test_sandbox_takes_modern_nodes(sandboxes: Sandboxes, http: aiohttp.ClientSession) -> None:
    state = sandboxes.observable_state
    obs = sandboxes.observable_url
    headers = {"Cookie": f"I={state.session_cookie}; T={state.token}", "Origin": "https://observablehq.com"}
    doc = await _call(http, "POST", f"{obs}/document/new", 200, json=MODERN, headers=headers)
    assert [(n["mode"], n["name"], n["data"]) for n in doc["nodes"]] == [("md", None, None), ("html", "cell", {"k": 1})]
    await _switch(http, obs, {"old_node_rules": True})
    body = await _call(http, "POST", f"{obs}/document/new", 400, json=MODERN, headers=headers)
    assert "unknown key 'data'" in body["errors"][0]["message"]


async def test_gateway_forwards_modern_nodes(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    created = await _gw(gw, "POST", "/v1/observable/notebooks", 200, json=MODERN)
    doc = await _gw(gw, "GET", f"/v1/observable/notebooks/{created['id']}", 200)
    assert doc["nodes"][1] == {
        "id": 2,
        "value": "<b>x</b>",
        "mode": "html",
        "name": "cell",
        "data": {"k": 1},
        "pinned": True,
    }
    bad = {"nodes": [{"id": 1, "mode": 5, "name": 3, "cell": "x"}], "version": 2}
    body = await _gw(gw, "POST", "/v1/observable/notebooks", 422, json=bad)
    details = "\n".join(body["error"]["details"])
    for needle in (
        "nodes[0].mode: must be a string",
        "nodes[0].name: must be a string or null",
        "nodes[0].cell: unknown",
    ):
        assert needle in details
    assert sandboxes.observable_state.count("POST", "/document/new") == 1


# -- Observable: the public list, {results} paged by page (unverified) -------------


async def test_public_list_results_switch(sandboxes: Sandboxes, http: aiohttp.ClientSession) -> None:
    obs = sandboxes.observable_url
    state: ObservableState = sandboxes.observable_state
    expected = [nb.id for nb in state.by_kind("public", SANDBOX_OTHER_LOGIN)]
    assert len(expected) > PAGE_SIZE
    assert isinstance(await _call(http, "GET", f"{obs}/documents/@{SANDBOX_OTHER_LOGIN}", 200), list)
    await _switch(http, obs, {"public_list_results": True})
    walked: list[str] = []
    page = 1
    while True:
        body = await _call(http, "GET", f"{obs}/documents/@{SANDBOX_OTHER_LOGIN}?page={page}", 200)
        assert set(body) == {"results"}
        if not body["results"]:
            break
        walked += [i["id"] for i in body["results"]]
        page += 1
    assert walked == expected and page == -(-len(expected) // PAGE_SIZE) + 1
    first = await _call(http, "GET", f"{obs}/documents/@{SANDBOX_LOGIN}", 200)  # no page: page 1
    assert [i["id"] for i in first["results"]] == [nb.id for nb in state.by_kind("public")][:PAGE_SIZE]
    await _call(http, "GET", f"{obs}/documents/@{SANDBOX_LOGIN}?page=0", 400)
