"""The Observable sandbox must behave like the real API as described in upstream-facts.md,
since the gateway's tests trust it; these tests pin that behaviour over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from sandbox.control import Fault
from sandbox.observable import (
    OBSERVABLE_STATE,
    ORIGIN,
    PAGE_SIZE,
    SANDBOX_LOGIN,
    SANDBOX_OTHER_LOGIN,
    SANDBOX_T_TOKEN,
    ObservableState,
    create_app,
    make_session_cookie,
    parse_session_cookie,
)
from sandbox.runner import export_lines, start_sandboxes

Client = TestClient[Any, Any]
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UNAUTHORIZED = {"errors": [{"code": "UNAUTHORIZED", "message": "Not signed in"}]}
FORBIDDEN = {"errors": [{"code": "FORBIDDEN", "message": "Invalid origin"}]}
NOT_FOUND = {"errors": [{"code": "NOT_FOUND", "message": "Not found"}]}


def auth(state: ObservableState, *, origin: str | None = ORIGIN, **cookies: str) -> dict[str, str]:
    """Headers of a signed-in browser-like request (cookies overridable)."""
    jar = {"I": state.session_cookie, "T": state.token, **cookies}
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items() if v)}
    if origin is not None:
        headers["Origin"] = origin
    return headers


@pytest.fixture
def state() -> ObservableState:
    return ObservableState()


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, state: ObservableState) -> Client:
    return await aiohttp_client(create_app(state))


async def get_json(client: Client, path: str, headers: dict[str, str] | None = None) -> Any:
    resp = await client.get(path, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def all_pages(client: Client, path: str, headers: dict[str, str] | None = None) -> list[Any]:
    """Page through a before-paged listing; returns the page sizes' items, pages kept apart."""
    pages: list[Any] = []
    sep = "&" if "?" in path else "?"
    url = path
    while True:
        page = await get_json(client, url, headers)
        pages.append(page)
        if not page:
            return pages
        url = f"{path}{sep}before={page[-1]['update_time']}"


# -- listings ------------------------------------------------------------------


async def test_public_listing_pages_by_before_until_empty(client: Client, state: ObservableState) -> None:
    pages = await all_pages(client, "/user/documents?types=public", auth(state))
    assert [len(p) for p in pages] == [30, 30, 15, 0]
    items = [item for page in pages for item in page]
    assert [i["id"] for i in items] == [nb.id for nb in state.by_kind("public")]
    times = [i["update_time"] for i in items]
    assert times == sorted(times, reverse=True) and len(set(times)) == len(times)
    assert all(i["owner"]["login"] == SANDBOX_LOGIN for i in items)


@pytest.mark.parametrize(("kind", "sizes"), [("shared", [30, 10, 0]), ("private", [30, 5, 0]), ("trash", [5, 0])])
async def test_other_types_page_the_same_way(
    client: Client, state: ObservableState, kind: str, sizes: list[int]
) -> None:
    pages = await all_pages(client, f"/user/documents?types={kind}", auth(state))
    assert [len(p) for p in pages] == sizes


async def test_item_shape_and_unique_times(client: Client, state: ObservableState) -> None:
    page = await get_json(client, "/user/documents?types=public", auth(state))
    item = page[0]
    assert set(item) == {
        "id",
        "slug",
        "title",
        "version",
        "update_time",
        "likes",
        "fork_of",
        "publish_time",
        "owner",
    }
    assert re.fullmatch(r"[0-9a-f]{16}", item["id"])
    assert TIME_RE.match(item["update_time"]) and TIME_RE.match(item["publish_time"])
    assert isinstance(item["version"], int) and item["version"] >= 1
    everything = list(state.notebooks.values())
    assert len({nb.update_ms for nb in everything}) == len(everything)
    assert any(nb.slug and "/" in nb.slug for nb in everything)
    assert any(nb.fork_of is not None for nb in everything)


async def test_seed_is_deterministic() -> None:
    a, b, c = ObservableState(seed=1), ObservableState(seed=1), ObservableState(seed=2)
    assert [nb.id for nb in a.by_kind("public")] == [nb.id for nb in b.by_kind("public")]
    assert [nb.update_ms for nb in a.by_kind("private")] == [nb.update_ms for nb in b.by_kind("private")]
    assert [nb.id for nb in a.by_kind("public")] != [nb.id for nb in c.by_kind("public")]


