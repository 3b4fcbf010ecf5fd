"""QA4: a session that dies in the middle of a ``before``-paged walk is a 502 ``upstream_auth_rejected``.

Observable answers a signed-out session with 200 ``[]`` (upstream-facts.md), which ends a stream early and
empties its head: the walk's end check saw "the list moved" (409 ``collection_changed``, an ``all=true``
restart) where the cause is a credential to renew.  Driven through the gateway over real HTTP against the
Observable sandbox and its ``session_expired`` fault (posted to ``/_sandbox/faults`` as QA did, or set just
before the n-th list request reaches the sandbox, for a session dying inside one gateway request).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

import sandbox.observable as observable_sandbox
from sandbox.observable import ObservableState
from sandbox.runner import Sandboxes
from tests.conftest import ROUTES
from tests.helpers.walk import get_json

ROUTE = "observable_notebooks"
NOTEBOOKS = "/v1/observable/notebooks"
LIST = "/user/documents"
CHECK = "/user"
NDJSON = {"Accept": "application/x-ndjson"}


async def _gateway(make_gateway: Any) -> tuple[TestClient[Any, Any], CollectorRegistry]:
    registry = CollectorRegistry()
    return await make_gateway(registry=registry), registry


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0


def _errors(registry: CollectorRegistry, kind: str) -> float:
    return _sample(registry, "gateway_upstream_errors_total", upstream="observable", route=ROUTE, kind=kind)


def _assert_auth_metrics(registry: CollectorRegistry) -> None:
    """What the issue expects of a dead session: no ``shifted``, no restart, the route down with the auth
    code, the credential alert's metric at 0."""
    assert _errors(registry, "shifted") == 0
    assert _errors(registry, "credentials_rejected") == 1
    assert _sample(registry, "gateway_collection_restarts_total", route=ROUTE) == 0
    assert registry.get_sample_value("gateway_route_up", {"route": ROUTE}) == 0
    info = {"route": ROUTE, "code": "upstream_auth_rejected"}
    assert registry.get_sample_value("gateway_route_failure_info", info) == 1
    valid = {"upstream": "observable", "credential": "cookie:I"}
    assert registry.get_sample_value("gateway_upstream_credential_valid", valid) == 0


async def _assert_auth_rejected(resp: aiohttp.ClientResponse) -> None:
    body = await resp.json()
    assert resp.status == 502, body
    assert body["error"]["code"] == "upstream_auth_rejected" and body["error"]["route"] == ROUTE, body
    assert "signed out" in body["error"]["message"] and "cookie:I" in body["error"]["message"]


async def _expire_over_http(sandboxes: Sandboxes) -> None:
    """QA's step: the sandbox's fault switch, through its own HTTP control endpoint."""
    async with aiohttp.ClientSession() as session:
        url = f"{sandboxes.observable_url}/_sandbox/faults"
        async with session.post(url, json={"session_expired": True}) as resp:
            assert resp.status == 200, await resp.text()


def _expire_on(monkeypatch: pytest.MonkeyPatch, state: ObservableState, nth: int) -> None:
    """The session ends just before the ``nth`` list request is answered (inside one gateway request)."""
    check_auth = observable_sandbox._check_auth
    asked = [0]

    def expiring(request: web.Request) -> web.Response | None:
        if request.path == LIST:
            asked[0] += 1
            if asked[0] == nth:
                state.session_expired = True
        return check_auth(request)

    monkeypatch.setattr(observable_sandbox, "_check_auth", expiring)


async def _ndjson_lines(resp: aiohttp.ClientResponse) -> list[Any]:
    """A stream that broke off: its lines, the error line last (no end-of-body marker)."""
    assert resp.status == 200
    lines: list[Any] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        while line := await resp.content.readline():
            lines.append(json.loads(line))
    return lines


@pytest.mark.parametrize("kind", ["shared", "private"])
async def test_qa_repro_a_cursor_page_after_the_session_died_is_a_502_not_a_409(
    make_gateway: Any, sandboxes: Sandboxes, kind: str
) -> None:
    """QA's curl: a first page, the session ends, the cursor page.  Before: 409 ``collection_changed`` and no
    ``GET /user`` at all.  Now: the session check runs (once) and the answer is the auth failure."""
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    first = await gw.get(f"{NOTEBOOKS}?type={kind}&limit=25", headers={"Cache-Control": "no-cache"})
    cursor = (await first.json())["next_cursor"]
    assert first.status == 200 and cursor
    assert state.count("GET", CHECK) == 0  # a page with items asks nothing
    await _expire_over_http(sandboxes)
    await _assert_auth_rejected(await gw.get(f"{NOTEBOOKS}?type={kind}&limit=25&cursor={cursor}"))
    assert state.count("GET", CHECK) == 1
    _assert_auth_metrics(registry)


