"""The stable Observable API, driven through the gateway against the Observable sandbox."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from sandbox.runner import Sandboxes
from tests.helpers.walk import get_json, walk

ITEM_KEYS = {"id", "slug", "title", "type", "version", "likes", "updated_at"}


async def test_list_defaults_to_public_with_stable_items(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    page = await get_json(gw, "/v1/observable/notebooks")
    assert len(page["items"]) == 50  # default limit, more than one upstream page of 30
    assert isinstance(page["next_cursor"], str)
    for item in page["items"]:
        assert set(item) == ITEM_KEYS
        assert item["type"] == "public"
    times = [i["updated_at"] for i in page["items"]]
    assert times == sorted(times, reverse=True)
    expected = [nb.id for nb in sandboxes.observable_state.by_kind("public")][:50]
    assert [i["id"] for i in page["items"]] == expected
    assert sandboxes.observable_state.count("GET", "/user/documents") == 2


async def test_cursor_round_trip_matches_all_true(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    walked = await walk(gw, "/v1/observable/notebooks?type=public", 20)
    everything = await get_json(gw, "/v1/observable/notebooks?type=public&all=true")
    assert everything["next_cursor"] is None
    assert len(everything["items"]) == 75
    assert walked == everything["items"]
    assert len({i["id"] for i in walked}) == 75


async def test_all_true_reads_until_the_empty_page(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    state = sandboxes.observable_state
    body = await get_json(gw, "/v1/observable/notebooks?type=private&all=true")
    assert [i["id"] for i in body["items"]] == [nb.id for nb in state.by_kind("private")]
    # 35 items in pages of 30: 30; then from above the last item served (a run of equal update_times may go
    # on past a page's end, where a strict before would skip it): the 5 left; the last item again; the
    # empty page that ends it; the first page again, to see the list did not move under the walk
    assert state.count("GET", "/user/documents") == 5


async def test_several_types_merge_newest_first(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    merged = await get_json(gw, "/v1/observable/notebooks?type=shared,public&all=true")
    items = merged["items"]
    assert len(items) == 75 + 40
    assert [i["updated_at"] for i in items] == sorted((i["updated_at"] for i in items), reverse=True)
    assert {i["type"] for i in items} == {"public", "shared"}
    state = sandboxes.observable_state
    shared_ids = {nb.id for nb in state.by_kind("shared")}
    assert {i["id"] for i in items if i["type"] == "shared"} == shared_ids
    # paging through with a cursor that carries one position per type gives the same list
    walked = await walk(gw, "/v1/observable/notebooks?type=public,shared", 33)
    assert walked == items


async def test_cursor_keeps_its_types_and_refuses_others(gw: TestClient[Any, Any]) -> None:
    first = await get_json(gw, "/v1/observable/notebooks?type=public,trash&limit=10")
    cursor = first["next_cursor"]
    # leaving type out continues the cursor's own types
    second = await get_json(gw, f"/v1/observable/notebooks?limit=10&cursor={cursor}")
    assert {i["type"] for i in first["items"] + second["items"]} <= {"public", "trash"}
    assert not {i["id"] for i in first["items"]} & {i["id"] for i in second["items"]}
    err = await get_json(gw, f"/v1/observable/notebooks?type=shared&cursor={cursor}", 400)
    assert err["error"]["code"] == "bad_cursor"
    other = await get_json(gw, "/v1/posthog/projects/1/notebooks?limit=2")
    err = await get_json(gw, f"/v1/observable/notebooks?cursor={other['next_cursor']}", 400)
    assert err["error"]["code"] == "bad_cursor"
    assert err["error"]["route"] == "observable_notebooks"
    err = await get_json(gw, "/v1/observable/notebooks?cursor=not-a-cursor!!", 400)
    assert err["error"]["code"] == "bad_cursor"


async def test_bad_query_is_400_and_never_forwarded(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    for query, needle in [
        ("type=drafts", "must be one of public, shared, private, trash"),
        ("type=public,bogus", "'bogus'"),
        ("limit=0", "limit must be an integer from 1 to 200"),
        ("limit=201", "limit must be an integer from 1 to 200"),
        ("limit=ten", "limit"),
        ("all=maybe", "all must be true or false"),
        ("typ=public", "unknown query parameter 'typ'"),
    ]:
        err = await get_json(gw, f"/v1/observable/notebooks?{query}", 400)
        assert needle in err["error"]["message"], (query, err)
        assert err["error"]["route"] == "observable_notebooks"
    assert sandboxes.observable_state.total_requests == 0


async def test_user_notebooks_are_public_and_sent_without_credentials(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    env = {k: v for k, v in sandbox_env.items() if k == "OBSERVABLE_API_URL"}
    gw = await make_gateway(env=env)  # no cookies configured at all
    body = await get_json(gw, "/v1/observable/users/alice/notebooks?all=true")
    assert len(body["items"]) == 45
    assert all(i["type"] == "public" for i in body["items"])
    assert all(set(i) == ITEM_KEYS for i in body["items"])
    walked = await walk(gw, "/v1/observable/users/alice/notebooks", 7)
    assert walked == body["items"]
    err = await get_json(gw, "/v1/observable/users/nobody-here/notebooks", 404)
    assert err["error"]["route"] == "observable_user_notebooks"


async def test_full_document(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    nb = sandboxes.observable_state.by_kind("private")[0]
    doc = await get_json(gw, f"/v1/observable/notebooks/{nb.id}")
    assert doc["id"] == nb.id
    assert doc["version"] == nb.version
    assert isinstance(doc["nodes"], list) and doc["nodes"]
    err = await get_json(gw, "/v1/observable/notebooks/0000000000000000", 404)
    assert err["error"]["route"] == "observable_notebook"
    assert set(err) == {"error"} and {"code", "message", "route"} <= set(err["error"])


async def test_module_follows_the_version_redirect(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    state = sandboxes.observable_state
    nb = state.by_kind("public")[3]
    resp = await gw.get(f"/v1/observable/notebooks/{nb.id}/module")
    text = await resp.text()
    assert resp.status == 200
    assert resp.headers["X-Notebook-Version"] == str(nb.version)
    assert resp.content_type == "application/javascript"
    assert "export default function define" in text
    assert state.count("GET", f"/d/{nb.id}.js") == 1
    assert state.count("GET", f"/d/{nb.id}@{nb.version}.js") == 1


async def test_version_is_read_from_location_without_download(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    state = sandboxes.observable_state
    nb = state.by_kind("shared")[1]
    body = await get_json(gw, f"/v1/observable/notebooks/{nb.id}/version")
    assert body == {"id": nb.id, "version": nb.version}
    assert state.count("GET", f"/d/{nb.id}.js") == 1
    assert state.count("GET", f"/d/{nb.id}@{nb.version}.js") == 0
    await get_json(gw, "/v1/observable/notebooks/0000000000000000/version", 404)


async def test_create_rejects_every_problem_with_422_and_forwards_nothing(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    bad = {
        "nodes": [{"id": 0}, {"id": 0, "pinned": "yes"}, {"id": -1}, {"value": 3, "cell": "js"}, "x"],
        "version": 2,
    }
    resp = await gw.post("/v1/observable/notebooks", json=bad)
    body = await resp.json()
    assert resp.status == 422
    problems = body["error"]["details"]
    joined = "\n".join(problems)
    for needle in [
        "nodes[1].id: 0 is used twice",
        "nodes[1].pinned: must be true or false",
        "nodes[2].id: must be a non-negative integer",
        "nodes[3].id: required",
        "nodes[3].cell: unknown key",
        "nodes[3].value: must be a string",
        "nodes[4]: must be an object",
        "version: must be greater than the number of nodes (5)",
    ]:
        assert needle in joined, (needle, problems)
    assert body["error"]["route"] == "observable_notebook_create"
    for payload in ({"nodes": {}, "version": 1}, {"nodes": [{"id": 5}], "version": 3}, {"nodes": []}, [1]):
        resp = await gw.post("/v1/observable/notebooks", json=payload)
        assert resp.status == 422, payload
    for payload, problem in (
        ({"version": 1}, "nodes: required (a list)"),
        ({"nodes": "x"}, "nodes: must be a list, got a string"),
    ):
        resp = await gw.post("/v1/observable/notebooks", json=payload)
        assert problem in (await resp.json())["error"]["details"], payload  # present but wrong is not "required"
    assert sandboxes.observable_state.total_requests == 0


async def test_create_forwards_a_valid_notebook(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    payload = {
        "title": "From a script",
        "nodes": [{"id": 0, "value": "md`hi`"}, {"id": 3, "pinned": True}],
        "version": 4,
    }
    resp = await gw.post("/v1/observable/notebooks", json=payload)
    created = await resp.json()
    assert resp.status == 200, created
    assert created["version"] == 4
    doc = await get_json(gw, f"/v1/observable/notebooks/{created['id']}")
    assert [n["id"] for n in doc["nodes"]] == [0, 3]
    assert set(created) == set(doc), "the created document reads as the document does (updated_at, ...)"
    assert created["updated_at"] == doc["updated_at"]
    listing = await get_json(gw, "/v1/observable/notebooks?type=private&limit=1")
    assert listing["items"][0]["id"] == created["id"]


async def test_create_with_reindex_repairs_ids_and_version(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    payload = {"nodes": [{"id": 7}, {"id": 7, "value": "x"}, {"id": 40}], "version": 1}
    resp = await gw.post("/v1/observable/notebooks?reindex=true", json=payload)
    created = await resp.json()
    assert resp.status == 200, created
    doc = await get_json(gw, f"/v1/observable/notebooks/{created['id']}")
    assert [n["id"] for n in doc["nodes"]] == [0, 1, 2]
    assert doc["version"] == 4  # the smallest valid: greater than 3 nodes, not less than id 2


async def test_missing_cookies_name_the_variables(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes
) -> None:
    env = {k: v for k, v in sandbox_env.items() if not k.startswith("OBSERVABLE_") or k == "OBSERVABLE_API_URL"}
    gw = await make_gateway(env=env)
    err = await get_json(gw, "/v1/observable/notebooks", 502)
    assert err["error"]["code"] == "upstream_credentials_missing"
    assert "OBSERVABLE_SESSION" in err["error"]["message"]
    assert "OBSERVABLE_TOKEN" in err["error"]["message"]
    assert "OBSERVABLE_COOKIES_FILE" in err["error"]["message"]
    assert sandboxes.observable_state.total_requests == 0


async def test_cookie_file_supplies_the_session(
    make_gateway: Any, sandbox_env: dict[str, str], sandboxes: Sandboxes, tmp_path: Any
) -> None:
    state = sandboxes.observable_state
    cookie_file = tmp_path / "cookies.json"
    cookie_file.write_text(
        f'[{{"name": "I", "value": "{state.session_cookie}"}}, {{"name": "T", "value": "{state.token}"}}]'
    )
    env = {"OBSERVABLE_API_URL": sandbox_env["OBSERVABLE_API_URL"], "OBSERVABLE_COOKIES_FILE": str(cookie_file)}
    gw = await make_gateway(env=env)
    body = await get_json(gw, "/v1/observable/notebooks?type=trash")
    assert len(body["items"]) == 5


async def test_rejected_session_is_a_502_that_says_renew(make_gateway: Any, sandbox_env: dict[str, str]) -> None:
    gw = await make_gateway(env={**sandbox_env, "OBSERVABLE_SESSION": "expired.garbage"})
    err = await get_json(gw, "/v1/observable/notebooks", 502)
    assert err["error"]["code"] == "upstream_auth_rejected"
    assert "401" in err["error"]["message"] and "renew" in err["error"]["message"]
    assert "expired.garbage" not in str(err)