@pytest.mark.parametrize("query", ["", "?types=", "?types=drafts", "?types=public,private"])
async def test_invalid_types_is_400(client: Client, state: ObservableState, query: str) -> None:
    resp = await client.get(f"/user/documents{query}", headers=auth(state))
    assert resp.status == 400
    body = await resp.json()
    assert body["errors"][0]["code"] == "INVALID_PARAMETER"


@pytest.mark.parametrize("before", ["", "yesterday", "2026-13-40T00:00:00.000Z"])
async def test_unparseable_before_is_400(client: Client, state: ObservableState, before: str) -> None:
    resp = await client.get(f"/user/documents?types=public&before={before}", headers=auth(state))
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["code"] == "INVALID_PARAMETER"


async def test_before_is_strict(client: Client, state: ObservableState) -> None:
    newest = state.by_kind("public")
    page = await get_json(client, f"/user/documents?types=public&before={newest[1].update_time}", auth(state))
    assert page[0]["id"] == newest[2].id


async def test_public_documents_of_a_login_need_no_auth(client: Client) -> None:
    pages = await all_pages(client, f"/documents/@{SANDBOX_OTHER_LOGIN}")
    assert [len(p) for p in pages] == [30, 15, 0]
    pages = await all_pages(client, f"/documents/@{SANDBOX_LOGIN}")
    assert [len(p) for p in pages] == [30, 30, 15, 0]
    resp = await client.get("/documents/@nobody")
    assert resp.status == 404 and await resp.json() == NOT_FOUND


# -- auth ----------------------------------------------------------------------


async def test_missing_cookies_are_401(client: Client, state: ObservableState) -> None:
    for headers in ({"Origin": ORIGIN}, auth(state, I=""), auth(state, T="")):
        resp = await client.get("/user/documents?types=public", headers=headers)
        assert resp.status == 401
        assert await resp.json() == UNAUTHORIZED


async def test_invalid_cookies_are_401(client: Client, state: ObservableState) -> None:
    forged = state.session_cookie.split(".")[0] + ".AAAA"
    other = make_session_cookie(int(time.time() * 1000) + 60_000)  # valid shape, not the session
    for headers in (
        auth(state, I="garbage"),
        auth(state, I=forged),
        auth(state, I=other),
        auth(state, T="0" * 32),
    ):
        resp = await client.get("/user/documents?types=public", headers=headers)
        assert resp.status == 401
        assert await resp.json() == UNAUTHORIZED


async def test_expired_session_is_401_session_expired(client: Client, state: ObservableState) -> None:
    state.session_cookie = make_session_cookie(int(time.time() * 1000) - 1000)
    resp = await client.get("/user/documents?types=public", headers=auth(state))
    assert resp.status == 401
    assert (await resp.json())["errors"][0]["code"] == "SESSION_EXPIRED"


async def test_origin_is_checked_after_auth(client: Client, state: ObservableState) -> None:
    for origin in (None, "https://evil.example", "http://observablehq.com"):
        resp = await client.get("/user/documents?types=public", headers=auth(state, origin=origin))
        assert resp.status == 403
        assert await resp.json() == FORBIDDEN
    resp = await client.get("/user/documents?types=public")  # no cookies: 401 wins
    assert resp.status == 401


def test_session_cookie_has_the_real_shape(state: ObservableState) -> None:
    segment, signature = state.session_cookie.split(".")
    assert "=" not in segment and "=" not in signature
    payload = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    week_ms = 7 * 24 * 3600 * 1000
    assert abs(payload["expiration"] - (time.time() * 1000 + week_ms)) < 60_000
    assert parse_session_cookie(state.session_cookie) == payload
    assert parse_session_cookie(segment + "." + signature[::-1]) is None
    assert re.fullmatch(r"[0-9a-f]{32}", SANDBOX_T_TOKEN) and state.token == SANDBOX_T_TOKEN


async def test_unknown_route_is_json_404(client: Client) -> None:
    resp = await client.get("/no/such/route")
    assert resp.status == 404
    assert await resp.json() == NOT_FOUND


