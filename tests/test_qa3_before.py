"""QA3 ``before``: a notebook edited (or added) during a ``before``-paged walk is never silently left out of a 200.

Driven through the gateway over real HTTP against the Observable sandbox, whose list is ordered by
``update_time`` newest first; the sandbox has no edit endpoint, so a notebook is edited in-process
(its ``update_ms`` set to now) just before the n-th list request is answered.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry

from gateway.pagination import Position, encode_cursor
from gateway.pagination.shifts import MAX_RESTARTS
from gateway.server import GATEWAY
from sandbox.observable import Notebook, ObservableState
from sandbox.runner import Sandboxes
from tests.helpers.walk import get_json

ROUTE = "observable_notebooks"
PUBLIC = "/v1/observable/notebooks?type=public"
LIST = "/user/documents"
#: 75 public notebooks in upstream pages of 30: 30, 29 new, 16 new, the last item again, the empty page,
#: then the first page again (the check that the list did not move under the walk)
QUIET_PUBLIC_CALLS = 6


def _edit_on(monkeypatch: pytest.MonkeyPatch, state: ObservableState, calls: Callable[[int], Notebook | None]) -> None:
    """Before the n-th list request is answered, ``calls(n)``'s notebook is edited: saved now, newest."""
    listing = state.listing
    asked = [0]

    def edited_listing(owner: str, kind: str, before_us: int | None = None) -> list[Notebook]:
        asked[0] += 1
        victim = calls(asked[0])
        if victim is not None:
            victim.update_ms = max(nb.update_ms for nb in state.notebooks.values()) + 1000
        return listing(owner, kind, before_us)

    monkeypatch.setattr(state, "listing", edited_listing)


def _on(nth: int, victim: Notebook) -> Callable[[int], Notebook | None]:
    return lambda n: victim if n == nth else None


def _oldest(state: ObservableState, kind: str = "public") -> Notebook:
    return state.by_kind(kind)[-1]


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