async def test_an_ndjson_cursor_page_after_the_session_died_is_a_502(make_gateway: Any, sandboxes: Sandboxes) -> None:
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    first = await gw.get(f"{NOTEBOOKS}?type=shared&limit=25", headers=NDJSON)
    assert first.status == 200
    cursor = first.headers["X-Next-Cursor"]
    assert len((await first.read()).splitlines()) == 25
    state.apply_switches({"session_expired": True})
    await _assert_auth_rejected(await gw.get(f"{NOTEBOOKS}?type=shared&limit=25&cursor={cursor}", headers=NDJSON))
    _assert_auth_metrics(registry)


async def test_an_ndjson_stream_whose_session_dies_mid_stream_ends_with_the_auth_error_line(
    make_gateway: Any, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QA's stream: latency 300 ms, the session ending at the third list request: 59 items (30, then 29 new
    from above the first page's last run), then the error line, which is now the auth failure."""
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    state.apply_switches({"latency_ms": 300})
    _expire_on(monkeypatch, state, 3)
    lines = await _ndjson_lines(await gw.get(f"{NOTEBOOKS}?type=public&all=true", headers=NDJSON))
    items, last = lines[:-1], lines[-1]
    assert len(items) == 59 and all("error" not in it for it in items)
    assert last["error"]["code"] == "upstream_auth_rejected" and last["error"]["route"] == ROUTE, last
    assert state.count("GET", CHECK) == 1
    _assert_auth_metrics(registry)


async def test_a_json_all_true_whose_session_dies_mid_walk_is_a_502_without_a_restart(
    make_gateway: Any, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a counted restart, whose empty first page then found the dead session.  Now: the walk's end
    check finds the head moved, the session check says signed out: 502 at once, the list not read again."""
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    _expire_on(monkeypatch, state, 2)
    await _assert_auth_rejected(await gw.get(f"{NOTEBOOKS}?type=public&all=true"))
    # 30 items, the empty page the dead session answered, the end check's empty first page: no restart
    assert state.count("GET", LIST) == 3
    assert state.count("GET", CHECK) == 1
    _assert_auth_metrics(registry)


async def test_a_fan_out_walk_whose_session_dies_is_a_502(
    make_gateway: Any, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two streams (``type=public,shared``) asked together, the session ending after their first pages: the
    ``all=true`` walk, and a cursor walk's next page, are the auth failure."""
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    _expire_on(monkeypatch, state, 3)
    await _assert_auth_rejected(await gw.get(f"{NOTEBOOKS}?type=public,shared&all=true"))
    _assert_auth_metrics(registry)

    monkeypatch.undo()
    state.apply_switches({"session_expired": False})  # signed in again: a cursor walk of both streams
    first = await get_json(gw, f"{NOTEBOOKS}?type=public,shared&limit=40")
    assert first["next_cursor"] and len(first["items"]) == 40
    state.apply_switches({"session_expired": True})
    await _assert_auth_rejected(await gw.get(f"{NOTEBOOKS}?type=public,shared&limit=40&cursor={first['next_cursor']}"))
    assert _errors(registry, "shifted") == 0 and _errors(registry, "credentials_rejected") == 2


async def test_a_quiet_healthy_walk_never_runs_the_session_check(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    """The check runs only where a walk sees the list move (or an empty answer): a walk whose list stays put
    costs no ``GET /user`` (all=true, a fan-out, NDJSON, a cursor walk to its last page)."""
    state = sandboxes.observable_state
    assert len((await get_json(gw, f"{NOTEBOOKS}?type=public&all=true"))["items"]) == 75
    assert len((await get_json(gw, f"{NOTEBOOKS}?type=public,shared&all=true"))["items"]) == 115
    resp = await gw.get(f"{NOTEBOOKS}?type=private&all=true", headers=NDJSON)
    assert resp.status == 200 and len((await resp.read()).splitlines()) == 35
    cursor = ""
    served = 0
    for _ in range(5):
        page = await get_json(gw, f"{NOTEBOOKS}?type=shared&limit=25{cursor}")
        served += len(page["items"])
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert served == 40
    assert state.count("GET", CHECK) == 0


def _edit_oldest_on(monkeypatch: pytest.MonkeyPatch, state: ObservableState, kind: str, nth: int) -> None:
    """A real edit with the session alive: the oldest ``kind`` notebook saved (newest) before the ``nth``
    list request is answered."""
    listing = state.listing
    asked = [0]
    victim = state.by_kind(kind)[-1]

    def edited(owner: str, kind_: str, before_us: int | None = None) -> list[Any]:
        asked[0] += 1
        if asked[0] == nth:
            victim.update_ms = max(nb.update_ms for nb in state.notebooks.values()) + 1000
        return listing(owner, kind_, before_us)

    monkeypatch.setattr(state, "listing", edited)


async def test_a_real_edit_with_a_live_session_is_still_a_409_on_a_cursor_walk(
    make_gateway: Any, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list moved and the session is alive (one check says so): the 409 ``collection_changed`` as before;
    the route stays up, the credential valid."""
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    first = await get_json(gw, f"{NOTEBOOKS}?type=shared&limit=25")
    _edit_oldest_on(monkeypatch, state, "shared", 1)  # edited before the last page's requests
    resp = await gw.get(f"{NOTEBOOKS}?type=shared&limit=25&cursor={first['next_cursor']}")
    body = await resp.json()
    assert resp.status == 409 and body["error"]["code"] == "collection_changed", body
    assert state.count("GET", CHECK) == 1
    assert _errors(registry, "shifted") == 1 and _errors(registry, "credentials_rejected") == 0
    assert registry.get_sample_value("gateway_route_up", {"route": ROUTE}) != 0
    valid = {"upstream": "observable", "credential": "cookie:I"}
    assert registry.get_sample_value("gateway_upstream_credential_valid", valid) == 1


async def test_a_real_edit_with_a_live_session_still_restarts_all_true(
    make_gateway: Any, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    _edit_oldest_on(monkeypatch, state, "public", 2)
    body = await get_json(gw, f"{NOTEBOOKS}?type=public&all=true")
    ids = [it["id"] for it in body["items"]]
    assert ids == [nb.id for nb in state.by_kind("public")] and len(set(ids)) == 75
    assert _sample(registry, "gateway_collection_restarts_total", route=ROUTE) == 1
    assert state.count("GET", CHECK) == 1  # the restart was vouched for by one check
    assert _errors(registry, "credentials_rejected") == 0


async def test_a_moved_list_whose_session_check_cannot_answer_stays_a_409(
    make_gateway: Any, sandboxes: Sandboxes
) -> None:
    """A check that says nothing (its endpoint gone: unknown) cannot call the session dead: the walk's 409
    stands (start again: a first page then tells), and the route is not marked down."""
    text = ROUTES.read_text().replace("request: GET /user ", "request: GET /whoami ")
    assert "GET /whoami" in text
    registry = CollectorRegistry()
    gw = await make_gateway(text, registry=registry)
    state = sandboxes.observable_state
    first = await get_json(gw, f"{NOTEBOOKS}?type=shared&limit=25")
    state.apply_switches({"session_expired": True})
    resp = await gw.get(f"{NOTEBOOKS}?type=shared&limit=25&cursor={first['next_cursor']}")
    body = await resp.json()
    assert resp.status == 409 and body["error"]["code"] == "collection_changed", body
    assert state.count("GET", "/whoami") == 1
    assert _errors(registry, "shifted") == 1 and _errors(registry, "credentials_rejected") == 0
    assert registry.get_sample_value("gateway_route_up", {"route": ROUTE}) != 0


async def test_with_the_cache_on_the_cursor_page_is_the_502_and_never_stored(
    make_gateway: Any, sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    """The shipped default (the response cache on), as QA ran it: the 502 is never stored, so the cursor
    asked again goes upstream again (and is the 502 again) until the credential is renewed."""
    registry = CollectorRegistry()
    gw = await make_gateway(env={**sandbox_env, "ROUTEGATE_CACHE": "on"}, registry=registry)
    state = sandboxes.observable_state
    first = await gw.get(f"{NOTEBOOKS}?type=shared&limit=25", headers={"Cache-Control": "no-cache"})
    cursor = (await first.json())["next_cursor"]
    await _expire_over_http(sandboxes)
    url = f"{NOTEBOOKS}?type=shared&limit=25&cursor={cursor}"
    await _assert_auth_rejected(await gw.get(url))
    asked = state.count("GET", LIST)
    await _assert_auth_rejected(await gw.get(url))
    assert state.count("GET", LIST) > asked
    assert _errors(registry, "shifted") == 0