# -- legacy routes -------------------------------------------------------------


async def test_legacy_routes_are_404_until_switched_on(client: Client, state: ObservableState) -> None:
    for path in ("/user/public", "/user/drafts"):
        resp = await client.get(path, headers=auth(state))
        assert resp.status == 404 and await resp.json() == NOT_FOUND
    resp = await client.post("/_sandbox/faults", json={"legacy_routes": True})
    assert resp.status == 200 and (await resp.json())["legacy_routes"] is True
    assert state.legacy_routes
    pages = await all_pages(client, "/user/public", auth(state))
    assert [len(p) for p in pages] == [30, 30, 15, 0]
    assert [i["id"] for p in pages for i in p] == [nb.id for nb in state.by_kind("public")]
    drafts = await get_json(client, "/user/drafts", auth(state))
    assert [i["id"] for i in drafts] == [nb.id for nb in state.by_kind("private")][:PAGE_SIZE]
    resp = await client.get("/user/drafts")
    assert resp.status == 401


# -- documents -----------------------------------------------------------------


async def test_public_document_needs_no_auth(client: Client, state: ObservableState) -> None:
    nb = state.by_kind("public")[0]
    doc = await get_json(client, f"/document/{nb.id}")
    assert doc["id"] == nb.id and doc["publish_level"] == "public" and doc["version"] == nb.version
    assert "type" not in doc and doc["trashed"] is False and doc["latest_version"] == nb.version
    assert doc["creator"]["login"] == SANDBOX_LOGIN and [a["login"] for a in doc["authors"]] == [SANDBOX_LOGIN]
    assert doc["roles"] == [] and doc["files"] == []
    assert doc["owner"]["login"] == SANDBOX_LOGIN and TIME_RE.match(doc["publish_time"])
    node = doc["nodes"][0]
    assert set(node) == {"id", "value", "pinned", "mode", "data", "name"}
    assert node["mode"] == "js" and node["data"] is None and node["name"] is None
    assert doc["version"] > len(doc["nodes"])
    assert doc["version"] >= max(n["id"] for n in doc["nodes"])


async def test_private_document_needs_auth(client: Client, state: ObservableState) -> None:
    for kind in ("private", "shared", "trash"):
        nb = state.by_kind(kind)[0]
        resp = await client.get(f"/document/{nb.id}")
        assert resp.status == 401 and await resp.json() == UNAUTHORIZED
        doc = await get_json(client, f"/document/{nb.id}", auth(state))
        assert "type" not in doc and doc["publish_time"] is None and doc["publish_level"] is None
        assert doc["trashed"] is (kind == "trash")


async def test_unknown_document_is_404(client: Client, state: ObservableState) -> None:
    for path in ("/document/0123456789abcdef", "/document/nope", "/document/@demo/no-such-slug"):
        resp = await client.get(path, headers=auth(state))
        assert resp.status == 404 and await resp.json() == NOT_FOUND


async def test_document_by_login_and_slug(client: Client, state: ObservableState) -> None:
    for nb in state.notebooks.values():
        if nb.type == "public" and nb.slug:
            doc = await get_json(client, f"/document/@{nb.owner}/{nb.slug}")
            assert doc["id"] == nb.id
    slashed = next(nb for nb in state.by_kind("public") if nb.slug and "/" in nb.slug)
    doc = await get_json(client, f"/document/@{SANDBOX_LOGIN}/{slashed.slug}")
    assert doc["id"] == slashed.id
    private = next(nb for nb in state.by_kind("private") if nb.slug)
    resp = await client.get(f"/document/@{SANDBOX_LOGIN}/{private.slug}")
    assert resp.status == 401


# -- modules -------------------------------------------------------------------