def _restarts(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("gateway_collection_restarts_total", {"route": ROUTE}) or 0


def _shifted_errors(registry: CollectorRegistry) -> float:
    labels = {"upstream": "observable", "route": ROUTE, "kind": "shifted"}
    return registry.get_sample_value("gateway_upstream_errors_total", labels) or 0


async def _gateway(
    make_gateway: Any, env: dict[str, str] | None = None
) -> tuple[TestClient[Any, Any], CollectorRegistry]:
    registry = CollectorRegistry()
    return await make_gateway(env=env, registry=registry), registry


async def test_qa_repro_an_unserved_notebook_edited_during_all_true_is_served_after_a_restart(
    make_gateway: Any, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QA's case: the oldest public notebook saved once the 2nd upstream page is asked.  Before: 200 with 74
    of 75.  Now the walk's end sees the list's head moved, starts again, and serves all 75 once."""
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    state.apply_switches({"latency_ms": 300})  # as QA ran it
    victim = _oldest(state)
    _edit_on(monkeypatch, state, _on(2, victim))
    body = await get_json(gw, f"{PUBLIC}&all=true")
    ids = _ids(body["items"])
    assert len(ids) == 75 and len(set(ids)) == 75
    assert ids == [nb.id for nb in state.by_kind("public")] and ids[0] == victim.id
    assert _restarts(registry) == 1
    assert _shifted_errors(registry) == 0  # answered in full: nothing failed
    assert state.count("GET", LIST) == 2 * QUIET_PUBLIC_CALLS  # the walk, then the walk again


async def test_a_quiet_walk_costs_one_more_request_per_stream(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    """What docs/pagination.md says a quiet walk costs: the first page asked again at the end, per stream."""
    state = sandboxes.observable_state
    await get_json(gw, f"{PUBLIC}&all=true")
    assert state.count("GET", LIST) == QUIET_PUBLIC_CALLS
    state.reset_counters()
    # 40 shared: 30, then from above the last run: the 10 left, the last item again, the empty page; +1 each
    body = await get_json(gw, "/v1/observable/notebooks?type=public,shared&all=true")
    assert len(body["items"]) == 75 + 40
    assert state.count("GET", LIST) == QUIET_PUBLIC_CALLS + 5
    # a cursor walk pays it on its last page only: a page that does not end the walk asks nothing more
    state.reset_counters()
    first = await get_json(gw, f"{PUBLIC}&limit=10")
    assert state.count("GET", LIST) == 1 and first["next_cursor"]


@pytest.mark.parametrize("victim_at", [-1, 45, 30, 29])
async def test_an_edit_before_any_upstream_request_of_the_walk_never_loses_it(
    make_gateway: Any, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch, victim_at: int
) -> None:
    """An edit on every possible page boundary (before each upstream request of the walk, the final check
    included, and one past it), of the oldest notebook and of ones on and around a page's edge: every
    answer is a 200 with each of the 75 exactly once, newest first; a restart exactly when the edit fell
    inside the walk (not before its first page, not after its end)."""
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    for nth in range(1, QUIET_PUBLIC_CALLS + 2):
        victim = state.by_kind("public")[victim_at]
        _edit_on(monkeypatch, state, _on(nth, victim))
        restarts = _restarts(registry)
        body = await get_json(gw, f"{PUBLIC}&all=true")
        ids = _ids(body["items"])
        assert ids == [nb.id for nb in state.by_kind("public")] and len(set(ids)) == 75, nth
        assert ids[0] == victim.id or nth > QUIET_PUBLIC_CALLS, nth
        inside = 1 < nth <= QUIET_PUBLIC_CALLS
        assert _restarts(registry) - restarts == (1 if inside else 0), nth
        monkeypatch.undo()


async def test_a_list_edited_on_every_read_gives_up_with_409_after_three_restarts(
    make_gateway: Any, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    _edit_on(monkeypatch, state, lambda n: _oldest(state) if n % QUIET_PUBLIC_CALLS == 2 else None)
    body = await get_json(gw, f"{PUBLIC}&all=true", status=409)
    assert body["error"]["code"] == "collection_changed" and body["error"]["route"] == ROUTE
    assert _restarts(registry) == MAX_RESTARTS
    assert _shifted_errors(registry) == 1
    assert registry.get_sample_value("gateway_route_up", {"route": ROUTE}) != 0  # not the route breaking


async def test_a_notebook_added_during_all_true_is_served_after_a_restart(
    make_gateway: Any, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An added notebook is the same as an edited one: it is above where the walk stands."""
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    added: list[Notebook] = []

    def add(n: int) -> None:
        if n == 3:
            added.append(state.create_document("new", [], 1))

    _edit_on(monkeypatch, state, lambda n: add(n))
    body = await get_json(gw, "/v1/observable/notebooks?type=private&all=true")
    assert added and _ids(body["items"]) == [nb.id for nb in state.by_kind("private")]
    assert _ids(body["items"])[0] == added[0].id and _restarts(registry) == 1


async def test_fan_out_an_edit_in_one_type_restarts_the_merged_walk(
    make_gateway: Any, sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    victim = _oldest(state, "shared")
    # the streams' first pages are asked together (calls 1 and 2): the 4th call is well inside the walk
    _edit_on(monkeypatch, state, _on(4, victim))
    body = await get_json(gw, "/v1/observable/notebooks?type=public,shared&all=true")
    ids = _ids(body["items"])
    expected = sorted(state.by_kind("public") + state.by_kind("shared"), key=lambda nb: nb.update_ms, reverse=True)
    assert ids == [nb.id for nb in expected] and len(set(ids)) == 115
    assert ids[0] == victim.id and _restarts(registry) == 1


async def _cursor_walk(gw: TestClient[Any, Any], url: str, limit: int, between: Callable[[int], None]) -> Any:
    """Follow next_cursor, calling ``between(i)`` before the i-th page after the first; the last answer."""
    page = await get_json(gw, f"{url}&limit={limit}")
    served = list(page["items"])
    for i in range(1, 100):
        between(i)
        resp = await gw.get(f"{url}&limit={limit}&cursor={page['next_cursor']}")
        page = await resp.json()
        if resp.status != 200:
            return resp.status, page, served
        served += page["items"]
        if page["next_cursor"] is None:
            return resp.status, page, served
    raise AssertionError("cursor never ended")


@pytest.mark.parametrize("url", [PUBLIC, "/v1/observable/notebooks?type=public,shared"])
async def test_an_edit_between_cursor_pages_is_a_409_on_the_last_page_never_a_200_without_it(
    make_gateway: Any, sandboxes: Sandboxes, url: str
) -> None:
    gw, registry = await _gateway(make_gateway)
    state = sandboxes.observable_state
    victim = _oldest(state)

    def edit(i: int) -> None:
        if i == 2:
            victim.update_ms = max(nb.update_ms for nb in state.notebooks.values()) + 1000

    status, body, served = await _cursor_walk(gw, url, 20, edit)
    assert status == 409 and body["error"] == {
        "code": "collection_changed",
        "message": "the collection changed while paging (an item was added, edited or removed before this "
        "page); start again from the first page",
        "route": ROUTE,
    }
    assert victim.id not in _ids(served)  # what was served lacks it: the walk could not end as a 200
    assert _shifted_errors(registry) == 1 and not _restarts(registry)
    # starting again from the first page serves it (first: it is the newest now)
    status, body, served = await _cursor_walk(gw, url, 20, lambda i: None)
    assert status == 200 and _ids(served)[0] == victim.id and len(set(_ids(served))) == len(served)


async def test_a_quiet_cursor_walk_is_whole(gw: TestClient[Any, Any], sandboxes: Sandboxes) -> None:
    status, _, served = await _cursor_walk(gw, PUBLIC, 25, lambda i: None)
    assert status == 200 and _ids(served) == [nb.id for nb in sandboxes.observable_state.by_kind("public")]


async def test_a_moved_list_is_not_answered_from_a_cached_first_page(
    make_gateway: Any, sandboxes: Sandboxes, sandbox_env: dict[str, str]
) -> None:
    """The 409 drops the route's cached pages: the client following its advice gets a fresh first page, with
    the edited notebook on it, not the cached one whose cursor would walk into the same 409."""
    env = {k: v for k, v in sandbox_env.items() if k != "ROUTEGATE_CACHE"}
    gw, _ = await _gateway(make_gateway, env)
    state = sandboxes.observable_state
    victim = _oldest(state)
    first = await gw.get(f"{PUBLIC}&limit=50")
    again = await gw.get(f"{PUBLIC}&limit=50")
    assert (first.headers["X-Cache"], again.headers["X-Cache"]) == ("MISS", "HIT")
    page = await first.json()
    victim.update_ms = max(nb.update_ms for nb in state.notebooks.values()) + 1000
    last = await gw.get(f"{PUBLIC}&limit=50&cursor={page['next_cursor']}")
    assert last.status == 409 and (await last.json())["error"]["code"] == "collection_changed"
    fresh = await gw.get(f"{PUBLIC}&limit=50")
    assert fresh.headers["X-Cache"] == "MISS"
    assert _ids((await fresh.json())["items"])[0] == victim.id


async def test_ndjson_all_true_ends_with_the_error_line(
    gw: TestClient[Any, Any], sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines already sent cannot be unsent: the stream does not start again, its last line is the 409's error
    and the body is visibly incomplete."""
    state = sandboxes.observable_state
    victim = _oldest(state)
    _edit_on(monkeypatch, state, _on(2, victim))
    resp = await gw.get(f"{PUBLIC}&all=true", headers={"Accept": "application/x-ndjson"})
    assert resp.status == 200
    lines: list[Any] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        while line := await resp.content.readline():
            lines.append(json.loads(line))
    items, last = lines[:-1], lines[-1]
    assert last["error"]["code"] == "collection_changed", last
    ids = _ids(items)
    assert victim.id not in ids and len(ids) == len(set(ids)) == 74  # never served: the error line says so


async def test_a_cursor_without_the_head_mark_is_refused_at_its_end(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    """A cursor issued before the check carries no head to compare: its walk cannot be vouched for, a 409
    ``cursor_outdated`` where it ends (the pages before are served: they are what they always were)."""
    runtime = gw.app[GATEWAY].runtime
    route = next(r for r in runtime.config.routes if r.name == ROUTE)
    oldest = _oldest(sandboxes.observable_state)
    cursor = encode_cursor(route, ["public"], Position({"public": oldest.update_time}), runtime.proxy.cursor_secret, {})
    body = await get_json(gw, f"{PUBLIC}&cursor={cursor}", status=409)
    assert body["error"]["code"] == "cursor_outdated" and body["error"]["route"] == ROUTE


async def test_the_cursor_carries_one_short_head_mark_and_a_forged_one_is_refused_before_any_call(
    gw: TestClient[Any, Any], sandboxes: Sandboxes
) -> None:
    state = sandboxes.observable_state
    page = await get_json(gw, "/v1/observable/notebooks?type=public,shared&limit=5")
    body = page["next_cursor"].partition(".")[0]
    marks = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["m"]
    assert set(marks) == {"t"} and len(marks["t"]) == 16  # one digest for both streams' heads
    runtime = gw.app[GATEWAY].runtime
    route = next(r for r in runtime.config.routes if r.name == ROUTE)
    state.reset_counters()
    for forged in ("zz", "0" * 15, "G" * 16, "0" * 17):
        position = Position({"public": "2024-01-01T00:00:00.000Z"}, marks={"t": forged})
        cursor = encode_cursor(route, ["public"], position, runtime.proxy.cursor_secret, {})
        got = await get_json(gw, f"{PUBLIC}&cursor={cursor}", status=400)
        assert got["error"]["code"] == "bad_cursor", forged
    assert state.total_requests == 0