async def test_module_redirects_to_current_version(client: Client, state: ObservableState) -> None:
    nb = state.by_kind("public")[0]
    resp = await client.get(f"/d/{nb.id}.js", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == f"/d/{nb.id}@{nb.version}.js"
    resp = await client.get(f"/d/{nb.id}.js?v=4")  # followed, the query kept
    assert resp.status == 200 and resp.url.query_string == "v=4"
    assert resp.headers["Content-Type"] == "application/javascript; charset=utf-8"
    text = await resp.text()
    assert nb.id in text and f"v{nb.version}" in text
    assert "export default function define(runtime, observer)" in text


async def test_stale_or_bogus_module_is_404(client: Client, state: ObservableState) -> None:
    nb = state.by_kind("public")[0]
    for path in (f"/d/{nb.id}@{nb.version - 1}.js", "/d/0123456789abcdef.js", f"/d/{nb.id}"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 404, path


async def test_private_module_needs_auth(client: Client, state: ObservableState) -> None:
    nb = state.by_kind("private")[0]
    resp = await client.get(f"/d/{nb.id}@{nb.version}.js")
    assert resp.status == 401
    resp = await client.get(f"/d/{nb.id}.js", headers=auth(state), allow_redirects=False)
    assert resp.status == 302
    resp = await client.get(f"/d/{nb.id}@{nb.version}.js", headers=auth(state))
    assert resp.status == 200 and nb.id in await resp.text()


# -- document/new --------------------------------------------------------------

VALID_NEW = {
    "title": "Made here",
    "nodes": [{"id": 1, "value": "x = 1", "pinned": True}, {"id": 4}],
    "version": 5,
}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "object"),
        ("nope", "object"),
        ({"version": 3}, "nodes must be a list"),
        ({"nodes": {}, "version": 3}, "nodes must be a list"),
        ({"nodes": [1], "version": 3}, "nodes[0] must be an object"),
        ({"nodes": [{"value": "x"}], "version": 3}, "nodes[0].id is required"),
        ({"nodes": [{"id": -1}], "version": 3}, "non-negative integer"),
        ({"nodes": [{"id": True}], "version": 3}, "non-negative integer"),
        ({"nodes": [{"id": 1.5}], "version": 3}, "non-negative integer"),
        ({"nodes": [{"id": "1"}], "version": 3}, "non-negative integer"),
        ({"nodes": [{"id": 1}, {"id": 1}], "version": 3}, "duplicated"),
        ({"nodes": [{"id": 1, "pinned": "yes"}], "version": 3}, "pinned must be a boolean"),
        ({"nodes": [{"id": 1, "value": 7}], "version": 3}, "value must be a string"),
        ({"nodes": [{"id": 1, "cell": "js"}], "version": 3}, "unknown key 'cell'"),
        ({"nodes": [{"id": 1, "mode": 3}], "version": 3}, "mode must be a string"),
        ({"nodes": [{"id": 1, "name": 3}], "version": 3}, "name must be a string or null"),
        ({"nodes": [{"id": 1}]}, "version must be an integer"),
        ({"nodes": [{"id": 1}], "version": "3"}, "version must be an integer"),
        ({"nodes": [{"id": 1}], "version": True}, "version must be an integer"),
        ({"nodes": [{"id": 0}, {"id": 1}], "version": 2}, "greater than the number of nodes"),
        ({"nodes": [{"id": 9}], "version": 8}, "not be less than any node id"),
        ({"title": 5, "nodes": [], "version": 1}, "title must be a string"),
    ],
)
async def test_new_document_rules(client: Client, state: ObservableState, body: Any, fragment: str) -> None:
    resp = await client.post("/document/new", json=body, headers=auth(state))
    assert resp.status == 400
    error = (await resp.json())["errors"][0]
    assert error["code"] == "INVALID_DOCUMENT"
    assert fragment in error["message"]


async def test_new_document_rejects_non_json(client: Client, state: ObservableState) -> None:
    resp = await client.post("/document/new", data=b"{nope", headers=auth(state))
    assert resp.status == 400
    assert (await resp.json())["errors"][0]["code"] == "INVALID_DOCUMENT"


async def test_new_document_needs_auth(client: Client, state: ObservableState) -> None:
    resp = await client.post("/document/new", json=VALID_NEW)
    assert resp.status == 401 and await resp.json() == UNAUTHORIZED
    resp = await client.post("/document/new", json=VALID_NEW, headers=auth(state, origin=None))
    assert resp.status == 403


async def test_new_document_is_created_and_listed_first(client: Client, state: ObservableState) -> None:
    resp = await client.post("/document/new", json=VALID_NEW, headers=auth(state))
    assert resp.status == 200
    doc = await resp.json()
    assert re.fullmatch(r"[0-9a-f]{16}", doc["id"]) and doc["id"] not in {
        nb.id for nb in ObservableState().notebooks.values()
    }
    assert doc["publish_level"] is None and doc["trashed"] is False and "type" not in doc
    assert doc["version"] == 5 and doc["latest_version"] == 5 and doc["title"] == "Made here"
    assert TIME_RE.match(doc["update_time"])
    assert [n["id"] for n in doc["nodes"]] == [1, 4]
    assert doc["nodes"][1] == {
        "id": 4,
        "value": "",
        "pinned": False,
        "mode": "js",
        "data": None,
        "name": None,
    }
    page = await get_json(client, "/user/documents?types=private", auth(state))
    assert page[0]["id"] == doc["id"] and page[0]["update_time"] == doc["update_time"]
    assert page[0]["update_time"] > page[1]["update_time"]
    fetched = await get_json(client, f"/document/{doc['id']}", auth(state))
    assert fetched == doc
    empty = await client.post("/document/new", json={"nodes": [], "version": 1}, headers=auth(state))
    assert empty.status == 200 and (await empty.json())["nodes"] == []


# -- control: counters and faults ------------------------------------------------


async def test_request_counter_counts_everything_but_control(client: Client, state: ObservableState) -> None:
    await client.get("/user/documents?types=public", headers=auth(state))
    await client.get("/user/documents?types=private")  # 401 still counts
    await client.get("/nowhere")
    await client.get("/_sandbox/faults")
    body = await (await client.get("/_sandbox/requests")).json()
    assert body == {"total": 3, "by_path": {"GET /user/documents": 2, "GET /nowhere": 1}}
    assert state.count("GET", "/user/documents") == 2 and state.total_requests == 3
    assert state.requests[("GET", "/nowhere")] == 1
    assert state.log[0] == {
        "method": "GET",
        "path": "/user/documents",
        "query_string": "types=public",
        "has_auth": True,
    }
    assert state.log[1]["has_auth"] is False
    log = await (await client.get("/_sandbox/log")).json()
    assert len(log["log"]) == 3
    resp = await client.post("/_sandbox/reset")
    assert resp.status == 200
    assert await (await client.get("/_sandbox/requests")).json() == {"total": 0, "by_path": {}}


async def test_status_fault_over_http(client: Client, state: ObservableState) -> None:
    resp = await client.post("/_sandbox/faults", json={"faults": {"/user/documents": {"status": 404}}})
    assert resp.status == 200
    resp = await client.get("/user/documents?types=public", headers=auth(state))
    assert resp.status == 404 and await resp.json() == NOT_FOUND
    assert (await client.get(f"/documents/@{SANDBOX_LOGIN}")).status == 200  # other prefix
    resp = await client.post("/_sandbox/faults", json={"faults": {"/user": {"status": 500}}})
    resp = await client.get("/user/documents?types=public", headers=auth(state))
    assert resp.status == 404  # longest prefix wins
    resp = await client.get("/user/public", headers=auth(state))
    assert resp.status == 500 and (await resp.json())["errors"][0]["code"] == "INTERNAL_ERROR"
    faults = await (await client.get("/_sandbox/faults")).json()
    assert faults == {
        "latency_ms": 0.0,
        "legacy_routes": False,
        "old_modules": False,
        "old_node_rules": False,
        "public_list_results": False,
        "session_expired": False,
        "signed_out": "empty",
        "faults": {"/user": {"status": 500}, "/user/documents": {"status": 404}},
    }
    await client.post("/_sandbox/faults", json={"faults": {"/user/documents": None}})
    assert set(state.faults) == {"/user"}
    await client.post("/_sandbox/reset")
    assert state.faults == {}
    assert (await client.get("/user/documents?types=public", headers=auth(state))).status == 200


async def test_drop_field_fault(client: Client, state: ObservableState) -> None:
    state.faults["/user/documents"] = Fault(drop_field="update_time")
    page = await get_json(client, "/user/documents?types=public", auth(state))
    assert len(page) == 30 and all("update_time" not in i and "id" in i for i in page)
    await client.post("/_sandbox/faults", json={"faults": {"/document/": {"drop_field": "nodes"}}})
    doc = await get_json(client, f"/document/{state.by_kind('public')[0].id}")
    assert "nodes" not in doc and "id" in doc


async def test_reset_fault_closes_the_connection(client: Client, state: ObservableState) -> None:
    await client.post("/_sandbox/faults", json={"faults": {"/user": {"reset": True}}})
    with pytest.raises(aiohttp.ClientError):
        await client.get("/user/documents?types=public", headers=auth(state))
    assert state.count("GET", "/user/documents") == 1
    assert (await client.get(f"/documents/@{SANDBOX_LOGIN}")).status == 200


async def test_latency_switch(client: Client, state: ObservableState) -> None:
    await client.post("/_sandbox/faults", json={"latency_ms": 150})
    assert state.latency_ms == 150
    started = time.monotonic()
    await client.get(f"/documents/@{SANDBOX_LOGIN}")
    assert time.monotonic() - started >= 0.14
    started = time.monotonic()
    await client.get("/_sandbox/requests")  # control endpoints are never delayed
    assert time.monotonic() - started < 0.14


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"latency_ms": -1},
        {"latency_ms": "fast"},
        {"legacy_routes": "yes"},
        {"faults": {"/x": {"status": 99}}},
        {"faults": {"/x": {"boom": 1}}},
        {"faults": {"/x": {}}},
        {"faults": {"x": {"status": 404}}},
        {"nonsense": 1},
    ],
)
async def test_bad_switches_are_400_and_change_nothing(client: Client, state: ObservableState, body: Any) -> None:
    resp = await client.post("/_sandbox/faults", json={"latency_ms": 5})
    resp = await client.post("/_sandbox/faults", json=body)
    assert resp.status == 400
    assert state.latency_ms == 5 and state.faults == {} and state.legacy_routes is False


# -- runner --------------------------------------------------------------------


async def test_start_sandboxes_serves_both_on_real_ports() -> None:
    sandboxes = await start_sandboxes()
    try:
        assert sandboxes.observable_url.startswith("http://127.0.0.1:")
        state = sandboxes.observable_state
        async with aiohttp.ClientSession() as session:
            url = f"{sandboxes.observable_url}/user/documents?types=public"
            async with session.get(url, headers=auth(state)) as resp:
                assert resp.status == 200 and len(await resp.json()) == PAGE_SIZE
            key = sorted(sandboxes.posthog_state.api_keys)[0]
            url = f"{sandboxes.posthog_url}/api/projects/1/notebooks/"
            async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as resp:
                assert resp.status == 200 and (await resp.json())["count"] == 250
        lines = export_lines(sandboxes)
        assert f"export OBSERVABLE_API_URL={sandboxes.observable_url}" in lines
        assert f"export OBSERVABLE_SESSION={state.session_cookie}" in lines
    finally:
        await sandboxes.close()


async def test_runner_main_prints_exports_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox.runner",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip() for _ in range(5)]
        env = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        assert set(env) == {
            "OBSERVABLE_SESSION",
            "OBSERVABLE_TOKEN",
            "POSTHOG_API_KEY",
            "OBSERVABLE_API_URL",
            "POSTHOG_URL",
        }
        assert env["OBSERVABLE_TOKEN"] == SANDBOX_T_TOKEN
        headers = {
            "Cookie": f"I={env['OBSERVABLE_SESSION']}; T={env['OBSERVABLE_TOKEN']}",
            "Origin": ORIGIN,
        }
        async with aiohttp.ClientSession() as session:
            url = f"{env['OBSERVABLE_API_URL']}/user/documents?types=trash"
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 200 and len(await resp.json()) == 5
            url = f"{env['POSTHOG_URL']}/api/projects/2/notebooks"
            auth_header = {"Authorization": f"Bearer {env['POSTHOG_API_KEY']}"}
            async with session.get(url, headers=auth_header) as resp:
                assert (await resp.json())["count"] == 12
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_state_is_reachable_from_the_app(state: ObservableState) -> None:
    assert create_app(state)[OBSERVABLE_STATE] is state
    assert isinstance(create_app()[OBSERVABLE_STATE], ObservableState)
